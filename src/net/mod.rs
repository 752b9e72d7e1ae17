//! Connections: plain TCP or TLS behind one type.

pub mod tls;
pub mod transport;
