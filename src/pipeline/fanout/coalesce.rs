//! The fan-out's coalescing window: while a worker is busy, its passes
//! (deliver a ring batch, then write to every client that got something)
//! start at least a window apart, so each write carries more ticks.
//!
//! Why: on loopback a write costs ~9 µs all in, whatever it carries, so a
//! worker that writes once per client per pass is write-bound from ~100 k
//! deliveries/s per core. Busy, its pass cycle settles where the writes of
//! one pass fill the cycle: every core-second goes to writes of ~1.5 ticks.
//! Making passes start a window `W` apart lets each client's ticks pile up
//! for `W` and leaves the rest of the core idle; latency is bounded by
//! `W` plus one pass instead of by a queue.
//!
//! The window opens only when the worker is busy: its thread ran (CPU
//! time, `sys::thread_cpu_time`) for at least `busy` of a measuring period
//! of [`PERIOD`]. At light load the thread idles most of the time, the
//! window stays closed and a lone tick is written as soon as it is read.
//! CPU time, not wall time minus idle: a worker starved of its core by
//! other processes is runnable but not running, and holding its passes
//! back would only hand more of the core to them. Opened, the window
//! starts at the smoothed pass length / `busy`, then grows by a quarter
//! each period the thread is still busier than `busy` (up to `max_window`)
//! and shrinks by a quarter each period it is under 0.8 × `busy`; it
//! closes when a period's share falls under half of `busy` (hysteresis: no
//! flapping at the threshold). The thread's whole CPU time is the input,
//! not only the passes': writes made by blocked clients' writer tasks cost
//! the same core. A full ring batch is never held (a backlog is delivered
//! at once), and only the fan-out pass waits: control replies, writer
//! tasks (blocked clients, catch-up slices) and eviction deadlines run as
//! before.

use std::time::Duration;

use tokio::time::Instant;

/// How long passes are measured before the window opens or closes: long
/// enough that one slow pass (a burst of bar updates, a big snapshot) at
/// light load cannot open it, short enough to follow a change of load.
const PERIOD: Duration = Duration::from_millis(50);

/// Weight of the newest pass in the smoothed pass length (1/4): the window
/// follows a change of load within a few passes.
const PASS_WEIGHT: f64 = 0.25;

/// `--coalesce-max-window` and `--coalesce-busy`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoalesceConfig {
    /// Upper bound of the window; zero turns coalescing off.
    pub max_window: Duration,
    /// Share of wall time spent in fan-out passes at which the window
    /// opens, and which it then aims for (0 < busy ≤ 1).
    pub busy: f64,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_window: Duration::from_millis(10),
            // 0.9, not lower: at 0.75 the window opened at 80–100 k
            // deliveries/s on one core, where the worker still kept up,
            // and raised p50 from ~1 ms to 4–7 ms (benches/README.md,
            // "Quiet re-run, stop 5"); at 0.9 it opens near saturation,
            // where it still takes S1 from 1.8 to 2.4 deliveries per write.
            busy: 0.9,
        }
    }
}

impl CoalesceConfig {
    /// Checks the bounds, saying which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.busy > 0.0 && self.busy <= 1.0) {
            return Err(format!(
                "--coalesce-busy must be above 0 and at most 1, got {}",
                self.busy
            ));
        }
        if self.max_window > Duration::from_secs(1) {
            return Err(format!(
                "--coalesce-max-window must be at most 1s, got {:?}",
                self.max_window
            ));
        }
        Ok(())
    }
}

/// What a finished pass changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Opened,
    Closed,
}

/// Smallest window: below the runtime timer's 1 ms tick a hold is a
/// rounding, and a window this small would batch nothing anyway.
const MIN_WINDOW: Duration = Duration::from_micros(250);

/// One worker's window controller. Pure arithmetic on the times it is
/// given, so its decisions are testable without a clock.
#[derive(Debug)]
pub(crate) struct Coalescer {
    config: CoalesceConfig,
    /// Start of the measuring period under way.
    period_start: Option<Instant>,
    /// The thread's CPU time when the period started.
    period_cpu: Duration,
    /// Smoothed pass length, seconds: the window's size when it opens.
    pass_secs: f64,
    /// When the last pass started: the next starts a window after it.
    last_start: Option<Instant>,
    /// The current window; zero while closed.
    window: Duration,
}

impl Coalescer {
    pub(crate) fn new(config: CoalesceConfig) -> Coalescer {
        Coalescer {
            config,
            period_start: None,
            period_cpu: Duration::ZERO,
            pass_secs: 0.0,
            last_start: None,
            window: Duration::ZERO,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.window.is_zero()
    }

    /// The current window (zero while closed).
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// When the next pass may start, if the window asks it to wait.
    pub(crate) fn hold_until(&self) -> Option<Instant> {
        if self.window.is_zero() {
            return None;
        }
        self.last_start.map(|s| s + self.window)
    }

    /// Records a pass that ran from `start` to `end`, and resizes, opens or
    /// closes the window at the end of each measuring period, where it
    /// reads the thread's CPU time so far (`cpu`: one system call per
    /// period, none per pass).
    pub(crate) fn pass_done(
        &mut self,
        start: Instant,
        end: Instant,
        cpu: impl FnOnce() -> Duration,
    ) -> Change {
        if self.config.max_window.is_zero() {
            return Change::None;
        }
        let took = end.saturating_duration_since(start);
        self.last_start = Some(start);
        self.pass_secs += PASS_WEIGHT * (took.as_secs_f64() - self.pass_secs);
        let Some(period_start) = self.period_start else {
            (self.period_start, self.period_cpu) = (Some(start), cpu());
            return Change::None;
        };
        let elapsed = end.saturating_duration_since(period_start);
        if elapsed < PERIOD {
            return Change::None;
        }
        let cpu = cpu();
        let busy = cpu.saturating_sub(self.period_cpu).as_secs_f64() / elapsed.as_secs_f64();
        (self.period_start, self.period_cpu) = (Some(end), cpu);
        let target = self.config.busy;
        let max = self.config.max_window.max(MIN_WINDOW);
        if !self.is_open() {
            if busy < target {
                return Change::None;
            }
            let want = Duration::from_secs_f64(self.pass_secs / target);
            self.window = want.clamp(MIN_WINDOW, max);
            return Change::Opened;
        }
        if busy < target / 2.0 {
            self.window = Duration::ZERO;
            return Change::Closed;
        }
        if busy > target {
            self.window = self.window.mul_f64(1.25).min(max);
        } else if busy < 0.8 * target {
            self.window = self.window.div_f64(1.25).max(MIN_WINDOW);
        }
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, us: u64) -> Instant {
        start + Duration::from_micros(us)
    }

    /// Runs passes of `pass_us` every `every_us` (never before the window
    /// allows) for `ms` milliseconds from `*t`, the thread running only
    /// in passes (`cpu` counts them), and returns the changes seen.
    fn run(
        c: &mut Coalescer,
        t: &mut Instant,
        cpu: &mut Duration,
        pass_us: u64,
        every_us: u64,
        ms: u64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let end = at(*t, ms * 1000);
        while *t < end {
            let done = at(*t, pass_us);
            *cpu += done - *t;
            let ch = c.pass_done(*t, done, || *cpu);
            if ch != Change::None {
                changes.push(ch);
            }
            let next = at(*t, every_us.max(pass_us));
            *t = c.hold_until().map_or(next, |h| h.max(next));
        }
        changes
    }

    #[test]
    fn light_load_never_opens_the_window() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let (mut t, mut cpu) = (Instant::now(), Duration::ZERO);
        // 100 µs passes every 500 µs (a tick to ten clients at 2,000/s),
        // with one 5 ms pass (a burst) in the middle.
        assert!(run(&mut c, &mut t, &mut cpu, 100, 500, 200).is_empty());
        cpu += Duration::from_millis(5);
        c.pass_done(t, at(t, 5000), || cpu);
        t = at(t, 5500);
        assert!(run(&mut c, &mut t, &mut cpu, 100, 500, 200).is_empty());
        assert_eq!(c.hold_until(), None);
    }

    #[test]
    fn a_busy_worker_opens_a_bounded_window_and_closes_it_when_load_falls() {
        let config = CoalesceConfig {
            max_window: Duration::from_millis(4),
            busy: 0.75,
        };
        let mut c = Coalescer::new(config);
        let (mut t, mut cpu) = (Instant::now(), Duration::ZERO);
        // Back-to-back 1 ms passes: a worker that never idles opens at
        // 1 / 0.75 ms.
        assert_eq!(
            run(&mut c, &mut t, &mut cpu, 1000, 0, 60),
            vec![Change::Opened]
        );
        let w = c.window().as_secs_f64();
        assert!((w - 0.001 / 0.75).abs() < 1e-4, "window {w}");
        // Passes of 6 ms: still busier than the target, the window grows
        // to its bound and stays there.
        assert!(run(&mut c, &mut t, &mut cpu, 6000, 0, 1000).is_empty());
        assert_eq!(c.window(), config.max_window);
        // Passes of 2 ms in a 4 ms window: a 50% share, under 0.8 × 0.75,
        // so it shrinks, until the share is back near the target.
        assert!(run(&mut c, &mut t, &mut cpu, 2000, 0, 1000).is_empty());
        let w = c.window();
        assert!(
            w < Duration::from_micros(3300) && w >= Duration::from_millis(2),
            "window {w:?}"
        );
        // Light load again: closed within a couple of periods.
        assert_eq!(
            run(&mut c, &mut t, &mut cpu, 100, 500, 200),
            vec![Change::Closed]
        );
        assert_eq!(c.hold_until(), None);
    }

    #[test]
    fn off_when_the_bound_is_zero() {
        let mut c = Coalescer::new(CoalesceConfig {
            max_window: Duration::ZERO,
            busy: 0.75,
        });
        let (mut t, mut cpu) = (Instant::now(), Duration::ZERO);
        assert!(run(&mut c, &mut t, &mut cpu, 3000, 0, 200).is_empty());
        assert!(!c.is_open());
    }

    #[test]
    fn bad_bounds_are_refused() {
        for busy in [0.0, -1.0, 1.5, f64::NAN] {
            let c = CoalesceConfig {
                busy,
                ..CoalesceConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("--coalesce-busy"));
        }
        let c = CoalesceConfig {
            max_window: Duration::from_secs(2),
            ..CoalesceConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("--coalesce-max-window"));
        assert!(CoalesceConfig::default().validate().is_ok());
    }
}
