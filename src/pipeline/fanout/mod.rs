//! Fan-out: one worker's clients, its subscription index, and the path from
//! the ingest ring to each client's socket.
//!
//! Each worker thread owns its clients outright (`Rc<RefCell>`, no locks):
//! the ring reader, the sessions' control handling and the per-client writer
//! tasks all run on the worker's single-threaded runtime.
//!
//! Backpressure, per client: frames are appended in order to the client's
//! write buffer until it holds the byte cap. Past that, every key has one
//! pending slot: a new tick of a key whose slot is still full replaces the
//! stale one (counted as dropped), so a slow client's memory is bounded by the
//! byte cap plus one slot per key, and when it drains it gets the newest value
//! of every key that changed. Control replies are never dropped. After each
//! ring batch every client with something queued is flushed with one `write`;
//! a client whose socket is full is left to its writer task, which waits for
//! writability and evicts it (close 4000) when it stays behind too long.
//! While the worker is busy, its passes start at least a coalescing window
//! apart (`coalesce.rs`), so that each write carries more ticks; at light
//! load the window is closed and every batch is written as soon as it is
//! read.
//!
//! Binary (`tickwire.bin.v1`) clients get 64-byte records instead of JSON
//! frames. Records queued back to back share one binary frame: the last
//! frame in the write buffer is extended (its header rewritten) while no byte
//! of it has been written and it holds fewer than [`MAX_RECORDS_PER_FRAME`](outbox::MAX_RECORDS_PER_FRAME).
//! Before the first record of a symbol whose id the client was never given
//! (a `*` subscriber meeting a new symbol), a `symbol` control message
//! announces the id.

mod catchup;
mod coalesce;
mod index;
mod outbox;
mod reach;
mod worker;

#[cfg(test)]
mod tests;

pub(crate) use catchup::HistorySource;
pub use coalesce::CoalesceConfig;
pub(crate) use index::InterestSink;
pub use index::WorkerState;
pub use outbox::Client;
pub(crate) use outbox::Flushed;
pub(crate) use worker::Worker;

/// Index of a client in its worker's slab.
pub type ClientId = usize;
