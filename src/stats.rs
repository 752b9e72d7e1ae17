//! Server-wide counters, shared by every thread and read by tests and logs.
//!
//! Plain relaxed atomics: each is a count on its own, no invariant spans two.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Stats {
    /// Ticks that entered the ring.
    pub ticks_in: AtomicU64,
    /// Times a publish found the ring full and had to wait.
    pub ring_full: AtomicU64,
    /// Pending ticks replaced by a newer tick of the same key (slow clients).
    pub ticks_dropped_stale: AtomicU64,
    /// Ticks queued for subscriber sockets, per [`crate::encode::Encoding`]
    /// (index `Encoding as usize`).
    pub ticks_out: [AtomicU64; 2],
    /// WebSocket frames carrying ticks, per encoding (a binary frame may
    /// carry many ticks).
    pub tick_frames_out: [AtomicU64; 2],
    /// Bytes written to subscriber sockets, per the client's encoding
    /// (control messages included).
    pub bytes_out: [AtomicU64; 2],
    /// Write system calls made for subscribers.
    pub writes: AtomicU64,
    /// Clients closed with 4000 for staying behind.
    pub clients_evicted: AtomicU64,
    /// Publisher ticks refused as malformed.
    pub publish_errors: AtomicU64,
    /// Control messages refused with an `error`.
    pub request_errors: AtomicU64,
    /// Bytes accepted for subscriber sockets and not yet written (gauge).
    pub queued_bytes: AtomicI64,
    /// Ticks waiting in per-key pending slots (gauge).
    pub pending_ticks: AtomicI64,
    pub subscribers: AtomicI64,
    pub publishers: AtomicI64,
    pub connections_total: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
    pub fn gauge(g: &AtomicI64, delta: i64) {
        if delta != 0 {
            g.fetch_add(delta, Ordering::Relaxed);
        }
    }
}
