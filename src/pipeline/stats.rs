//! Server-wide counters, shared by every thread and read by tests and logs.
//!
//! Plain relaxed atomics: each is a count on its own, no invariant spans two.
//! These are the only counters on the hot path; `/metrics` (the server's `metrics` module)
//! reads and renders them at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Where ingested ticks came from (index into [`Stats::ticks_in_by_origin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A WebSocket publisher on `/v1/publish`.
    Publisher = 0,
    /// A recorded source played by the server (bundled or `--replay`).
    Recorded = 1,
    /// The message bus (a gateway's feed from the ingest node).
    Bus = 2,
}

/// Upper bounds of the latency buckets, in ns: 1 µs to 1 s, roughly
/// 1-2.5-5 per decade, which is what a feed whose p50 is microseconds and
/// whose slow clients are evicted after seconds needs to tell apart.
pub(crate) const LATENCY_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// A fixed-bucket latency histogram of relaxed atomics: one `fetch_add`
/// per bucket hit plus sum and count. Buckets are not cumulative here; the
/// scrape makes them so.
#[derive(Default, Debug)]
pub struct Histogram {
    /// `buckets[i]` counts values `<= LATENCY_BOUNDS_NS[i]` and above the
    /// previous bound; the last one is +Inf.
    pub buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    pub sum_ns: AtomicU64,
    pub count: AtomicU64,
}

impl Histogram {
    pub fn observe_ns(&self, ns: u64) {
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why an upgrade was refused (index into [`Stats::upgrades_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401: no API key, or one not in the config.
    Unauthorized = 0,
    /// 403: a key used on an endpoint its role may not use.
    Forbidden = 1,
    /// 503: a connection limit (total, per address, per key, publishers).
    Limit = 2,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Unauthorized, Refusal::Forbidden, Refusal::Limit];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
            Refusal::Limit => "limit",
        }
    }
}

#[derive(Default, Debug)]
pub struct Stats {
    /// Ticks that entered the ring.
    pub ticks_in: AtomicU64,
    /// The same, per [`Origin`].
    pub ticks_in_by_origin: [AtomicU64; 3],
    /// Times a publish found the ring full and had to wait.
    pub ring_full: AtomicU64,
    /// Pending ticks replaced by a newer tick of the same key (slow clients).
    pub ticks_dropped_stale: AtomicU64,
    /// Ticks queued for subscriber sockets, per [`crate::wire::encode::Encoding`]
    /// (index `Encoding as usize`).
    pub ticks_out: [AtomicU64; 3],
    /// WebSocket frames carrying ticks, per encoding (a binary frame may
    /// carry many ticks).
    pub tick_frames_out: [AtomicU64; 3],
    /// Bytes written to subscriber sockets, per the client's encoding
    /// (control messages included).
    pub bytes_out: [AtomicU64; 3],
    /// Write system calls made to clients (subscribers, and replies to publishers).
    pub writes: AtomicU64,
    /// Writes that carried at least one live tick (snapshots and control
    /// replies alone excluded): the denominator of deliveries per write,
    /// the figure the fan-out's batching exists to raise.
    pub tick_writes: AtomicU64,
    /// Live ticks those writes carried (each counted in the write that
    /// took its first byte): the numerator of deliveries per write.
    pub tick_deliveries: AtomicU64,
    /// Clients closed with 4000 for staying behind.
    pub clients_evicted: AtomicU64,
    /// Publisher ticks refused as malformed.
    pub publish_errors: AtomicU64,
    /// Book diffs accepted but not sequenced because every level already
    /// had its size (a removal of an absent level, a size sent again):
    /// real depth feeds send many, and they would otherwise take a `seq`
    /// and a history entry and reach nobody.
    pub book_unchanged: AtomicU64,
    /// Control messages refused with an `error`.
    pub request_errors: AtomicU64,
    /// Bytes accepted for subscriber sockets and not yet written (gauge).
    pub queued_bytes: AtomicI64,
    /// Ticks waiting in per-key pending slots (gauge).
    pub pending_ticks: AtomicI64,
    /// Price levels held in slow clients' pending book merges (gauge): the
    /// bench's bound check (at most one per level per stalled key).
    pub pending_book_levels: AtomicI64,
    /// (client, key) subscriptions by name (gauge).
    pub named_subscriptions: AtomicI64,
    /// (client, channel) subscriptions to `*` (gauge).
    pub star_subscriptions: AtomicI64,
    /// From a tick's `rx` stamp to its frame being encoded: one observation
    /// per ingest batch, for its last tick (the batch's worst).
    pub ingest_to_encode: Histogram,
    /// From a tick's `rx` (its encoding follows within the same lock) to the
    /// `write()` that hands it to a socket: one observation per write, for
    /// the oldest live tick in it. Snapshots are not counted.
    pub encode_to_write: Histogram,
    /// WebSocket upgrades refused before the upgrade, by
    /// [`Refusal`] (index `Refusal as usize`).
    pub upgrades_refused: [AtomicU64; 3],
    pub subscribers: AtomicI64,
    pub publishers: AtomicI64,
    pub connections_total: AtomicU64,
    /// Connections dropped for not sending a complete request head within
    /// `--handshake-timeout` (slowloris, or a server too busy to read it).
    pub handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed or did not finish within the handshake
    /// timeout (plaintext sent to a TLS port, stalled clients, bad ciphers).
    pub tls_handshakes_failed: AtomicU64,
    /// The message bus link (`--bus`); all zero on a standalone node.
    pub bus: BusStats,
    /// Bus ticks dropped at ingest as duplicates or out of order (gateway).
    pub bus_duplicates: AtomicU64,
    /// Bus ticks whose `seq` skipped past the key's next one (gateway):
    /// ticks lost on the bus, e.g. while it was down.
    pub bus_seq_gaps: AtomicU64,
    /// Cursors started for `catchup` clients that fell behind.
    pub catchup_started: AtomicU64,
    /// Ticks clients read from the shared history (resume and catch-up).
    pub catchup_ticks: AtomicU64,
    /// Times a catching-up client fell out of the history (a gap).
    pub catchup_gaps: AtomicU64,
    /// Catch-up slices after which the client's writer task yielded to
    /// the worker's other tasks (one slice per flush, see `Flushed::Paused`).
    pub catchup_pauses: AtomicU64,
    /// Fan-out passes the coalescing window made wait (ticks were read
    /// and the window since the last pass had not passed): `coalesce.rs`.
    pub coalesce_holds: AtomicU64,
    /// Nanoseconds those passes waited.
    pub coalesce_held_ns: AtomicU64,
    /// Times a worker's window opened (its thread used at least
    /// `--coalesce-busy` of a measuring period, or `--coalesce-paying-busy`
    /// where holding pays).
    pub coalesce_opened: AtomicU64,
    /// Workers whose clients' measured rate makes holding pay (gauge):
    /// their window opens at `--coalesce-paying-busy`.
    pub coalesce_paying: AtomicI64,
    /// Workers whose window is open now (gauge).
    pub coalesce_open: AtomicI64,
    /// The open windows, summed over workers, nanoseconds (gauge).
    pub coalesce_window_ns: AtomicI64,
    /// The journal (`--journal`); all zero without one.
    pub journal: JournalStats,
}

/// Counters of the journal writer and its restore at start-up.
#[derive(Default, Debug)]
pub struct JournalStats {
    /// Ticks written to journal files.
    pub ticks_written: AtomicU64,
    /// Bytes of journal files written (headers and position records too).
    pub bytes_written: AtomicU64,
    /// Files closed and a new one started (size or age).
    pub rotations: AtomicU64,
    /// Old files deleted to keep within `--journal-bytes`.
    pub files_deleted: AtomicU64,
    /// Write, flush or sync failures (disk full, I/O error): the batch is
    /// retried into a new file; delivery waits meanwhile.
    pub write_errors: AtomicU64,
    /// Forced writes to the disk (`fdatasync`).
    pub syncs: AtomicU64,
    /// Ticks read back at start-up.
    pub restored_ticks: AtomicU64,
    /// Bad tails skipped at start-up (a truncated or corrupt record, e.g.
    /// from a kill -9 mid-write); each is logged with its file and byte.
    pub bad_tails: AtomicU64,
    /// Bytes in those bad tails.
    pub bad_tail_bytes: AtomicU64,
    /// Offset of the newest tick written (gauge): the delivery watermark.
    pub watermark: AtomicI64,
    /// Reads of the journal started for a resume or a catch-up cursor
    /// older than the memory history.
    pub resume_reads: AtomicU64,
    /// Ticks read back from the journal for those clients.
    pub resume_ticks: AtomicU64,
    /// Journal files that could not be read for a resume (corrupt or
    /// unreadable; each logged): those clients got a gap notice.
    pub read_errors: AtomicU64,
}

/// Counters of the NATS link, shared by the bus thread and `/metrics`.
#[derive(Default, Debug)]
pub struct BusStats {
    /// 1 while connected to NATS (gauge).
    pub connected: AtomicI64,
    /// Connections made to NATS after the first (reconnects).
    pub reconnects: AtomicU64,
    /// Times the NATS connection was lost.
    pub disconnects: AtomicU64,
    /// Ticks published to the bus (ingest node).
    pub published: AtomicU64,
    /// Ticks not published because the bus was down (ingest node): the
    /// gateways see a `seq` gap for them.
    pub publish_dropped: AtomicU64,
    /// Tick messages received from the bus (gateway).
    pub received: AtomicU64,
    /// Bus messages that did not decode as ticks (gateway).
    pub malformed: AtomicU64,
    /// NATS reported this client as a slow consumer (messages were dropped).
    pub slow_consumer: AtomicU64,
    /// Last values read from JetStream: per key, and per `*` channel read
    /// (gateway snapshots, catch-up after a reconnect).
    pub last_value_reads: AtomicU64,
    /// Subjects this node is subscribed to for ticks (gauge, gateway).
    pub subjects: AtomicI64,
    /// 1 while the feed is stale: no heartbeat from the ingest node (gauge).
    pub feed_stale: AtomicI64,
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

    pub fn gauge_set(g: &AtomicI64, value: i64) {
        g.store(value, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        for ns in [0, 1_000, 1_001, 2_000_000_000] {
            h.observe_ns(ns);
        }
        let b: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!((b[0], b[1], b[LATENCY_BOUNDS_NS.len()]), (2, 1, 1));
        assert_eq!(Stats::get(&h.count), 4);
        assert_eq!(Stats::get(&h.sum_ns), 2_000_002_001);
    }
}
