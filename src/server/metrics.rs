//! `/metrics`: the server's counters in Prometheus text format (0.0.4).
//!
//! Nothing here runs on the hot path: the fan-out and ingest only bump the
//! relaxed atomics in [`crate::pipeline::stats`]; a scrape reads them and renders them
//! through `prometheus-client`'s encoder (escaping, `_total` suffixes,
//! histogram buckets), registered as one custom [`Collector`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::pipeline::ingest::Ingest;
use crate::pipeline::stats::{Histogram, LATENCY_BOUNDS_NS, Origin, Refusal, Stats};
use crate::wire::encode::Encoding;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric, now.
/// `admitted`: connections holding an admission place now
/// ([`crate::access::limits::Admission::counts`]).
pub fn render(
    stats: &Arc<Stats>,
    ingest: &Arc<Ingest>,
    ring_capacity: usize,
    admitted: usize,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector {
        stats: stats.clone(),
        ingest: ingest.clone(),
        ring_capacity,
        admitted,
    }));
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail; the encoder's only errors are the
    // writer's.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

struct StatsCollector {
    stats: Arc<Stats>,
    ingest: Arc<Ingest>,
    ring_capacity: usize,
    admitted: usize,
}

impl fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsCollector").finish_non_exhaustive()
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn load_gauge(g: &AtomicI64) -> i64 {
    g.load(Ordering::Relaxed)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (lv, v) in values {
        m.encode_family(&[(label, *lv)])?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A gauge whose value is a ratio (derived at scrape time).
fn ratio(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, i64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (lv, v) in values {
        m.encode_family(&[(label, *lv)])?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> fmt::Result {
    // Non-cumulative counts; the encoder accumulates. The count is their
    // sum, so the +Inf bucket always equals it even mid-update.
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bound = LATENCY_BOUNDS_NS
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            (bound, load(b))
        })
        .collect();
    let count = buckets.iter().map(|(_, n)| n).sum();
    let sum = load(&h.sum_ns) as f64 / 1e9;
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // In exposition order, one group of metrics at a time.
        let s = &*self.stats;
        self.connections(&mut e, s)?;
        self.ticks(&mut e, s)?;
        self.ring(&mut e, s)?;
        self.bus(&mut e, s)?;
        journal(&mut e, &s.journal)?;
        self.refusals(&mut e, s)?;
        self.queues(&mut e, s)
    }
}

impl StatsCollector {
    /// Connections (open, admitted, opened) and subscriptions.
    fn connections(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        gauges(
            e,
            "tickwire_connections",
            "Open connections, by endpoint kind: subscriber counts /v1/stream (WebSocket) and /v1/sse (SSE) alike, publisher /v1/publish.",
            "kind",
            &[
                ("subscriber", load_gauge(&s.subscribers)),
                ("publisher", load_gauge(&s.publishers)),
            ],
        )?;
        gauge(
            e,
            "tickwire_connections_admitted",
            "WebSocket and SSE connections holding a place under --max-connections (from the upgrade until the session ends).",
            self.admitted as i64,
        )?;
        counter(
            e,
            "tickwire_connections_opened",
            "Subscriber and publisher connections accepted since start, WebSocket and SSE alike.",
            load(&s.connections_total),
        )?;
        gauges(
            e,
            "tickwire_subscriptions",
            "Subscriptions: (connection, symbol, channel) by name, and (connection, channel) to `*`.",
            "type",
            &[
                ("named", load_gauge(&s.named_subscriptions)),
                ("star", load_gauge(&s.star_subscriptions)),
            ],
        )
    }

    /// Ticks in and out, and what it took to write them.
    fn ticks(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        let by_encoding =
            |a: &[AtomicU64; 3]| Encoding::ALL.map(|enc| (enc.as_str(), load(&a[enc as usize])));
        counters(
            e,
            "tickwire_ticks_in",
            "Ticks sequenced into the ring, by source.",
            "source",
            &[
                (
                    "publisher",
                    load(&s.ticks_in_by_origin[Origin::Publisher as usize]),
                ),
                (
                    "recorded",
                    load(&s.ticks_in_by_origin[Origin::Recorded as usize]),
                ),
                ("bus", load(&s.ticks_in_by_origin[Origin::Bus as usize])),
            ],
        )?;
        counter(
            e,
            "tickwire_book_unchanged",
            "Book diffs accepted but not sequenced: every level already had its size (a removal of an absent level, a size sent again), so no seq, no history entry, no message.",
            load(&s.book_unchanged),
        )?;
        counters(
            e,
            "tickwire_ticks_out",
            "Ticks queued for subscriber sockets, by encoding.",
            "encoding",
            &by_encoding(&s.ticks_out),
        )?;
        counters(
            e,
            "tickwire_frames_out",
            "WebSocket frames (encoding json, binary) and SSE events (encoding sse) carrying ticks (a binary frame may carry many).",
            "encoding",
            &by_encoding(&s.tick_frames_out),
        )?;
        counters(
            e,
            "tickwire_bytes_out",
            "Bytes written to sockets, by the connection's encoding (control messages included).",
            "encoding",
            &by_encoding(&s.bytes_out),
        )?;
        counter(
            e,
            "tickwire_socket_writes",
            "write() calls that handed bytes to a socket.",
            load(&s.writes),
        )?;
        let (writes, deliveries) = (load(&s.tick_writes), load(&s.tick_deliveries));
        counter(
            e,
            "tickwire_tick_writes",
            "write() calls that carried at least one live tick (snapshots and control replies alone excluded).",
            writes,
        )?;
        counter(
            e,
            "tickwire_tick_deliveries",
            "Live ticks carried by those writes: rate(tickwire_tick_deliveries_total) / rate(tickwire_tick_writes_total) is deliveries per write.",
            deliveries,
        )?;
        ratio(
            e,
            "tickwire_deliveries_per_write",
            "Live ticks per write() that carried any, since start (0 before the first).",
            if writes == 0 {
                0.0
            } else {
                deliveries as f64 / writes as f64
            },
        )?;
        counter(
            e,
            "tickwire_ticks_dropped_stale",
            "Pending ticks replaced by a newer tick of the same key for a slow client.",
            load(&s.ticks_dropped_stale),
        )?;
        counter(
            e,
            "tickwire_clients_evicted",
            "Clients closed with 4000 (slow consumer).",
            load(&s.clients_evicted),
        )?;
        self.catchup(e, s)?;
        self.coalescing(e, s)
    }

    /// The fan-out's coalescing window (`--coalesce-max-window`).
    fn coalescing(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        counter(
            e,
            "tickwire_coalesce_holds",
            "Fan-out passes that waited for a busy worker's coalescing window.",
            load(&s.coalesce_holds),
        )?;
        e.encode_descriptor(
            "tickwire_coalesce_held_seconds",
            "Time those passes waited, seconds.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&(load(&s.coalesce_held_ns) as f64 / 1e9), None)?;
        counter(
            e,
            "tickwire_coalesce_opened",
            "Times a worker's coalescing window opened (its thread used --coalesce-busy of a core, or --coalesce-paying-busy where holding pays).",
            load(&s.coalesce_opened),
        )?;
        gauge(
            e,
            "tickwire_coalesce_paying_workers",
            "Workers whose clients' tick rate makes holding pay (--coalesce-min-yield): their window opens at --coalesce-paying-busy.",
            load_gauge(&s.coalesce_paying),
        )?;
        gauge(
            e,
            "tickwire_coalesce_open_workers",
            "Workers whose coalescing window is open.",
            load_gauge(&s.coalesce_open),
        )?;
        ratio(
            e,
            "tickwire_coalesce_window_seconds",
            "The open coalescing windows, summed over workers, seconds.",
            load_gauge(&s.coalesce_window_ns) as f64 / 1e9,
        )
    }

    /// Slow `catchup` clients reading the shared history.
    fn catchup(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        counter(
            e,
            "tickwire_catchup_started",
            "Cursors started for `catchup` clients that fell behind their byte cap.",
            load(&s.catchup_started),
        )?;
        counter(
            e,
            "tickwire_catchup_ticks",
            "Ticks clients read from the shared history (resume and catch-up).",
            load(&s.catchup_ticks),
        )?;
        counter(
            e,
            "tickwire_catchup_gaps",
            "Times a catching-up client fell out of the history (a gap).",
            load(&s.catchup_gaps),
        )?;
        counter(
            e,
            "tickwire_catchup_pauses",
            "Catch-up slices after which a client's writer gave the worker's other tasks a turn before reading on.",
            load(&s.catchup_pauses),
        )
    }

    /// TLS handshakes and the ingest ring.
    fn ring(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        counter(
            e,
            "tickwire_tls_handshakes_failed",
            "TLS handshakes that failed or timed out (--tls-cert only).",
            load(&s.tls_handshakes_failed),
        )?;
        gauge(
            e,
            "tickwire_ring_occupancy",
            "Ticks in the ingest ring not yet read by the slowest worker.",
            self.ingest.ring_occupancy() as i64,
        )?;
        gauge(
            e,
            "tickwire_ring_capacity",
            "Ticks the ingest ring holds.",
            self.ring_capacity as i64,
        )?;
        counter(
            e,
            "tickwire_ring_full",
            "Times a publish found the ring full and waited.",
            load(&s.ring_full),
        )
    }

    /// The NATS bus link (`--bus`).
    fn bus(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        let b = &s.bus;
        gauge(
            e,
            "tickwire_bus_connected",
            "1 while connected to the NATS bus (--bus); 0 otherwise.",
            load_gauge(&b.connected),
        )?;
        counter(
            e,
            "tickwire_bus_reconnects",
            "Reconnections to the NATS bus after a lost connection.",
            load(&b.reconnects),
        )?;
        counter(
            e,
            "tickwire_bus_disconnects",
            "Times the NATS bus connection was lost.",
            load(&b.disconnects),
        )?;
        counter(
            e,
            "tickwire_bus_published",
            "Ticks published to the bus (ingest node).",
            load(&b.published),
        )?;
        counter(
            e,
            "tickwire_bus_publish_dropped",
            "Ticks not published because the bus was down (ingest node); gateways see a seq gap.",
            load(&b.publish_dropped),
        )?;
        counter(
            e,
            "tickwire_bus_received",
            "Tick messages received from the bus (gateway).",
            load(&b.received),
        )?;
        counter(
            e,
            "tickwire_bus_malformed",
            "Bus messages that did not decode as ticks (gateway).",
            load(&b.malformed),
        )?;
        counter(
            e,
            "tickwire_bus_duplicates",
            "Bus ticks dropped as duplicates or out of order (gateway).",
            load(&s.bus_duplicates),
        )?;
        counter(
            e,
            "tickwire_bus_seq_gaps",
            "Bus ticks that skipped past their key's next seq: ticks lost on the bus (gateway).",
            load(&s.bus_seq_gaps),
        )?;
        counter(
            e,
            "tickwire_bus_slow_consumer",
            "Times NATS dropped messages because this node fell behind.",
            load(&b.slow_consumer),
        )?;
        counter(
            e,
            "tickwire_bus_last_value_reads",
            "Last values read from JetStream (per key, or per channel for `*`): snapshots of keys not yet live here, catch-up after a reconnect.",
            load(&b.last_value_reads),
        )?;
        gauge(
            e,
            "tickwire_bus_subjects",
            "Tick subjects this gateway is subscribed to on the bus (interest-based).",
            load_gauge(&b.subjects),
        )?;
        gauge(
            e,
            "tickwire_feed_stale",
            "1 while this gateway has no heartbeat from the ingest node (clients were sent a stale status).",
            load_gauge(&b.feed_stale),
        )
    }

    /// Requests refused or answered with an error.
    fn refusals(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        counter(
            e,
            "tickwire_handshake_timeouts",
            "Connections dropped without a complete HTTP request head within --handshake-timeout.",
            load(&s.handshake_timeouts),
        )?;
        counter(
            e,
            "tickwire_publish_errors",
            "Published ticks refused as malformed.",
            load(&s.publish_errors),
        )?;
        let refused: Vec<(&str, u64)> = Refusal::ALL
            .iter()
            .map(|&r| (r.as_str(), load(&s.upgrades_refused[r as usize])))
            .collect();
        counters(
            e,
            "tickwire_upgrades_refused",
            "WebSocket upgrades and SSE requests refused before their session starts: 401 (unauthorized), 403 (forbidden), 503 (limit).",
            "reason",
            &refused,
        )?;
        counter(
            e,
            "tickwire_request_errors",
            "`error` replies sent (bad control messages and refused published ticks).",
            load(&s.request_errors),
        )
    }

    /// What waits for slow clients, and the latency histograms.
    fn queues(&self, e: &mut DescriptorEncoder, s: &Stats) -> fmt::Result {
        gauge(
            e,
            "tickwire_queued_bytes",
            "Bytes accepted for sockets and not yet written.",
            load_gauge(&s.queued_bytes),
        )?;
        gauge(
            e,
            "tickwire_pending_ticks",
            "Ticks waiting in per-key pending slots of slow clients.",
            load_gauge(&s.pending_ticks),
        )?;
        gauge(
            e,
            "tickwire_pending_book_levels",
            "Price levels held in slow clients' merged pending book diffs (at most one per level per key).",
            load_gauge(&s.pending_book_levels),
        )?;
        histogram(
            e,
            "tickwire_ingest_to_encode_seconds",
            "From a tick's rx stamp to its frame encoded; one sample per ingest batch (its last tick).",
            &s.ingest_to_encode,
        )?;
        histogram(
            e,
            "tickwire_encode_to_write_seconds",
            "From a tick's rx/encode to the socket write carrying it; one sample per write (its oldest live tick).",
            &s.encode_to_write,
        )
    }
}

/// The journal (`--journal`).
fn journal(e: &mut DescriptorEncoder, j: &crate::pipeline::stats::JournalStats) -> fmt::Result {
    for (name, help, c) in [
        (
            "tickwire_journal_ticks_written",
            "Ticks written to the journal (--journal).",
            &j.ticks_written,
        ),
        (
            "tickwire_journal_bytes_written",
            "Bytes written to journal files.",
            &j.bytes_written,
        ),
        (
            "tickwire_journal_rotations",
            "Journal files closed and a new one started.",
            &j.rotations,
        ),
        (
            "tickwire_journal_files_deleted",
            "Old journal files deleted to stay within --journal-bytes.",
            &j.files_deleted,
        ),
        (
            "tickwire_journal_write_errors",
            "Journal write failures (disk full, I/O error); delivery waits until a retry succeeds.",
            &j.write_errors,
        ),
        (
            "tickwire_journal_syncs",
            "fdatasync calls on journal files.",
            &j.syncs,
        ),
        (
            "tickwire_journal_restored_ticks",
            "Ticks read back from the journal at start-up.",
            &j.restored_ticks,
        ),
        (
            "tickwire_journal_bad_tails",
            "Truncated or corrupt journal tails skipped at start-up (each logged with file and byte).",
            &j.bad_tails,
        ),
        (
            "tickwire_journal_bad_tail_bytes",
            "Bytes in the journal tails skipped at start-up.",
            &j.bad_tail_bytes,
        ),
        (
            "tickwire_journal_resume_reads",
            "Reads of the journal for a resume or catch-up older than the memory history.",
            &j.resume_reads,
        ),
        (
            "tickwire_journal_resume_ticks",
            "Ticks read back from the journal for those clients.",
            &j.resume_ticks,
        ),
        (
            "tickwire_journal_read_errors",
            "Journal files that could not be read for a resume (each logged; the client is told of the gap).",
            &j.read_errors,
        ),
    ] {
        counter(e, name, help, load(c))?;
    }
    gauge(
        e,
        "tickwire_journal_watermark",
        "Offset of the newest tick written to the journal: ticks beyond it are not delivered yet.",
        load_gauge(&j.watermark),
    )
}
