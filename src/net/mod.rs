//! Connections: plain TCP or TLS behind one type.

pub mod read_ahead;
pub mod tls;
pub mod transport;
