//! One phase's figures in `tickwire bench --book`, and the counters that
//! explain its CPU per delivery without depending on the machine's load:
//! deliveries per write and bytes per delivery (from the server's
//! `/metrics`), and how busy other processes kept the machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::super::{procstat, target};

/// One phase's figures, summed over its rounds.
pub(super) struct PhaseResult {
    /// Messages the fast clients received during the phase.
    pub delivered: u64,
    /// Server CPU seconds used during the phase.
    pub cpu: f64,
    /// Latency (ns) from `rx` to the client's read.
    pub latency: Histogram<u64>,
    /// Messages published in the phase.
    pub published: u64,
    /// The server's counters over the phase (stalled clients included).
    pub counters: Counted,
    /// CPU seconds other processes used over the phase (neither the
    /// server nor the runner): what the CPU figures waited behind.
    pub others_cpu: f64,
    /// Wall seconds the phases lasted, for `others_cpu` as cores.
    pub wall: f64,
}

impl PhaseResult {
    pub fn empty() -> PhaseResult {
        PhaseResult {
            delivered: 0,
            cpu: 0.0,
            latency: super::histogram(),
            published: 0,
            counters: Counted::default(),
            others_cpu: 0.0,
            wall: 0.0,
        }
    }

    /// Adds one phase run from its two samples.
    pub fn add_sample(&mut self, before: &Sample, after: &Sample) {
        let d = |k: &str| after.metric(k) - before.metric(k);
        self.counters.ticks_in += d("tickwire_ticks_in_total");
        self.counters.ticks_out += d("tickwire_ticks_out_total");
        self.counters.bytes_out += d("tickwire_bytes_out_total");
        self.counters.tick_writes += d("tickwire_tick_writes_total");
        self.counters.tick_deliveries += d("tickwire_tick_deliveries_total");
        self.counters.book_unchanged += d("tickwire_book_unchanged_total");
        let ours = (after.server_cpu - before.server_cpu) + (after.runner_cpu - before.runner_cpu);
        if let (Some(a), Some(b)) = (before.system, after.system) {
            self.others_cpu += (b.process - a.process - ours).max(0.0);
        }
        self.wall += after.at.duration_since(before.at).as_secs_f64();
    }
}

/// The server's counters over a phase (sums over their labels).
#[derive(Default)]
pub(super) struct Counted {
    /// Ticks sequenced: published messages plus the quotes book updates
    /// derive.
    pub ticks_in: f64,
    /// Ticks queued for subscribers (every encoding).
    pub ticks_out: f64,
    /// Bytes queued for subscribers.
    pub bytes_out: f64,
    /// Write calls that carried a live tick.
    pub tick_writes: f64,
    /// Live ticks those writes carried.
    pub tick_deliveries: f64,
    /// Book diffs accepted but not sequenced (they changed nothing): the
    /// published messages `ticks_in` leaves out.
    pub book_unchanged: f64,
}

impl Counted {
    /// `bytes/deliv.`, `deliv./write`, `deliv./tick in` for the report.
    pub fn ratios(&self) -> (f64, f64, f64) {
        let per = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        (
            per(self.bytes_out, self.ticks_out),
            per(self.tick_deliveries, self.tick_writes),
            per(self.ticks_out, self.ticks_in),
        )
    }
}

/// What is read at each end of a phase.
pub(super) struct Sample {
    /// When.
    at: Instant,
    /// The server's `/metrics` (empty if it could not be read).
    metrics: HashMap<String, f64>,
    /// The server's CPU seconds so far.
    server_cpu: f64,
    /// This runner's CPU seconds so far.
    runner_cpu: f64,
    /// The machine's CPU seconds so far.
    system: Option<procstat::SystemCpu>,
}

impl Sample {
    pub fn take(addr: SocketAddr, server_cpu: f64) -> Sample {
        Sample {
            at: Instant::now(),
            metrics: target::fetch_metrics(addr, Duration::from_secs(2)).unwrap_or_default(),
            server_cpu,
            runner_cpu: procstat::process_cpu(std::process::id()).unwrap_or(0.0),
            system: procstat::system_cpu(),
        }
    }

    pub fn server_cpu(&self) -> f64 {
        self.server_cpu
    }

    /// A counter summed over its labels (`name` and every `name{…}`).
    fn metric(&self, name: &str) -> f64 {
        self.metrics
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_summed_over_its_labels_only() {
        let s = Sample {
            at: Instant::now(),
            metrics: [
                ("tickwire_ticks_out_total{encoding=\"json\"}", 5.0),
                ("tickwire_ticks_out_total{encoding=\"binary\"}", 2.0),
                ("tickwire_ticks_out_totalish", 100.0),
                ("tickwire_bytes_out_total", 9.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            server_cpu: 0.0,
            runner_cpu: 0.0,
            system: None,
        };
        assert_eq!(s.metric("tickwire_ticks_out_total"), 7.0);
        assert_eq!(s.metric("tickwire_bytes_out_total"), 9.0);
    }
}
