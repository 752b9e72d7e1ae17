//! What a run found, as JSON (every figure) and as a table a person reads,
//! plus the HdrHistogram interval log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;

/// Latency percentiles, in ns.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            p9999_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub per_client: usize,
    pub symbols: usize,
    pub all_symbols: bool,
    pub channels: Vec<&'static str>,
    /// "synthetic" or the recording's path.
    pub source: String,
    /// Ticks/s for synthetic; null for a recording.
    pub rate: Option<f64>,
    pub speed: Option<String>,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub slow_clients: usize,
    pub stall_seconds: Option<f64>,
    pub stall_at_seconds: Option<f64>,
    /// The slow clients' policy (`--stall-policy`); none: the server's default.
    pub stall_policy: Option<crate::resume::StallPolicy>,
    pub seed: u64,
    pub client_threads: usize,
}

/// One group of clients (fast or slow).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupReport {
    pub clients: usize,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub snapshots: u64,
    pub gap_events: u64,
    pub gap_ticks: u64,
    pub reorders: u64,
    pub delivered_per_sec: f64,
    /// How connections ended early, by close code, "eof" or "error".
    pub ended_early: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    pub published: u64,
    pub seconds: f64,
    pub ticks_per_sec: f64,
    pub lateness_p99_ns: u64,
    pub lateness_max_ns: u64,
    /// The publisher thread's scheduling (`--publisher-priority`) and spin:
    /// what its lateness was measured under.
    pub pacing: crate::pacing::PacingReport,
    pub server_errors: u64,
    pub server_error_samples: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SlowReport {
    pub group: GroupReport,
    pub latency: Percentiles,
    pub lagging_notices: u64,
    /// Fast clients' latency (from rx) before, during and after the stall.
    pub fast_before: Percentiles,
    pub fast_during: Percentiles,
    pub fast_after: Percentiles,
    /// The server's memory at the stall's edges (see [`crate::stall`]).
    pub memory: crate::stall::StallMemory,
}

/// Fewest clients a run needs for its per-connection memory to be
/// reported: at 50 clients the ~4.5 MB a server grows by for its first
/// connections read as "90 KiB per connection"; at 1,000 that fixed part is
/// ~4 KiB of each, within the figure's noise. For a real per-connection
/// cost, compare two runs (e.g. 1,000 and 10,000 clients): the slope of
/// RSS over clients.
pub const MIN_CLIENTS_FOR_PER_CONNECTION: usize = 1_000;

/// RSS growth over the connect phase per connection, when meaningful.
pub fn rss_per_connection(growth: u64, clients: usize) -> Option<f64> {
    (clients >= MIN_CLIENTS_FOR_PER_CONNECTION).then(|| growth as f64 / clients as f64)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerResources {
    /// Every process of the target (a deployment: nats-server, ingest
    /// node, gateways); the figures below are sums over them.
    pub pids: Vec<u32>,
    /// Each process on its own (only when there are several).
    pub processes: Vec<ProcessResources>,
    /// CPU seconds over the measured window (publishing and drain).
    pub cpu_seconds: f64,
    pub cpu_cores: f64,
    pub cpu_seconds_per_million: f64,
    pub rss_before_connect: u64,
    pub rss_after_connect: u64,
    /// (after connect − before connect) / connections: memory per idle
    /// connection; `None` (null in JSON) below [`MIN_CLIENTS_FOR_PER_CONNECTION`]
    /// clients, where the server's fixed growth at the first connections
    /// (allocator arenas, buffers, runtime) would be most of the figure.
    pub rss_per_connection: Option<f64>,
    pub rss_start: u64,
    pub rss_end: u64,
    pub rss_peak: u64,
}

/// One process of a multi-process target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessResources {
    pub role: String,
    pub pid: u32,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_million: f64,
    pub rss_end: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunnerResources {
    pub cpu_seconds: f64,
    /// Cores kept busy by other processes (neither server nor runner).
    pub other_processes_cores: f64,
    /// Cores spent in interrupts (on loopback: the TCP receive path of
    /// both server and runner, charged to no process).
    pub interrupt_cores: f64,
    pub cpu_seconds_per_million: f64,
    /// Share of the window the busiest client thread was on a CPU.
    pub busiest_client_thread: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IntervalSummary {
    pub second: u64,
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub label: String,
    pub target: String,
    /// Which of the targets (0 = A, 1 = B, …).
    pub target_index: usize,
    /// Where the publisher connected.
    pub url: String,
    /// Where the subscribers connected (round-robin); `[url]` for one server.
    pub subscribe_urls: Vec<String>,
    /// `server` and `version` from the server's `hello`.
    pub server: String,
    pub spawned: bool,
    pub round: usize,
    /// A `--stall-control` control run (the slow clients did not stall).
    pub stall_control: bool,
    /// The swept parameter and its value, in a sweep.
    pub point: Option<(String, f64)>,
    /// False when the run was cut short: see `problems`.
    pub complete: bool,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub load: LoadReport,
    pub connect_seconds: f64,
    /// Seconds from the first publish to the end of the drain.
    pub window_seconds: f64,
    pub publish: PublishReport,
    /// Fast clients, receive time − `rx`.
    pub latency: Percentiles,
    /// Fast clients, receive time − intended send time (`ts`).
    pub latency_intended: Percentiles,
    pub fast: GroupReport,
    pub slow: Option<SlowReport>,
    /// The reconnect scenario (`--reconnect-every`): lost ticks, resume latency.
    pub reconnect: Option<crate::resume::ReconnectReport>,
    /// All live deliveries per second of publishing.
    pub delivered_per_sec: f64,
    pub parse_errors: u64,
    pub unexpected_ticks: u64,
    pub clock_skew_ticks: u64,
    pub subscriber_server_errors: u64,
    pub samples: Vec<String>,
    pub server_resources: Option<ServerResources>,
    pub runner: RunnerResources,
    /// The server's deliveries per write (see the `writes` module).
    pub writes: crate::writes::WritesReport,
    /// `--pin-server`/`--pin-runner`, if given.
    pub pinning: Option<crate::pinning::Pinning>,
    pub intervals: Vec<IntervalSummary>,
}

/// A run's report with the histograms behind it.
pub struct RunData {
    pub report: RunReport,
    pub rx: Histogram<u64>,
    pub intended: Histogram<u64>,
    /// Wall clock of the publish start, for the interval log.
    pub start: SystemTime,
    pub intervals: Vec<Histogram<u64>>,
}

/// A duration in ns, short: `850ns`, `85.2µs`, `1.25ms`, `2.10s`.
pub fn ns(v: u64) -> String {
    let f = v as f64;
    if v < 1_000 {
        format!("{v}ns")
    } else if v < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if v < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn pct_row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<13}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        ns(p.p50_ns),
        ns(p.p90_ns),
        ns(p.p99_ns),
        ns(p.p999_ns),
        ns(p.p9999_ns),
        ns(p.max_ns)
    );
}

/// The table printed after each run.
pub fn human(r: &RunReport) -> String {
    let mut o = String::new();
    let status = if r.complete { "" } else { "  [PARTIAL]" };
    if r.subscribe_urls.len() == 1 && r.subscribe_urls[0] == r.url {
        let _ = writeln!(o, "── {} ── {} ({}){status}", r.label, r.url, r.server);
    } else {
        let _ = writeln!(
            o,
            "── {} ── publish {} → subscribe {} ({}){status}",
            r.label,
            r.url,
            r.subscribe_urls.join(", "),
            r.server
        );
    }
    let l = &r.load;
    let subs = if l.all_symbols {
        "\"*\"".to_owned()
    } else {
        format!("{} of {} symbols", l.per_client, l.symbols)
    };
    let source = match l.rate {
        Some(rate) => format!("{rate} ticks/s"),
        None => format!(
            "{} at speed {}",
            l.source,
            l.speed.as_deref().unwrap_or("?")
        ),
    };
    let _ = writeln!(
        o,
        "  load         {} clients × {subs} [{}], {source}, {} s (warm-up {} s){}",
        thousands(l.clients as u64),
        l.channels.join(","),
        l.seconds,
        l.warmup_seconds,
        if l.slow_clients > 0 {
            format!(
                ", {} slow clients on \"*\" stalling {} s{}",
                l.slow_clients,
                l.stall_seconds.unwrap_or(0.0),
                l.stall_policy
                    .map(|p| format!(" (policy {})", p.name()))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "  latency           p50      p90      p99    p99.9   p99.99      max   (fast clients, {} timed ticks)",
        thousands(r.latency.count)
    );
    pct_row(&mut o, "from rx", &r.latency);
    pct_row(&mut o, "from intended", &r.latency_intended);
    let f = &r.fast;
    let _ = writeln!(
        o,
        "  delivered    {} of {} expected ({}/s) · missing {} · gaps {} ({} ticks) · reorders {} · parse errors {}",
        thousands(f.delivered),
        thousands(f.expected),
        thousands(r.delivered_per_sec as u64),
        thousands(f.missing),
        thousands(f.gap_events),
        thousands(f.gap_ticks),
        f.reorders,
        r.parse_errors
    );
    if let Some(s) = &r.slow {
        let _ = writeln!(
            o,
            "  slow         {} clients: {} delivered of {} expected · gaps {} ({} ticks dropped) · lagging notices {} · closed early {:?}",
            s.group.clients,
            thousands(s.group.delivered),
            thousands(s.group.expected),
            thousands(s.group.gap_events),
            thousands(s.group.gap_ticks),
            s.lagging_notices,
            s.group.ended_early
        );
        let _ = writeln!(
            o,
            "  fast p99     before the stall {} · during {} · after {}{}",
            ns(s.fast_before.p99_ns),
            ns(s.fast_during.p99_ns),
            ns(s.fast_after.p99_ns),
            if r.stall_control {
                " (control: the slow clients read throughout)"
            } else {
                ""
            }
        );
        let m = &s.memory;
        if let (Some(a), Some(b)) = (m.rss_stall_start, m.rss_stall_end) {
            let queued = match (m.queued_bytes_stall_start, m.queued_bytes_stall_end) {
                (Some(qa), Some(qb)) => format!(
                    " · tickwire_queued_bytes {} → {} (highest {})",
                    mb(qa as u64),
                    mb(qb as u64),
                    mb(m.queued_bytes_stall_peak.unwrap_or(0.0) as u64)
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  stall RSS    {} at the stall's start → {} at its end ({}{}; highest {}) → {} after the drain{queued}",
                mb(a),
                mb(b),
                if b >= a { "+" } else { "-" },
                mb(b.abs_diff(a)),
                m.rss_stall_peak.map_or("-".into(), mb),
                m.rss_after_drain.map_or("-".into(), mb)
            );
        }
    }
    if let Some(rc) = &r.reconnect {
        rc.table(&mut o);
    }
    match &r.server_resources {
        Some(s) => {
            let _ = writeln!(
                o,
                "  server       {:.2} CPU-s ({:.2} cores) · {:.3} CPU-s per M deliveries · RSS {} → {} (peak {}) · {}",
                s.cpu_seconds,
                s.cpu_cores,
                s.cpu_seconds_per_million,
                mb(s.rss_start),
                mb(s.rss_end),
                mb(s.rss_peak),
                match s.rss_per_connection {
                    Some(b) => format!("{:.1} KiB per connection", b / 1024.0),
                    None => format!(
                        "memory per connection not reported below {} clients (fixed start-up growth would dominate it)",
                        thousands(MIN_CLIENTS_FOR_PER_CONNECTION as u64)
                    ),
                }
            );
            if !s.processes.is_empty() {
                let each: Vec<String> = s
                    .processes
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {:.2} CPU-s ({:.3}/M), RSS {}",
                            p.role,
                            p.cpu_seconds,
                            p.cpu_seconds_per_million,
                            mb(p.rss_end)
                        )
                    })
                    .collect();
                let _ = writeln!(o, "  processes    {}", each.join(" · "));
            }
        }
        None => {
            let _ = writeln!(
                o,
                "  server       not sampled (not a local process we can see; try --server-pid)"
            );
        }
    }
    let _ = writeln!(
        o,
        "  runner       {:.2} CPU-s · {:.3} CPU-s per M deliveries · busiest client thread {:.0}% · interrupts {:.2} cores · other processes {:.2} cores · publisher {} ticks ({:.0}/s), late p99 {} ({}{})",
        r.runner.cpu_seconds,
        r.runner.cpu_seconds_per_million,
        r.runner.busiest_client_thread * 100.0,
        r.runner.interrupt_cores,
        r.runner.other_processes_cores,
        thousands(r.publish.published),
        r.publish.ticks_per_sec,
        ns(r.publish.lateness_p99_ns),
        r.publish.pacing.scheduling,
        if r.publish.pacing.spin_us > 0 {
            format!(", spin {} µs", r.publish.pacing.spin_us)
        } else {
            String::new()
        }
    );
    let pc = &r.publish.pacing;
    let _ = writeln!(
        o,
        "  publisher    waited for a CPU {} in all · writes p99 {}, max {}",
        pc.run_queue_wait_ms
            .map_or("(not known)".into(), |w| format!("{w:.1} ms")),
        ns(pc.write_p99_ns),
        ns(pc.write_max_ns)
    );
    let w = &r.writes;
    let mut parts = Vec::new();
    if let (Some(d), Some(n)) = (w.metrics_deliveries_per_write, w.metrics_tick_writes) {
        parts.push(format!(
            "{d:.2} deliveries per write by /metrics ({} writes)",
            thousands(n)
        ));
    }
    if let (Some(n), Some(rd)) = (w.syscall_writes, w.syscall_reads) {
        parts.push(format!(
            "{:.2} by system calls ({} write-family, {} read-family calls)",
            w.syscall_deliveries_per_write.unwrap_or(f64::NAN),
            thousands(n),
            thousands(rd)
        ));
    }
    if let Some(note) = &w.note {
        parts.push(note.clone());
    }
    if !parts.is_empty() {
        let _ = writeln!(o, "  writes       {}", parts.join(" · "));
    }
    if let Some(p) = &r.pinning {
        let _ = writeln!(o, "  pinned       {}", p.describe());
    }
    for w in &r.warnings {
        let _ = writeln!(o, "  warning: {w}");
    }
    for p in &r.problems {
        let _ = writeln!(o, "  PROBLEM: {p}");
    }
    o
}

/// Writes every run's per-second histograms into one HdrHistogram interval
/// log, tagged by run.
pub fn write_interval_log(path: &std::path::Path, runs: &[RunData]) -> std::io::Result<()> {
    let Some(first) = runs.iter().map(|r| r.start).min() else {
        return Ok(());
    };
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(
                "tickwire bench: fast clients' latency from rx, ns, one histogram per second",
            )
            .with_start_time(first)
            .with_base_time(first)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut ser)?;
        for r in runs {
            let tag: String = r
                .report
                .label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let base = r.start.duration_since(first).unwrap_or_default();
            for (k, h) in r.intervals.iter().enumerate() {
                w.write_histogram(
                    h,
                    base + Duration::from_secs(k as u64),
                    Duration::from_secs(1),
                    Tag::new(&tag),
                )
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
        }
    }
    std::fs::write(path, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_memory_is_reported_only_where_it_means_something() {
        // The case: 4.5 MB of start-up growth over 50 clients.
        assert_eq!(rss_per_connection(4_628_000, 50), None);
        assert_eq!(rss_per_connection(0, 0), None);
        assert_eq!(rss_per_connection(12_288_000, 1_000), Some(12_288.0));
    }

    #[test]
    fn formats() {
        assert_eq!(ns(850), "850ns");
        assert_eq!(ns(85_200), "85.2µs");
        assert_eq!(ns(1_250_000), "1.25ms");
        assert_eq!(ns(2_100_000_000), "2.10s");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn percentiles_are_ordered() {
        let mut h = crate::clients::new_histogram();
        for v in 1..100_000u64 {
            h.record(v * 10).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!(p.min_ns <= p.p50_ns && p.p50_ns <= p.p90_ns && p.p90_ns <= p.p99_ns);
        assert!(p.p99_ns <= p.p999_ns && p.p999_ns <= p.p9999_ns && p.p9999_ns <= p.max_ns);
        assert_eq!(Percentiles::of(&crate::clients::new_histogram()).count, 0);
    }
}
