//! Connections: plain TCP or TLS behind one type.

pub(crate) mod port_owner;
pub mod proxy_protocol;
pub(crate) mod read_ahead;
pub mod stream;
pub mod tls;
pub(crate) mod transport;
