//! CPU and memory samples of a run: taken when publishing starts and when
//! the drain ends, their difference is what the run cost.

use std::time::Instant;

use crate::clients::Live;
use crate::procstat;

/// CPU seconds used so far, at one instant.
pub(crate) struct CpuSample {
    /// The whole machine: what else ran shows in the difference.
    pub system: Option<procstat::SystemCpu>,
    /// This process, all threads.
    pub runner: f64,
    /// Each client thread: the busiest says whether the runner kept up.
    pub threads: Vec<f64>,
    /// Each of the target's processes (`None`: not visible to us).
    pub server: Vec<Option<f64>>,
    pub at: Instant,
}

impl CpuSample {
    /// The target's CPU seconds, summed; `None` if a process was not seen.
    pub(crate) fn server_total(&self) -> Option<f64> {
        if self.server.is_empty() {
            return None;
        }
        self.server.iter().copied().sum()
    }
}

/// The target's RSS, summed over its processes.
pub(crate) fn total_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    Some(pids.iter().filter_map(|&p| procstat::process_rss(p)).sum())
}

/// CPU seconds so far of the machine, this process, its client threads and
/// the target's processes `pids`.
pub(crate) fn sample_cpu(live: &Live, pids: &[u32]) -> CpuSample {
    let tids = live.tids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    CpuSample {
        system: procstat::system_cpu(),
        runner: procstat::process_cpu(std::process::id()).unwrap_or(0.0),
        threads: tids
            .iter()
            .map(|&t| procstat::thread_cpu(t).unwrap_or(0.0))
            .collect(),
        server: pids.iter().map(|&p| procstat::process_cpu(p)).collect(),
        at: Instant::now(),
    }
}
