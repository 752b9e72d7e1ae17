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
//! time, `sys::thread_cpu_time`) for at least a share of a measuring
//! period of [`PERIOD`]. At light load the thread idles most of the time,
//! the window stays closed and a lone tick is written as soon as it is
//! read. CPU time, not wall time minus idle: a worker starved of its core
//! by other processes is runnable but not running, and holding its passes
//! back would only hand more of the core to them.
//!
//! Which share depends on whether holding pays. A client that receives
//! Poisson ticks at rate λ and is written once per window `W` gets
//! `x / (1 − e^−x)` ticks per write, `x = λW`: at λ = 100/s a 10 ms window
//! buys 1.6 ticks per write for up to 10 ms of latency, at λ = 200/s 2.3,
//! at λ = 1,000/s 10. So each period the worker also counts its live
//! deliveries and the distinct clients they reached; deliveries per client
//! over the period is that same formula at `W` = the period, which gives
//! λ (independent of the window itself, which is shorter than the
//! period). When the expected ticks per write at `--coalesce-max-window`
//! reach `--coalesce-min-yield`, holding pays and the window opens at
//! `--coalesce-paying-busy` (0.75) and aims for it; otherwise it opens
//! only at `--coalesce-busy` (0.9), a worker close to falling behind,
//! whatever λ. Opened, the window starts at the smoothed pass length /
//! the target share and grows by a quarter each period the thread is
//! busier than the target (up to `max_window`). Where holding pays it
//! shrinks by a quarter each period under 0.8 × the target and closes when
//! a period's share falls under half the target. Where it does not pay the
//! window is only a guard for a worker close to falling behind: it halves
//! each period the thread is under `--coalesce-busy` and closes under
//! 0.8 × that, at its smallest, or when holding stops paying (so a window
//! opened by a burst, a wave of subscriptions say, does not stay open for
//! the rest of the load). Hysteresis on the rate and the shares: no
//! flapping at a threshold. The thread's whole CPU time is the input, not only the
//! passes': writes made by blocked clients' writer tasks cost the same
//! core. A full ring batch is never held (a backlog is delivered at once),
//! and only the fan-out pass waits: control replies, writer tasks (blocked
//! clients, catch-up slices) and eviction deadlines run as before.

use std::time::Duration;

use tokio::time::Instant;

use super::reach::{Reach, client_rate, expected_yield};

/// How long passes are measured before the window opens or closes: long
/// enough that one slow pass (a burst of bar updates, a big snapshot) at
/// light load cannot open it, short enough to follow a change of load.
const PERIOD: Duration = Duration::from_millis(50);

/// Weight of the newest pass in the smoothed pass length (1/4): the window
/// follows a change of load within a few passes.
const PASS_WEIGHT: f64 = 0.25;

/// Once holding pays, it stops paying only under this share of
/// `min_yield`: a rate at the threshold does not flap the target.
const STOP_PAYING: f64 = 0.85;

/// Weight of the newest period in the smoothed client rate (1/4): one
/// period's count swings by a third either way on a loaded machine (a
/// starved publisher or worker moves ticks from one period to the next),
/// which unsmoothed opened and closed the window every few hundred ms.
const RATE_WEIGHT: f64 = 0.25;

/// `--coalesce-max-window`, `--coalesce-busy`, `--coalesce-paying-busy`
/// and `--coalesce-min-yield`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoalesceConfig {
    /// Upper bound of the window; zero turns coalescing off.
    pub max_window: Duration,
    /// Share of a core (the worker thread's CPU time) at which the window
    /// opens whatever the clients' rate, and which it aims for while
    /// holding does not pay (0 < busy ≤ 1).
    pub busy: f64,
    /// The lower share at which it opens when holding pays, and which it
    /// then aims for (0 < paying_busy ≤ busy).
    pub paying_busy: f64,
    /// Expected ticks per write at `max_window`, given the measured
    /// per-client rate, from which holding pays (≥ 1).
    pub min_yield: f64,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_window: Duration::from_millis(10),
            // 0.9 whatever the rate: at 0.75 the window opened at 80–100 k
            // deliveries/s on one core (λ 80–100/s), where the worker still
            // kept up, and raised p50 from ~1 ms to 4–7 ms for ~1.4 ticks
            // per write (benches/README.md, "Quiet re-run, stop 5").
            busy: 0.9,
            // 0.75 where holding pays: at S1 (λ = 200/s) it made 2.4 ticks
            // per write against 2.1 at 0.9, 0.92–0.94× the CPU per
            // delivery, p99 within the runs' noise (benches/README.md,
            // "Performance round 6").
            paying_busy: 0.75,
            // 2 ticks per write in at most 10 ms: λ ≥ 160/s. S1's 200/s
            // gives 2.3, λ 80–100/s gives 1.4–1.6 and stays out.
            min_yield: 2.0,
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
        if !(self.paying_busy > 0.0 && self.paying_busy <= self.busy) {
            return Err(format!(
                "--coalesce-paying-busy must be above 0 and at most --coalesce-busy ({}), got {}",
                self.busy, self.paying_busy
            ));
        }
        if !(self.min_yield >= 1.0 && self.min_yield.is_finite()) {
            return Err(format!(
                "--coalesce-min-yield must be a number of ticks per write of at least 1, got {}",
                self.min_yield
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

/// One worker's window controller. Pure arithmetic on the times and counts
/// it is given, so its decisions are testable without a clock.
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
    /// Ticks per second per client, smoothed over the last periods.
    rate: f64,
    /// Holding pays at that rate (with hysteresis): the target share is
    /// `paying_busy` rather than `busy`.
    pays: bool,
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
            rate: 0.0,
            pays: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.window.is_zero()
    }

    /// The current window (zero while closed).
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Whether holding pays at the clients' measured rate.
    pub(crate) fn pays(&self) -> bool {
        self.pays
    }

    /// Ticks per second per client reached, smoothed over the last periods.
    pub(crate) fn client_rate(&self) -> f64 {
        self.rate
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
    /// period, none per pass) and takes what the period delivered
    /// (`reach`, which starts the next period's count).
    pub(crate) fn pass_done(
        &mut self,
        start: Instant,
        end: Instant,
        cpu: impl FnOnce() -> Duration,
        reach: impl FnOnce() -> Reach,
    ) -> Change {
        if self.config.max_window.is_zero() {
            return Change::None;
        }
        let took = end.saturating_duration_since(start);
        self.last_start = Some(start);
        self.pass_secs += PASS_WEIGHT * (took.as_secs_f64() - self.pass_secs);
        let Some(period_start) = self.period_start else {
            (self.period_start, self.period_cpu) = (Some(end), cpu());
            reach();
            return Change::None;
        };
        let elapsed = end.saturating_duration_since(period_start);
        if elapsed < PERIOD {
            return Change::None;
        }
        let cpu = cpu();
        let secs = elapsed.as_secs_f64();
        let busy = cpu.saturating_sub(self.period_cpu).as_secs_f64() / secs;
        (self.period_start, self.period_cpu) = (Some(end), cpu);
        self.period_done(busy, client_rate(reach(), secs))
    }

    /// Acts on a finished period: the thread's share of a core and its
    /// clients' rate.
    fn period_done(&mut self, busy: f64, rate: f64) -> Change {
        let CoalesceConfig {
            max_window,
            busy: always,
            paying_busy,
            min_yield,
        } = self.config;
        let max = max_window.max(MIN_WINDOW);
        // The first rate measured is taken as it is.
        let weight = if self.rate == 0.0 { 1.0 } else { RATE_WEIGHT };
        self.rate += weight * (rate - self.rate);
        let at_max = expected_yield(self.rate * max.as_secs_f64());
        let paid = self.pays;
        let floor = if paid {
            STOP_PAYING * min_yield
        } else {
            min_yield
        };
        self.pays = at_max >= floor;
        // (A config built in code may skip `validate`: never aim higher
        // where holding pays.)
        let target = if self.pays {
            paying_busy.min(always)
        } else {
            always
        };
        if !self.is_open() {
            if busy < target {
                return Change::None;
            }
            let want = Duration::from_secs_f64(self.pass_secs / target);
            self.window = want.clamp(MIN_WINDOW, max);
            return Change::Opened;
        }
        if self.pays {
            // Holding pays: aim for the paying share, close only when the
            // worker is far under it.
            if busy < target / 2.0 {
                return self.close();
            }
            if busy > target {
                self.window = self.window.mul_f64(1.25).min(max);
            } else if busy < 0.8 * target {
                self.window = self.window.div_f64(1.25).max(MIN_WINDOW);
            }
            return Change::None;
        }
        // It does not pay: the window only keeps a worker at `busy` from
        // falling behind, as small as does that: halved each period under
        // `busy` (a burst of subscriptions opened it, say), closed when
        // clearly under, at its smallest and under, or held because it
        // paid and it no longer does.
        let stopped_paying = paid && paying_busy < always && busy < always;
        let at_min = self.window <= MIN_WINDOW;
        if stopped_paying || busy < 0.8 * target || (at_min && busy < target) {
            return self.close();
        }
        if busy > target {
            self.window = self.window.mul_f64(1.25).min(max);
        } else {
            self.window = (self.window / 2).max(MIN_WINDOW);
        }
        Change::None
    }

    fn close(&mut self) -> Change {
        self.window = Duration::ZERO;
        Change::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, us: u64) -> Instant {
        start + Duration::from_micros(us)
    }

    /// A worker on a synthetic clock: its thread runs only in passes, and
    /// each of its `CLIENTS` clients gets Poisson ticks at a given rate
    /// (the counts a period reports are their expected values).
    struct Sim {
        c: Coalescer,
        t: Instant,
        cpu: Duration,
        /// When the worker last handed over its period's counts.
        counted: Instant,
    }

    const CLIENTS: f64 = 1000.0;

    impl Sim {
        fn new(config: CoalesceConfig) -> Sim {
            let t = Instant::now();
            Sim {
                c: Coalescer::new(config),
                t,
                cpu: Duration::ZERO,
                counted: t,
            }
        }

        /// Runs passes of `pass_us` (0: as long as the window, at least
        /// 1 ms: a saturated worker) every `every_us` (never before the
        /// window allows) for `ms` milliseconds, the clients getting
        /// `rate` ticks/s each, and returns the changes seen.
        fn run(&mut self, pass_us: u64, every_us: u64, rate: f64, ms: u64) -> Vec<Change> {
            let mut changes = Vec::new();
            let end = at(self.t, ms * 1000);
            while self.t < end {
                let window = self.c.window().as_micros() as u64;
                let pass_us = if pass_us == 0 {
                    window.max(1000)
                } else {
                    pass_us
                };
                let done = at(self.t, pass_us);
                self.cpu += done - self.t;
                let (cpu, counted) = (self.cpu, &mut self.counted);
                let reach = || {
                    let x = rate * (done - *counted).as_secs_f64();
                    *counted = done;
                    Reach {
                        deliveries: (CLIENTS * x).round() as u64,
                        clients: (CLIENTS * -(-x).exp_m1()).round() as u64,
                    }
                };
                let ch = self.c.pass_done(self.t, done, || cpu, reach);
                if ch != Change::None {
                    changes.push(ch);
                }
                let next = at(self.t, every_us.max(pass_us));
                self.t = self.c.hold_until().map_or(next, |h| h.max(next));
            }
            changes
        }
    }

    #[test]
    fn light_load_never_opens_the_window() {
        let mut sim = Sim::new(CoalesceConfig::default());
        // 100 µs passes every 500 µs (a tick to ten clients at 2,000/s),
        // with one 5 ms pass (a burst) in the middle. The clients' rate
        // would pay (200/s), but the worker is far from busy.
        assert!(sim.run(100, 500, 200.0, 200).is_empty());
        sim.cpu += Duration::from_millis(5);
        let (t, cpu) = (sim.t, sim.cpu);
        sim.c.pass_done(t, at(t, 5000), || cpu, Reach::default);
        sim.t = at(t, 5500);
        assert!(sim.run(100, 500, 200.0, 200).is_empty());
        assert_eq!(sim.c.hold_until(), None);
    }

    #[test]
    fn stays_closed_where_holding_would_not_pay() {
        // A worker at 0.8 of its core whose clients get 80–100 ticks/s:
        // 10 ms would buy 1.4–1.6 ticks per write, under the 2 asked for.
        for rate in [80.0, 100.0] {
            let mut sim = Sim::new(CoalesceConfig::default());
            assert!(sim.run(800, 1000, rate, 2000).is_empty(), "{rate}/s");
            assert!(!sim.c.pays());
            let read = sim.c.client_rate();
            assert!((read / rate - 1.0).abs() < 0.02, "{rate}/s read as {read}");
            // A burst (1,000 clients subscribing) fills the core for a
            // period and opens the window, at its bound; back at 0.8 it
            // halves each period and closes within a few, rather than hold
            // ticks that do not pay for it.
            assert_eq!(sim.run(10_000, 0, rate, 60), vec![Change::Opened]);
            assert!(sim.c.window() >= Duration::from_millis(5));
            assert_eq!(sim.run(800, 1000, rate, 400), vec![Change::Closed]);
            assert!(sim.run(800, 1000, rate, 1000).is_empty());
        }
    }

    #[test]
    fn opens_below_busy_where_holding_pays() {
        // The same worker at 0.8, clients at 200 ticks/s: 10 ms buys 2.3.
        let mut sim = Sim::new(CoalesceConfig::default());
        assert_eq!(sim.run(800, 1000, 200.0, 200), vec![Change::Opened]);
        assert!(sim.c.pays());
        // Sized for the paying share, 0.75: the pass / 0.75 (and one step
        // more where rounding puts the share a hair over it).
        let w = sim.c.window().as_secs_f64();
        assert!(
            (0.0008 / 0.75..=0.0008 / 0.75 * 1.26).contains(&w),
            "window {w}"
        );
        assert!(sim.run(800, 1000, 200.0, 1000).is_empty());
        assert!(sim.c.hold_until().is_some());
    }

    #[test]
    fn a_saturated_worker_opens_whatever_the_rate_and_grows_to_the_bound() {
        for rate in [0.0, 50.0, 1000.0] {
            let mut sim = Sim::new(CoalesceConfig::default());
            // Back-to-back passes that grow with the window (more ticks
            // waiting each time, `run`'s 0): the thread never idles.
            assert_eq!(sim.run(1000, 0, rate, 60), vec![Change::Opened]);
            for _ in 0..40 {
                assert!(sim.run(0, 0, rate, 60).is_empty(), "{rate}/s");
            }
            assert_eq!(sim.c.window(), Duration::from_millis(10), "{rate}/s");
            assert_eq!(sim.c.pays(), rate >= 1000.0);
        }
    }

    #[test]
    fn paying_has_hysteresis_and_closes_when_it_stops_under_busy() {
        let mut sim = Sim::new(CoalesceConfig::default());
        assert_eq!(sim.run(800, 1000, 200.0, 200), vec![Change::Opened]);
        // One period at half the rate (a starved publisher) is smoothed
        // over: the window stays.
        assert!(sim.run(800, 1000, 100.0, 50).is_empty());
        assert!(sim.run(800, 1000, 200.0, 300).is_empty());
        assert!(sim.c.pays() && sim.c.is_open());
        // 150/s: 1.93 per write at 10 ms, under 2 but over 0.85 × 2: it
        // still pays, the window stays.
        assert!(sim.run(800, 1000, 150.0, 500).is_empty());
        assert!(sim.c.pays() && sim.c.is_open());
        // 100/s: 1.58, no longer pays (within a few periods: smoothed),
        // and the worker is under 0.9.
        assert_eq!(sim.run(800, 1000, 100.0, 500), vec![Change::Closed]);
        assert_eq!(sim.c.hold_until(), None);
        // Back at 150/s it does not open again: 1.93 is under 2.
        assert!(sim.run(800, 1000, 150.0, 500).is_empty());
        // A worker opened at 0.9 whose clients' rate does not pay stays
        // open while it is that busy, and closes once it is clearly not.
        let mut sim = Sim::new(CoalesceConfig::default());
        assert_eq!(sim.run(950, 1000, 50.0, 200), vec![Change::Opened]);
        assert!(sim.run(950, 1000, 50.0, 500).is_empty());
        assert!(sim.c.is_open());
        assert_eq!(sim.run(600, 1000, 50.0, 100), vec![Change::Closed]);
    }

    #[test]
    fn a_busy_worker_opens_a_bounded_window_and_closes_it_when_load_falls() {
        let config = CoalesceConfig {
            max_window: Duration::from_millis(4),
            busy: 0.75,
            paying_busy: 0.75,
            min_yield: 2.0,
        };
        let mut sim = Sim::new(config);
        // Clients at 1,000 ticks/s: holding pays, the window aims for 0.75.
        // Back-to-back 1 ms passes: a worker that never idles opens at
        // 1 / 0.75 ms.
        assert_eq!(sim.run(1000, 0, 1000.0, 60), vec![Change::Opened]);
        let w = sim.c.window().as_secs_f64();
        assert!((w - 0.001 / 0.75).abs() < 1e-4, "window {w}");
        // Passes of 6 ms: still busier than the target, the window grows
        // to its bound and stays there.
        assert!(sim.run(6000, 0, 1000.0, 1000).is_empty());
        assert_eq!(sim.c.window(), config.max_window);
        // Passes of 2 ms in a 4 ms window: a 50% share, under 0.8 × 0.75,
        // so it shrinks, until the share is back near the target.
        assert!(sim.run(2000, 0, 1000.0, 1000).is_empty());
        let w = sim.c.window();
        assert!(
            w < Duration::from_micros(3300) && w >= Duration::from_millis(2),
            "window {w:?}"
        );
        // Light load again: closed within a couple of periods.
        assert_eq!(sim.run(100, 500, 1000.0, 200), vec![Change::Closed]);
        assert_eq!(sim.c.hold_until(), None);
    }

    #[test]
    fn off_when_the_bound_is_zero() {
        let mut sim = Sim::new(CoalesceConfig {
            max_window: Duration::ZERO,
            ..CoalesceConfig::default()
        });
        assert!(sim.run(3000, 0, 1000.0, 200).is_empty());
        assert!(!sim.c.is_open());
    }

    #[test]
    fn bad_bounds_are_refused() {
        let bad = |c: CoalesceConfig, flag: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(flag), "{e}");
        };
        for busy in [0.0, -1.0, 1.5, f64::NAN] {
            let c = CoalesceConfig {
                busy,
                ..CoalesceConfig::default()
            };
            bad(c, "--coalesce-busy must");
        }
        for paying_busy in [0.0, 0.95, f64::NAN] {
            let c = CoalesceConfig {
                paying_busy,
                ..CoalesceConfig::default()
            };
            bad(c, "--coalesce-paying-busy");
        }
        for min_yield in [0.5, 0.0, f64::NAN, f64::INFINITY] {
            let c = CoalesceConfig {
                min_yield,
                ..CoalesceConfig::default()
            };
            bad(c, "--coalesce-min-yield");
        }
        let c = CoalesceConfig {
            max_window: Duration::from_secs(2),
            ..CoalesceConfig::default()
        };
        bad(c, "--coalesce-max-window");
        assert!(CoalesceConfig::default().validate().is_ok());
    }
}
