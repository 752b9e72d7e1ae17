//! tickwire: a low-latency market-data feed over WebSocket and SSE.
//!
//! # A map of the crate
//!
//! A tick's path, top to bottom, and the folder each step lives in:
//!
//! ```text
//!  publishers (/v1/publish) ─┐
//!  recorded feeds ───────────┼─► pipeline::ingest ─► pipeline::ring ─► pipeline::fanout ─► sockets
//!  bus (a gateway's feed) ───┘   seq, rx, encode      lock-free,         per worker: index,
//!                                once per encoding    1 writer,          outbox per client,
//!                                                     N readers          one write per batch
//! ```
//!
//! - [`model`]: the vocabulary (ticks, keys, fixed-point decimals, the symbol
//!   table, playback speed, feed status). No I/O.
//! - [`wire`]: bytes on a socket: frames, opcodes and close codes, the
//!   encode-once tick encodings (JSON, binary records, SSE), every server →
//!   client notice, and the parsers of what clients and publishers send.
//! - [`access`]: API keys and entitlements, connection admission, limits.
//! - [`net`]: a connection, plain TCP or TLS, behind one type.
//! - [`pipeline`]: ingest, the ring and the fan-out: the hot path.
//! - [`bus`]: NATS scale-out (an ingest node and gateways).
//! - [`server`]: start-up, routes, the WebSocket session, SSE, the subscriber
//!   core both share, `/metrics`, the ticker page.
//! - [`recordings`]: the recording format, vendor importers, replay, record.
//! - [`sys`]: every libc call.
//! - [`binance`]: a Binance-compatible market-stream endpoint on its own
//!   listener and ring reader.
//!
//! Dependencies point down that list: the pipeline knows nothing of the bus
//! or the server (a gateway's bus plugs into the fan-out through
//! [`pipeline::fanout::InterestSink`]); the model knows nothing at all.
//!
//! The wire contract is `docs/PROTOCOL.md`. Lints are declared in
//! `Cargo.toml`: `unsafe` is denied except in [`pipeline::ring`] and
//! [`sys`], and every `unsafe` block needs a `// SAFETY:` comment.

// The docs are written for the engineers who change this code: read them
// with `cargo doc --document-private-items`, where links to crate-private
// items resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod access;
pub mod binance;
pub mod bus;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod recordings;
pub mod server;
pub(crate) mod shutdown;
pub mod sys;
pub mod wire;
