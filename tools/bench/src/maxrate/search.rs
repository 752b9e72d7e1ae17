//! The search itself, apart from any socket: which rates each target runs
//! at next, and whether a rate passes. A ladder (doubling from the low
//! end) finds a bracket for every target, then geometric bisection narrows
//! each target's bracket on its own.

use serde::Serialize;

use crate::compare::median;

/// One run's figures that the verdict needs.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RoundFigures {
    /// Which round (1-based), to find the run in report.json.
    pub round: usize,
    /// The run completed (no problem: the server did not die, the
    /// publisher was not refused, no connection was lost, …).
    pub complete: bool,
    /// Ticks expected by fast clients that never arrived.
    pub missing: u64,
    /// Ticks fast clients' `seq` numbers say were skipped, and ticks out of
    /// order: both are a tick not delivered as published.
    pub gap_ticks: u64,
    pub reorders: u64,
    /// Fast clients' p50 and p99 from intended send time, ns.
    pub p50_intended_ns: u64,
    pub p99_intended_ns: u64,
    /// Ticks timed: 0 means nothing arrived after the warm-up.
    pub timed: u64,
    /// The publisher's own lateness (p99), ns: how much of the p99 is not
    /// the server's.
    pub publisher_late_p99_ns: u64,
    /// How long the publisher waited for a CPU over the run, ms (`None`:
    /// not known): little of it means its lateness came from elsewhere.
    pub publisher_waited_ms: Option<f64>,
    /// Cores other processes kept busy: how noisy the round was.
    pub other_cores: f64,
}

impl RoundFigures {
    /// Every tick published reached every fast client it was for, in order.
    pub(crate) fn delivered_every_tick(&self) -> bool {
        self.complete
            && self.missing == 0
            && self.gap_ticks == 0
            && self.reorders == 0
            && self.timed > 0
    }
}

/// A target at one rate, over its rounds, and the verdict.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RateResult {
    /// Ticks/s.
    pub rate: f64,
    /// Each round's figures, in round order.
    pub rounds: Vec<RoundFigures>,
    /// Every round delivered every tick (see [`RoundFigures::delivered_every_tick`]).
    pub delivered_every_tick: bool,
    /// The rounds' p99 from intended send time: median, lowest, highest.
    pub median_p99_ns: f64,
    pub min_p99_ns: u64,
    pub max_p99_ns: u64,
    /// Rounds whose own p99 was under the bound.
    pub rounds_under_bound: usize,
    pub passes: bool,
    /// Why it failed, in words (empty when it passed).
    pub why: String,
}

/// The verdict on a rate: it passes when **every** round delivered every
/// tick (a lost tick is never noise: one is a failure of the server) and
/// the **median** of the rounds' p99 is under `bound_ns` (p99 moves by
/// factors from round to round on a shared machine, and one round that
/// another process disturbed must not decide; the report shows how many
/// rounds were under the bound and the spread).
pub(crate) fn judge(rate: f64, rounds: Vec<RoundFigures>, bound_ns: u64) -> RateResult {
    let delivered = !rounds.is_empty() && rounds.iter().all(RoundFigures::delivered_every_tick);
    let p99s: Vec<u64> = rounds.iter().map(|r| r.p99_intended_ns).collect();
    let median_p99 = median(p99s.iter().map(|&v| v as f64).collect());
    let under = p99s.iter().filter(|&&p| p < bound_ns).count();
    let fast_enough = median_p99 < bound_ns as f64;
    let why = match (delivered, fast_enough) {
        (true, true) => String::new(),
        (false, _) => {
            let bad = rounds
                .iter()
                .filter(|r| !r.delivered_every_tick())
                .map(|r| {
                    format!(
                        "round {}: {} missing, {} skipped, {} out of order{}",
                        r.round,
                        r.missing,
                        r.gap_ticks,
                        r.reorders,
                        if r.complete { "" } else { ", partial run" }
                    )
                })
                .collect::<Vec<_>>();
            format!("not every tick delivered ({})", bad.join("; "))
        }
        (true, false) => format!("median p99 {:.2} ms", median_p99 / 1e6),
    };
    RateResult {
        rate,
        delivered_every_tick: delivered,
        median_p99_ns: median_p99,
        min_p99_ns: p99s.iter().copied().min().unwrap_or(0),
        max_p99_ns: p99s.iter().copied().max().unwrap_or(0),
        rounds_under_bound: under,
        passes: delivered && fast_enough,
        why,
        rounds,
    }
}

/// One target's progress: what it was run at and the bracket so far.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TargetSearch {
    /// Every rate tried, in the order tried.
    pub results: Vec<RateResult>,
    /// The highest rate that passed (`None`: none did).
    pub highest_pass: Option<f64>,
    /// The lowest rate that failed (`None`: none did).
    pub lowest_fail: Option<f64>,
    /// Rates that passed above a rate that failed: the noise the bracket
    /// hides (the search assumes one threshold; this says where it did not
    /// hold).
    pub inconsistent: Vec<f64>,
}

impl TargetSearch {
    fn record(&mut self, r: RateResult) {
        if r.passes {
            if self.lowest_fail.is_some_and(|f| r.rate > f) {
                self.inconsistent.push(r.rate);
            }
            if self.highest_pass.is_none_or(|p| r.rate > p) {
                self.highest_pass = Some(r.rate);
            }
        } else if self.lowest_fail.is_none_or(|f| r.rate < f) {
            self.lowest_fail = Some(r.rate);
        }
        self.results.push(r);
    }
}

/// The whole search: the ladder's rungs, then bisection steps.
pub(crate) struct Search {
    /// The ladder's first rung and its last (`--find-max-rate`).
    pub low: f64,
    pub high: f64,
    /// Bisection steps after the ladder.
    pub steps: u32,
    pub targets: Vec<TargetSearch>,
    /// The next ladder rung (an index into [`Search::ladder`]).
    rung: usize,
    /// Bisection steps taken.
    taken: u32,
}

/// Stop bisecting when the bracket is this narrow (high/low): the round
/// to round noise is larger than 3%.
const FINEST: f64 = 1.03;

impl Search {
    pub(crate) fn new(low: f64, high: f64, steps: u32, targets: usize) -> Search {
        Search {
            low,
            high,
            steps,
            targets: vec![TargetSearch::default(); targets],
            rung: 0,
            taken: 0,
        }
    }

    /// The ladder: `low`, doubling, and `high` as the last rung.
    pub(crate) fn ladder(&self) -> Vec<f64> {
        let mut v = Vec::new();
        let mut r = self.low;
        while r < self.high {
            v.push(r.round());
            r *= 2.0;
        }
        v.push(self.high.round());
        v.dedup();
        v
    }

    /// Most runs the search can take per round (for the time estimate).
    pub(crate) fn max_steps(&self) -> usize {
        self.ladder().len() + self.steps as usize
    }

    /// The next (target, rate) pairs to run, each for every round; empty
    /// when the search is over. Every pair of a batch runs in the same
    /// rounds, alternating, so drift on the machine hits all alike.
    pub(crate) fn next_batch(&mut self) -> Vec<(usize, f64)> {
        let ladder = self.ladder();
        // Ladder: targets that have not failed climb together.
        while self.rung < ladder.len() {
            let rate = ladder[self.rung];
            self.rung += 1;
            let climbing: Vec<(usize, f64)> = (0..self.targets.len())
                .filter(|&t| self.targets[t].lowest_fail.is_none())
                .map(|t| (t, rate))
                .collect();
            if !climbing.is_empty() {
                return climbing;
            }
        }
        // Bisection: each target between its bracket's ends.
        if self.taken >= self.steps {
            return Vec::new();
        }
        self.taken += 1;
        (0..self.targets.len())
            .filter_map(|t| {
                let s = &self.targets[t];
                let (lo, hi) = (s.highest_pass?, s.lowest_fail?);
                let mid = (lo * hi).sqrt().round();
                (hi / lo > FINEST && mid > lo && mid < hi).then_some((t, mid))
            })
            .collect()
    }

    pub(crate) fn record(&mut self, target: usize, r: RateResult) {
        self.targets[target].record(r);
    }
}

/// The ratio of two targets' highest passing rates, and the range the
/// brackets allow: X's maximum lies in `[pass, fail)`, so X/Y lies between
/// `x.pass / y.fail` and `x.fail / y.pass` (unbounded where a target
/// passed at the top of the range).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RatioRange {
    /// Of the highest passing rates (`None`: one target passed nothing).
    pub ratio: Option<f64>,
    /// The lowest the brackets allow (`None`: the other target never failed).
    pub at_least: Option<f64>,
    /// The highest (`None`: this target never failed, so no upper bound).
    pub at_most: Option<f64>,
}

pub(crate) fn ratio(x: &TargetSearch, y: &TargetSearch) -> RatioRange {
    let (Some(xp), Some(yp)) = (x.highest_pass, y.highest_pass) else {
        return RatioRange {
            ratio: None,
            at_least: None,
            at_most: None,
        };
    };
    RatioRange {
        ratio: Some(xp / yp),
        at_least: y.lowest_fail.map(|yf| xp / yf),
        at_most: x.lowest_fail.map(|xf| xf / yp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(round: usize, missing: u64, p99_ms: f64) -> RoundFigures {
        RoundFigures {
            round,
            complete: true,
            missing,
            gap_ticks: 0,
            reorders: 0,
            p50_intended_ns: 100_000,
            p99_intended_ns: (p99_ms * 1e6) as u64,
            timed: 1000,
            publisher_late_p99_ns: 10_000,
            publisher_waited_ms: Some(0.1),
            other_cores: 0.0,
        }
    }

    #[test]
    fn a_rate_that_loses_a_tick_never_passes_however_fast() {
        let r = judge(
            1000.0,
            vec![round(1, 0, 0.1), round(2, 1, 0.1), round(3, 0, 0.1)],
            10_000_000,
        );
        assert!(!r.passes && !r.delivered_every_tick);
        assert!(r.why.contains("round 2: 1 missing"), "{}", r.why);
        let mut partial = round(1, 0, 0.1);
        partial.complete = false;
        assert!(!judge(1000.0, vec![partial], 10_000_000).passes);
        let mut nothing_timed = round(1, 0, 0.1);
        nothing_timed.timed = 0;
        assert!(!judge(1000.0, vec![nothing_timed], 10_000_000).passes);
        assert!(!judge(1000.0, Vec::new(), 10_000_000).passes);
    }

    #[test]
    fn latency_is_judged_on_the_median_round() {
        // One disturbed round does not fail the rate…
        let r = judge(
            1000.0,
            vec![round(1, 0, 4.0), round(2, 0, 60.0), round(3, 0, 5.0)],
            10_000_000,
        );
        assert!(r.passes, "{r:?}");
        assert_eq!(r.rounds_under_bound, 2);
        assert_eq!((r.min_p99_ns, r.max_p99_ns), (4_000_000, 60_000_000));
        // …two do.
        let r = judge(
            1000.0,
            vec![round(1, 0, 4.0), round(2, 0, 60.0), round(3, 0, 12.0)],
            10_000_000,
        );
        assert!(!r.passes && r.delivered_every_tick);
        assert!(r.why.starts_with("median p99 12.00 ms"), "{}", r.why);
    }

    /// Drives the search against targets with a known threshold: every
    /// reported passing rate is below it, every failing one above, and
    /// the bracket narrows around it.
    #[test]
    fn the_search_brackets_each_targets_threshold() {
        let thresholds = [700.0, 2_600.0, 50.0, 1e9];
        let mut s = Search::new(100.0, 6_400.0, 4, thresholds.len());
        assert_eq!(
            s.ladder(),
            vec![100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0]
        );
        let mut batches = 0;
        loop {
            let batch = s.next_batch();
            if batch.is_empty() {
                break;
            }
            batches += 1;
            assert!(batches <= s.max_steps(), "the search must end");
            for (t, rate) in batch {
                let p99 = if rate < thresholds[t] { 1.0 } else { 20.0 };
                s.record(t, judge(rate, vec![round(1, 0, p99)], 10_000_000));
            }
        }
        for (t, &th) in thresholds.iter().enumerate() {
            let ts = &s.targets[t];
            for r in &ts.results {
                assert_eq!(r.passes, r.rate < th, "target {t} at {}", r.rate);
            }
            assert!(ts.highest_pass.is_none_or(|p| p < th));
            assert!(ts.lowest_fail.is_none_or(|f| f >= th));
            assert!(ts.inconsistent.is_empty());
        }
        // 700: ladder 400 pass / 800 fail, then bisected to within ~9%.
        let a = &s.targets[0];
        let (lo, hi) = (a.highest_pass.unwrap(), a.lowest_fail.unwrap());
        assert!(hi / lo < 1.1, "{lo}..{hi}");
        // 50: fails at the bottom, nothing passes, nothing to bisect.
        assert_eq!(s.targets[2].highest_pass, None);
        assert_eq!(s.targets[2].results.len(), 1);
        // Never fails: passes at the top, no failing rate.
        assert_eq!(s.targets[3].highest_pass, Some(6_400.0));
        assert_eq!(s.targets[3].lowest_fail, None);
        let r = ratio(&s.targets[1], &s.targets[0]);
        let x = r.ratio.unwrap();
        assert!(r.at_least.unwrap() <= x && x <= r.at_most.unwrap());
        assert!(ratio(&s.targets[2], &s.targets[0]).ratio.is_none());
        assert!(ratio(&s.targets[3], &s.targets[0]).at_most.is_none());
    }

    #[test]
    fn a_pass_above_a_failure_is_kept_as_inconsistent() {
        let mut t = TargetSearch::default();
        t.record(judge(400.0, vec![round(1, 0, 20.0)], 10_000_000));
        t.record(judge(800.0, vec![round(1, 0, 1.0)], 10_000_000));
        assert_eq!(t.inconsistent, vec![800.0]);
        assert_eq!((t.highest_pass, t.lowest_fail), (Some(800.0), Some(400.0)));
    }
}
