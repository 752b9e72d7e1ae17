//! tickwire: a low-latency market-data feed over WebSocket.
//!
//! Ticks enter through [`ingest`] (publishers, recorded feeds), are sequenced
//! and encoded once into WebSocket frames ([`encode`]), pass through the
//! lock-free broadcast [`ring`], and are fanned out by per-core workers
//! ([`fanout`]) to subscriber [`session`]s with per-client backpressure.
//! The wire contract is PROTOCOL.md; [`protocol`] parses what comes in.

pub mod auth;
pub mod bus;
pub mod config;
pub mod decimal;
pub mod encode;
pub mod fanout;
pub mod framing;
pub mod import;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod recording;
pub mod replay;
pub mod ring;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sse;
pub mod stats;
pub mod symbols;
pub mod sys;
pub mod tick;
pub mod tls;
pub mod transport;
pub mod web;
pub mod window;
