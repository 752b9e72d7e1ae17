//! tickwire: a low-latency market-data feed over WebSocket.

pub mod access;
pub mod bench;
pub mod bus;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod recordings;
pub mod server;
pub mod shutdown;
pub mod wire;
