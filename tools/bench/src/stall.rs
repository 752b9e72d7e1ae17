//! S3's memory figure: what the stalled clients cost the server, apart
//! from what it grows by anyway.
//!
//! A server's RSS grows during any run: tickwire's resume history fills
//! (at S1, 2,000 ticks/s × ~450 bytes, about 0.9 MB/s until its
//! `--history-age` or `--history-bytes` cap), allocator arenas warm up.
//! So "RSS grew 47.8 MB over a 25 s S3 run" says little about the stall.
//! Two measures separate it:
//!
//! - **RSS at the stall's edges** (every run with `--slow`): RSS and, for
//!   tickwire, `tickwire_queued_bytes` (frames queued in user space for
//!   clients' sockets) from `/metrics`, when the stall starts, when it ends
//!   and after the drain.
//! - **A control run** (`--stall-control`): each round runs each target
//!   twice, once with the stall and once with the same slow clients
//!   reading throughout, identical otherwise (same load, same length, same
//!   schedule of samples). The stalled clients' share is the RSS growth
//!   over the stall window in the stalled run minus the same window's
//!   growth in the control run, and the fast clients' p99 during the stall
//!   is compared with the control's over the same window.

use std::fmt::Write as _;

use serde::Serialize;

use crate::compare::{LETTERS, median};
use crate::report::{RunData, RunReport, mb, ns};
use crate::target::Target;

/// The target's memory at the stall's edges (one run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StallMemory {
    /// RSS (summed over the target's processes) when the stall started,
    /// when it ended, and after the drain, bytes.
    pub rss_stall_start: Option<u64>,
    /// At the first sample after the stall (the slow clients read again).
    pub rss_stall_end: Option<u64>,
    /// After the drain: what the server kept.
    pub rss_after_drain: Option<u64>,
    /// `tickwire_queued_bytes` from the publish endpoint's `/metrics` at
    /// the same points (`None`: not a tickwire server, or no answer).
    pub queued_bytes_stall_start: Option<f64>,
    /// The same at the stall's end.
    pub queued_bytes_stall_end: Option<f64>,
    /// The highest RSS sampled during the stall (every 50 ms).
    pub rss_stall_peak: Option<u64>,
    /// The highest `tickwire_queued_bytes` during the stall (asked every
    /// [`QUEUED_EVERY`] samples): a server that evicts its stalled clients
    /// before the stall ends has freed their queues by then.
    pub queued_bytes_stall_peak: Option<f64>,
}

/// `/metrics` is asked every this many samples during the stall (the
/// publish loop samples every 50 ms: twice a second), not to load the
/// server under test with scrapes.
const QUEUED_EVERY: u32 = 10;

impl StallMemory {
    /// RSS growth over the stall window, bytes (negative: it shrank).
    pub fn growth(&self) -> Option<f64> {
        Some(self.rss_stall_end? as f64 - self.rss_stall_start? as f64)
    }
}

/// Takes the stall-edge samples as the publish loop passes them.
pub(crate) struct StallSampler {
    /// Wall clock (ns) of the stall's start and end; 0 when there is none.
    start_ns: u64,
    end_ns: u64,
    /// Where `/metrics` is asked (the publish endpoint).
    metrics: std::net::SocketAddr,
    pub memory: StallMemory,
    /// Samples taken inside the stall window so far.
    inside: u32,
}

impl StallSampler {
    pub(crate) fn new(window: Option<(u64, u64)>, metrics: std::net::SocketAddr) -> StallSampler {
        let (start_ns, end_ns) = window.unwrap_or((0, 0));
        StallSampler {
            start_ns,
            end_ns,
            metrics,
            memory: StallMemory::default(),
            inside: 0,
        }
    }

    /// Called every pass of the publish loop with the wall clock and the
    /// target's RSS now: records the first sample at or after each edge.
    pub(crate) fn observe(&mut self, now_ns: u64, rss: Option<u64>) {
        if self.start_ns == 0 {
            return;
        }
        if self.memory.rss_stall_start.is_none() && now_ns >= self.start_ns {
            self.memory.rss_stall_start = rss;
            self.memory.queued_bytes_stall_start = self.queued();
        }
        if now_ns >= self.start_ns && now_ns < self.end_ns {
            let m = &mut self.memory;
            m.rss_stall_peak = m.rss_stall_peak.max(rss);
            if self.inside.is_multiple_of(QUEUED_EVERY)
                && let Some(q) = self.queued()
            {
                let m = &mut self.memory;
                m.queued_bytes_stall_peak = Some(m.queued_bytes_stall_peak.map_or(q, |p| p.max(q)));
            }
            self.inside += 1;
        }
        if self.memory.rss_stall_end.is_none() && now_ns >= self.end_ns {
            self.memory.rss_stall_end = rss;
            self.memory.queued_bytes_stall_end = self.queued();
        }
    }

    fn queued(&self) -> Option<f64> {
        crate::target::fetch_metrics(self.metrics, std::time::Duration::from_millis(300))
            .ok()?
            .get("tickwire_queued_bytes")
            .copied()
    }
}

/// The `--stall-control` table: per target, medians over rounds of the
/// stalled and control runs, and their differences.
pub(crate) fn control_summary(runs: &[RunData], targets: &[Target]) -> (String, serde_json::Value) {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "stalled clients' share (--stall-control): medians over rounds; \"stalled\" runs have the slow clients stop reading for --stall s, \"control\" runs are the same with them reading throughout"
    );
    let _ = writeln!(
        o,
        "  {:<30}{:>14}{:>14}{:>16}{:>16}{:>16}{:>10}",
        "target", "RSS growth", "control", "stalled share", "fast p99 stall", "control", "moved"
    );
    let mut rows = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        let pick = |control: bool| -> Vec<&RunReport> {
            runs.iter()
                .map(|r| &r.report)
                .filter(|r| r.target_index == ti && r.stall_control == control)
                .collect()
        };
        let (stalled, control) = (pick(false), pick(true));
        let growth = |v: &[&RunReport]| {
            median(
                v.iter()
                    .filter_map(|r| r.slow.as_ref()?.memory.growth())
                    .collect(),
            )
        };
        let p99_during = |v: &[&RunReport]| {
            median(
                v.iter()
                    .filter_map(|r| Some(r.slow.as_ref()?.fast_during.p99_ns as f64))
                    .collect(),
            )
        };
        let queued = |v: &[&RunReport]| {
            median(
                v.iter()
                    .filter_map(|r| r.slow.as_ref()?.memory.queued_bytes_stall_peak)
                    .collect(),
            )
        };
        let (gs, gc) = (growth(&stalled), growth(&control));
        let (ps, pc) = (p99_during(&stalled), p99_during(&control));
        let moved = ps / pc - 1.0;
        let name: String = format!("{} {}", LETTERS[ti.min(5)], t.describe())
            .chars()
            .take(29)
            .collect();
        let signed_mb = |v: f64| {
            if v.is_finite() {
                format!("{}{}", if v < 0.0 { "-" } else { "" }, mb(v.abs() as u64))
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            o,
            "  {name:<30}{:>14}{:>14}{:>16}{:>16}{:>16}{:>9.0}%",
            signed_mb(gs),
            signed_mb(gc),
            signed_mb(gs - gc),
            if ps.is_finite() {
                ns(ps as u64)
            } else {
                "-".into()
            },
            if pc.is_finite() {
                ns(pc as u64)
            } else {
                "-".into()
            },
            moved * 100.0
        );
        let (qs, qc) = (queued(&stalled), queued(&control));
        if qs.is_finite() {
            let _ = writeln!(
                o,
                "  {:<30}tickwire_queued_bytes, highest during the stall: {} stalled, {} control",
                "",
                signed_mb(qs),
                signed_mb(qc)
            );
        }
        rows.push(serde_json::json!({
            "target": t.describe(),
            "rounds": stalled.len().min(control.len()),
            "rss_growth_during_stall_bytes": crate::compare::finite(gs),
            "rss_growth_same_window_control_bytes": crate::compare::finite(gc),
            "stalled_clients_share_bytes": crate::compare::finite(gs - gc),
            "fast_p99_during_stall_ns": crate::compare::finite(ps),
            "fast_p99_same_window_control_ns": crate::compare::finite(pc),
            "fast_p99_moved": crate::compare::finite(moved),
            "queued_bytes_stall_peak": crate::compare::finite(qs),
            "queued_bytes_stall_peak_control": crate::compare::finite(qc),
        }));
    }
    (o, serde_json::json!({ "targets": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_sampled_once_each_at_or_after_their_time() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let mut s = StallSampler::new(Some((1_000, 2_000)), addr);
        s.observe(500, Some(10));
        assert_eq!(s.memory.rss_stall_start, None);
        s.observe(1_100, Some(20));
        s.observe(1_500, Some(25));
        s.observe(2_050, Some(40));
        s.observe(3_000, Some(90));
        assert_eq!(s.memory.rss_stall_start, Some(20));
        assert_eq!(s.memory.rss_stall_end, Some(40));
        assert_eq!(s.memory.growth(), Some(20.0));
        assert_eq!(s.memory.rss_stall_peak, Some(25));
        let mut none = StallSampler::new(None, addr);
        none.observe(5_000, Some(1));
        assert_eq!(none.memory.growth(), None);
    }
}
