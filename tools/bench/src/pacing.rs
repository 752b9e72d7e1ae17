//! Keeping the publisher on its schedule: a raised scheduling priority for
//! its thread and absolute sleeps that end in a short spin.
//!
//! Why: latency "from intended send time" starts at the tick's scheduled
//! time, so every microsecond the publisher wakes late is charged to the
//! server. The runner's client threads share the publisher's CPU (pinned:
//! all of them on one core), and under the ordinary scheduler a busy
//! client thread keeps the waking publisher waiting for up to a time
//! slice (a few ms: "publisher ran up to 2.98 ms late (p99)" at S1
//! pinned). Under SCHED_FIFO the publisher runs the moment its timer
//! fires; the timer itself fires a little late on a virtual machine, which
//! the spin covers. The spin is bounded so that it never takes more than
//! an eighth of the CPU the clients need.

use serde::Serialize;

use crate::tickwire_lib::sys;

/// `--publisher-priority`: what the publisher thread asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherPriority {
    /// SCHED_FIFO (priority [`FIFO_PRIORITY`]); if refused, nice
    /// [`NICE`]; if that is refused too, the ordinary scheduler.
    Realtime,
    /// Nice [`NICE`] only (if refused, the ordinary scheduler).
    Nice,
    /// The ordinary scheduler, as the runner did before.
    Normal,
}

/// SCHED_FIFO priority of the publisher: low among real-time threads
/// (kernel threads at 50 and above still come first), above every
/// ordinary one.
pub const FIFO_PRIORITY: i32 = 10;

/// Nice value of the publisher when SCHED_FIFO is not asked for or not
/// permitted: a much larger share of its CPU than the client threads'.
pub const NICE: i32 = -10;

/// A spin is used only when the sleep before it is at least this many
/// times the spin: at most an eighth of the publisher's CPU is spinning.
const SPIN_SHARE: u64 = 8;

/// What the publisher thread got, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PacingReport {
    /// "SCHED_FIFO 10", "nice -10" or "normal".
    pub scheduling: String,
    /// Why it is not what was asked for (empty when it is).
    pub fallback: String,
    /// The spin at the end of each sleep, µs (0: none).
    pub spin_us: u64,
    /// Time the thread spent runnable but waiting for a CPU while it
    /// published (`/proc/thread-self/schedstat`), ms: lateness with little
    /// of it came from elsewhere (interrupts, the hypervisor, a blocked
    /// write).
    pub run_queue_wait_ms: Option<f64>,
    /// How long each write of a publish frame took, p99, ns: a server
    /// that stops reading, or the CPU's loopback receive work that the
    /// kernel runs inside the write, makes the publisher late through them.
    pub write_p99_ns: u64,
    /// The longest write, ns.
    pub write_max_ns: u64,
}

/// The calling thread's time waiting on a run queue so far, ns (the
/// second field of `/proc/thread-self/schedstat`).
pub fn run_queue_wait_ns() -> Option<u64> {
    crate::procstat::schedstat(std::path::Path::new("/proc/thread-self/schedstat"))
        .map(|(_, waited)| waited)
}

/// Raises the calling thread's priority as `want` asks, falling back
/// cleanly; returns what it got and why. `scheduled` is false for a
/// publisher with no schedule (a recording at max speed): it never sleeps,
/// so a real-time priority would starve the client threads, and it keeps
/// the ordinary scheduler.
pub fn raise(want: PublisherPriority, scheduled: bool) -> (String, String) {
    if !scheduled {
        return (
            "normal".into(),
            "a recording at max speed has no schedule to keep".into(),
        );
    }
    let mut why = Vec::new();
    if want == PublisherPriority::Realtime {
        match sys::set_thread_fifo(FIFO_PRIORITY) {
            Ok(()) => return (format!("SCHED_FIFO {FIFO_PRIORITY}"), String::new()),
            Err(e) => why.push(format!("SCHED_FIFO refused ({e})")),
        }
    }
    if want != PublisherPriority::Normal {
        match sys::set_thread_nice(NICE) {
            Ok(()) => return (format!("nice {NICE}"), why.join("; ")),
            Err(e) => why.push(format!("nice {NICE} refused ({e})")),
        }
    }
    ("normal".into(), why.join("; "))
}

/// Waits until CLOCK_MONOTONIC `deadline` (ns): an absolute sleep to
/// `spin_ns` before it, then a spin, when the wait is long enough for the
/// spin to be a small share of it; a plain absolute sleep otherwise.
pub fn wait_until(deadline: u64, spin_ns: u64) {
    let now = sys::monotonic_ns();
    if deadline <= now {
        return;
    }
    let gap = deadline - now;
    if spin_ns == 0 || gap < spin_ns.saturating_mul(SPIN_SHARE) {
        sys::sleep_until_monotonic(deadline);
        return;
    }
    sys::sleep_until_monotonic(deadline - spin_ns);
    while sys::monotonic_ns() < deadline {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_end_at_or_after_the_deadline_with_and_without_a_spin() {
        for spin in [0, 20_000, 10_000_000] {
            let deadline = sys::monotonic_ns() + 1_000_000;
            wait_until(deadline, spin);
            assert!(sys::monotonic_ns() >= deadline, "spin {spin}");
        }
        // A deadline already past returns at once.
        wait_until(0, 20_000);
    }

    #[test]
    fn run_queue_wait_is_read_and_never_goes_back() {
        let a = run_queue_wait_ns().expect("schedstat is readable");
        std::thread::yield_now();
        assert!(run_queue_wait_ns().unwrap() >= a);
    }

    #[test]
    fn the_priority_got_is_named_and_a_refusal_says_why() {
        let got = std::thread::spawn(|| raise(PublisherPriority::Realtime, true))
            .join()
            .unwrap();
        assert!(
            got.0.starts_with("SCHED_FIFO") || !got.1.is_empty(),
            "{got:?}"
        );
        let normal = std::thread::spawn(|| raise(PublisherPriority::Normal, true))
            .join()
            .unwrap();
        assert_eq!(normal, ("normal".to_owned(), String::new()));
        let unscheduled = std::thread::spawn(|| raise(PublisherPriority::Realtime, false))
            .join()
            .unwrap();
        assert_eq!(unscheduled.0, "normal");
        assert!(unscheduled.1.contains("max speed"));
    }
}
