//! Who may connect and how much: API keys, entitlements and limits.

pub mod auth;
pub mod limits;
pub(crate) mod rate;
