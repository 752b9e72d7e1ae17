//! A source's feed clock: the time bars close by.
//!
//! **One clock per source**, not one per server: a publisher connection,
//! the recording `serve` plays, or (for ticks with no source of their own:
//! a journal being restored, tests) the ingest's default clock. A symbol's
//! bars follow the clock of the source that fed it its latest trade. So a
//! replay of a 2020 recording beside one of 2024 (or beside the embedded
//! feed, whose `ts` read as now) closes each symbol's bars by its own
//! recording's time: one global clock closed the 2020 bars as soon as a
//! 2024 tick passed their end, and the 2020 trades that followed in the
//! same interval then changed no bar.
//!
//! Why not one clock per symbol: a quiet symbol's bar should close as soon
//! as its source's other symbols pass its end (a replay at 100× would
//! otherwise close it only by the wall clock, 100 times late in feed time).
//!
//! **A silent source's time** is extrapolated: its newest `ts` plus the
//! wall time since, less a second of grace (a trade stamped just before
//! the end may still be on its way), times the source's *pace*: feed time
//! per wall second, at most 1. A live feed, a publisher and a recording
//! played at speed ≥ 1 (or with `ts` rebased to now) have pace 1 (a faster
//! replay only closes a silent symbol's bar later than it could, never
//! before a paused or lagging source has caught up). A recording `serve`
//! plays at 0.5× has pace 0.5, so its quiet symbols' bars do not close
//! before the recording reaches their end. The pace is given, not
//! measured: a publisher's `ts` may lag or stand still for reasons that
//! say nothing of its future pace, and a measured one then stopped bars
//! from closing at all.
//!
//! **Time moves forward**, except when a source's `ts` steps back by more
//! than a second (a looped recording starting its next lap, a publisher
//! that restarted): its time then counts again from there, so the new
//! lap's bars are not closed at once by the old lap's end. Smaller steps
//! back (a recording made by `record` keeps arrival order) are ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall time given to a silent source before its extrapolated time moves.
pub const SILENT_SOURCE_GRACE_NS: u64 = 1_000_000_000;

/// A step back in `ts` larger than this restarts a source's time.
const RESTART_STEP_NS: u64 = 1_000_000_000;

/// A source's clock. Cloning shares it (a symbol holds its source's).
#[derive(Clone)]
pub struct FeedClock(Arc<ClockState>);

/// The clock's readings. Atomics only because a clock is shared between
/// threads; every access is under the sequencer lock, hence `Relaxed`.
struct ClockState {
    /// The newest `ts` since the source (re)started: its time.
    newest_ts: AtomicU64,
    /// The wall clock when `newest_ts` last rose, to extrapolate silence
    /// (0: no tick yet).
    newest_wall: AtomicU64,
    /// Feed time per wall time while the source is silent, in (0, 1].
    pace: f64,
}

impl Default for FeedClock {
    fn default() -> Self {
        Self::with_pace(1.0)
    }
}

impl std::fmt::Debug for FeedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedClock")
            .field("newest_ts", &self.0.newest_ts.load(Ordering::Relaxed))
            .finish()
    }
}

impl FeedClock {
    /// A new live source's clock (pace 1), before its first tick.
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock of a source whose time moves `pace` times as fast as the
    /// wall clock (a recording's replay speed); extrapolated at most at
    /// wall pace.
    pub fn with_pace(pace: f64) -> Self {
        let pace = if pace.is_finite() && pace > 0.0 {
            pace.min(1.0)
        } else {
            1.0
        };
        FeedClock(Arc::new(ClockState {
            newest_ts: AtomicU64::new(0),
            newest_wall: AtomicU64::new(0),
            pace,
        }))
    }

    /// Whether `other` is this very clock (not merely equal readings).
    pub fn is(&self, other: &FeedClock) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Notes a tick of the source: `ts` its event time, `wall` when it was
    /// ingested.
    pub fn saw(&self, ts: u64, wall: u64) {
        let s = &*self.0;
        let newest = s.newest_ts.load(Ordering::Relaxed);
        let first = s.newest_wall.load(Ordering::Relaxed) == 0;
        if first || ts > newest || newest - ts > RESTART_STEP_NS {
            s.newest_ts.store(ts, Ordering::Relaxed);
            s.newest_wall.store(wall, Ordering::Relaxed);
        }
    }

    /// The source's time at wall clock `wall` (0 before its first tick).
    pub fn now(&self, wall: u64) -> u64 {
        let s = &*self.0;
        let newest = s.newest_ts.load(Ordering::Relaxed);
        let newest_wall = s.newest_wall.load(Ordering::Relaxed);
        if newest_wall == 0 {
            return 0;
        }
        let silent = wall
            .saturating_sub(newest_wall)
            .saturating_sub(SILENT_SOURCE_GRACE_NS);
        newest.saturating_add((silent as f64 * s.pace) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    /// Some wall time, in the ns since the epoch a real clock reads.
    const WALL: u64 = 1_800_000_000 * S;
    /// Some feed time, years before `WALL` (a recording).
    const TS: u64 = 1_582_329_600 * S;

    #[test]
    fn a_ticking_source_reads_its_newest_ts() {
        let c = FeedClock::new();
        assert_eq!(c.now(WALL), 0, "no tick yet");
        c.saw(TS, WALL);
        c.saw(TS + 5 * S, WALL + 5 * S);
        c.saw(TS + 5 * S - S / 2, WALL + 5 * S); // a small step back is ignored
        assert_eq!(c.now(WALL + 5 * S), TS + 5 * S);
    }

    #[test]
    fn a_silent_live_source_moves_with_the_wall_clock_after_the_grace() {
        let c = FeedClock::new();
        c.saw(TS, WALL);
        c.saw(TS + 10 * S, WALL + 10 * S);
        assert_eq!(c.now(WALL + 10 * S + S / 2), TS + 10 * S, "within grace");
        assert_eq!(c.now(WALL + 14 * S), TS + 13 * S);
    }

    #[test]
    fn a_slow_replay_extrapolates_at_its_own_pace_a_fast_one_at_wall_pace() {
        let slow = FeedClock::with_pace(0.5);
        slow.saw(TS, WALL);
        slow.saw(TS + 10 * S, WALL + 20 * S);
        assert_eq!(slow.now(WALL + 20 * S + 5 * S), TS + 12 * S);
        let fast = FeedClock::with_pace(10.0);
        fast.saw(TS, WALL);
        fast.saw(TS + 100 * S, WALL + 10 * S);
        assert_eq!(fast.now(WALL + 10 * S + 5 * S), TS + 104 * S);
        // A publisher whose `ts` stands still is still extrapolated.
        let stuck = FeedClock::new();
        stuck.saw(TS, WALL);
        stuck.saw(TS, WALL + 30 * S);
        assert_eq!(stuck.now(WALL + 3 * S), TS + 2 * S);
    }

    #[test]
    fn a_large_step_back_restarts_the_sources_time() {
        let c = FeedClock::new();
        c.saw(TS, WALL);
        c.saw(TS + 3600 * S, WALL + 3600 * S);
        // A looped recording's next lap.
        c.saw(TS, WALL + 3601 * S);
        assert_eq!(c.now(WALL + 3601 * S), TS);
        c.saw(TS + 2 * S, WALL + 3603 * S);
        assert_eq!(c.now(WALL + 3603 * S), TS + 2 * S);
    }

    #[test]
    fn clocks_of_two_sources_are_independent() {
        let (old, new) = (FeedClock::new(), FeedClock::new());
        old.saw(TS, WALL);
        new.saw(TS + 4 * 365 * 86_400 * S, WALL);
        assert_eq!(old.now(WALL), TS);
        assert!(old.is(&old.clone()) && !old.is(&new));
    }
}
