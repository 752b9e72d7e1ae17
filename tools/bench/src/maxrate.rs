//! `--find-max-rate LOW..HIGH`: the highest tick rate at which each target
//! delivers every tick to its fast clients with p99 from intended send time
//! under `--p99-bound` (S2), found by a ladder and bisection with several
//! alternating rounds per rate, and the ratio between targets with the
//! range their brackets allow.
//!
//! A `--sweep` with one round per rate could not answer this on a shared
//! machine: p99 near the bound moves by factors from run to run, so each
//! server passed at some rates and failed at higher and lower ones. Here a
//! rate is judged on all its rounds ([`search::judge`]: delivery in every
//! round, latency on the median round), and the answer is a bracket
//! (highest passing, lowest failing), not a point.

mod search;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use self::search::{RoundFigures, Search, judge, ratio};
use crate::args::{BenchArgs, Load};
use crate::compare::LETTERS;
use crate::pinning::Pinning;
use crate::plan::{Plan, PlanInput};
use crate::publisher::Source;
use crate::report::{RunData, ns, thousands};
use crate::run::{self, RunSpec};
use crate::target::Target;
use crate::{BenchError, output, watchdog};

/// `--find-max-rate`: the rates searched, ticks/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateRange {
    /// The ladder's first rung.
    pub low: f64,
    /// Its last: a target passing here is reported "at or above" it.
    pub high: f64,
}

/// Parses `LOW..HIGH` (ticks/s), e.g. `200..20000`.
pub fn parse_range(s: &str) -> Result<RateRange, String> {
    let bad = || format!("`{s}`: write the rates to search as LOW..HIGH ticks/s, e.g. 200..20000");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (low, high) = (
        a.trim().parse::<f64>().map_err(|_| bad())?,
        b.trim().parse::<f64>().map_err(|_| bad())?,
    );
    if !(low >= 1.0 && high.is_finite() && high > low) {
        return Err(format!(
            "`{s}`: LOW must be at least 1 tick/s and HIGH above LOW"
        ));
    }
    Ok(RateRange { low, high })
}

/// What the search needs from `run_all`'s setup.
pub(crate) struct Setup<'a> {
    /// The flags (load, `--p99-bound`, `--rate-steps`, outputs).
    pub args: &'a BenchArgs,
    /// `--find-max-rate`.
    pub range: RateRange,
    /// The `--compare` targets (or the one target), in letter order.
    pub targets: &'a [Target],
    /// Already applied to the runner; each run pins the server.
    pub pinning: &'a Pinning,
    /// Runs per target and rate.
    pub rounds: usize,
    /// The symbols published (synthetic names).
    pub symbols: Vec<String>,
    /// The channel mask (bit 0 trade, bit 1 quote).
    pub channels: u8,
}

/// Seconds one run takes besides publishing, as measured here: about
/// half a second per thousand clients to connect, a second to start,
/// drain (it ends once everything expected has arrived) and stop.
fn overhead_seconds(args: &BenchArgs) -> f64 {
    1.0 + args.clients as f64 / 2000.0
}

/// Runs the search and prints and writes its report. Returns whether every
/// run completed (a failed run is a failing rate, not an error).
pub(crate) fn search(setup: Setup) -> Result<bool, BenchError> {
    let args = setup.args;
    let bound_ns = args.p99_bound.as_nanos() as u64;
    let k = setup.targets.len();
    let mut s = Search::new(setup.range.low, setup.range.high, args.rate_steps, k);
    let most = s.max_steps() * setup.rounds * k;
    let per_run = args.seconds + overhead_seconds(args);
    println!(
        "searching {}..{} ticks/s for the highest rate with every tick delivered and p99 from intended < {}: ladder {:?}, then {} bisection steps; {} targets × {} rounds per rate; at most {most} runs, about {:.0} min (the ladder stops early for targets that fail)",
        setup.range.low,
        setup.range.high,
        ns(bound_ns),
        s.ladder(),
        args.rate_steps,
        k,
        setup.rounds,
        most as f64 * per_run / 60.0
    );
    let budget = args
        .timeout
        .unwrap_or(most as f64 * (args.connect_timeout + args.seconds + args.drain + 40.0) + 30.0);
    watchdog::start(Duration::from_secs_f64(budget));
    let plan = Arc::new(Plan::new(PlanInput {
        symbols: setup.symbols.clone(),
        channels: setup.channels,
        clients: args.clients,
        per_client: args.per_client,
        all_symbols: args.all_symbols,
        slow: args.slow,
        seed: args.seed,
    })?);
    if setup
        .targets
        .iter()
        .any(|t| t.protocol() == crate::binance::Protocol::Binance)
    {
        crate::binance::check_plan(&plan).map_err(BenchError::Usage)?;
    }
    let started = SystemTime::now();
    let mut runs: Vec<RunData> = Vec::new();
    let mut all_complete = true;
    loop {
        let batch = s.next_batch();
        if batch.is_empty() {
            break;
        }
        let mut figures: Vec<Vec<RoundFigures>> = vec![Vec::new(); batch.len()];
        for round in 1..=setup.rounds {
            for (bi, &(ti, rate)) in batch.iter().enumerate() {
                let load = Load {
                    clients: args.clients,
                    rate,
                    point: Some(("rate".into(), rate)),
                };
                let t = &setup.targets[ti];
                let label = format!(
                    "{}:{} rate={rate} r{round}",
                    LETTERS[ti.min(LETTERS.len() - 1)],
                    t.short()
                );
                let data = run::run_once(&RunSpec {
                    args,
                    pinning: setup.pinning,
                    target_index: ti,
                    target: t,
                    plan: &plan,
                    source: &Source::Synthetic { rate },
                    load: &load,
                    round,
                    label: &label,
                    stall_control: false,
                })?;
                let f = figures_of(&data, round);
                println!("{}", run_line(&label, &f, bound_ns));
                all_complete &= data.report.complete;
                figures[bi].push(f);
                runs.push(data);
            }
        }
        for (&(ti, rate), f) in batch.iter().zip(figures) {
            let r = judge(rate, f, bound_ns);
            println!(
                "  {}: {} ticks/s {}",
                setup.targets[ti].describe(),
                thousands(rate as u64),
                if r.passes {
                    "passes".to_owned()
                } else {
                    format!("fails: {}", r.why)
                }
            );
            s.record(ti, r);
        }
    }
    let (text, json) = summary(&setup, &s, bound_ns);
    println!("{text}");
    output::write_outputs(
        args,
        &runs,
        setup.targets,
        None,
        Some(("max_rate", json)),
        started,
    )?;
    Ok(all_complete)
}

/// The figures of one run the verdict needs.
fn figures_of(data: &RunData, round: usize) -> RoundFigures {
    let r = &data.report;
    RoundFigures {
        round,
        complete: r.complete,
        missing: r.fast.missing,
        gap_ticks: r.fast.gap_ticks,
        reorders: r.fast.reorders,
        p50_intended_ns: r.latency_intended.p50_ns,
        p99_intended_ns: r.latency_intended.p99_ns,
        timed: r.latency_intended.count,
        publisher_late_p99_ns: r.publish.lateness_p99_ns,
        publisher_waited_ms: r.publish.pacing.run_queue_wait_ms,
        other_cores: r.runner.other_processes_cores,
    }
}

/// One line per run instead of the full table (report.json has it all).
fn run_line(label: &str, f: &RoundFigures, bound_ns: u64) -> String {
    format!(
        "── {label}: p50 / p99 from intended {} / {} ({} the bound) · missing {} · skipped {} · publisher late p99 {} (waited for a CPU {}) · other processes {:.2} cores{}",
        ns(f.p50_intended_ns),
        ns(f.p99_intended_ns),
        if f.p99_intended_ns < bound_ns {
            "under"
        } else {
            "over"
        },
        thousands(f.missing),
        thousands(f.gap_ticks),
        ns(f.publisher_late_p99_ns),
        f.publisher_waited_ms
            .map_or("?".into(), |w| format!("{w:.1} ms")),
        f.other_cores,
        if f.complete { "" } else { " [PARTIAL]" }
    )
}

/// The closing report: each target's bracket, the ratios with their range,
/// and every rate tried with its rounds' spread.
fn summary(setup: &Setup, s: &Search, bound_ns: u64) -> (String, serde_json::Value) {
    let mut o = String::new();
    let k = setup.targets.len();
    let rate = |r: Option<f64>| r.map_or("-".to_owned(), |v| thousands(v as u64));
    let _ = writeln!(
        o,
        "highest rate with every tick delivered to fast clients and p99 from intended < {} ({} rounds per rate: a rate passes when every round delivered every tick and the median round's p99 is under the bound)",
        ns(bound_ns),
        setup.rounds
    );
    let _ = writeln!(
        o,
        "  {:<28}{:>18}{:>18}  the maximum lies in",
        "target", "highest passing", "lowest failing"
    );
    let mut targets_json = Vec::new();
    for (ti, t) in s.targets.iter().enumerate() {
        let name = format!(
            "{} {}",
            LETTERS[ti.min(LETTERS.len() - 1)],
            setup.targets[ti].describe()
        );
        let bracket = match (t.highest_pass, t.lowest_fail) {
            (None, _) => format!("below {} (the lowest rate failed)", rate(Some(s.low))),
            (Some(p), None) => format!("at or above {} (the top of the range)", rate(Some(p))),
            (Some(p), Some(f)) if p < f => format!("[{}, {})", rate(Some(p)), rate(Some(f))),
            (Some(p), Some(f)) => format!(
                "unclear: passed at {} above a failure at {} (noise larger than the step)",
                rate(Some(p)),
                rate(Some(f))
            ),
        };
        let short: String = name.chars().take(27).collect();
        let _ = writeln!(
            o,
            "  {short:<28}{:>18}{:>18}  {bracket}",
            rate(t.highest_pass),
            rate(t.lowest_fail)
        );
        targets_json.push(serde_json::json!({
            "target": setup.targets[ti].describe(),
            "highest_passing": t.highest_pass,
            "lowest_failing": t.lowest_fail,
            "inconsistent": t.inconsistent,
            "results": t.results,
        }));
    }
    // Two targets: A/B, as --compare does; more: each over A.
    let pairs: Vec<(usize, usize)> = if k == 2 {
        vec![(0, 1)]
    } else {
        (1..k).map(|i| (i, 0)).collect()
    };
    let mut ratios = Vec::new();
    for (x, y) in pairs {
        let r = ratio(&s.targets[x], &s.targets[y]);
        let name = format!("{}/{}", LETTERS[x], LETTERS[y]);
        let line = match r.ratio {
            None => "no ratio: a target passed at no rate".to_owned(),
            Some(v) => format!(
                "{v:.2} of the highest passing rates; the brackets allow {} to {}",
                r.at_least.map_or("?".into(), |a| format!("{a:.2}")),
                r.at_most
                    .map_or("no upper bound".into(), |a| format!("{a:.2}"))
            ),
        };
        let _ = writeln!(o, "  ratio {name}: {line}");
        ratios.push(serde_json::json!({ "ratio": name, "range": r }));
    }
    let _ = writeln!(
        o,
        "  per rate: target, ticks/s, verdict, p99 from intended median [lowest – highest] (rounds under the bound), p50 median, missing (most in a round), publisher late p99 (most), other processes (most)"
    );
    for (ti, t) in s.targets.iter().enumerate() {
        let mut results: Vec<_> = t.results.iter().collect();
        results.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        for r in results {
            let most = |f: fn(&RoundFigures) -> u64| r.rounds.iter().map(f).max().unwrap_or(0);
            let p50 =
                crate::compare::median(r.rounds.iter().map(|f| f.p50_intended_ns as f64).collect());
            let _ = writeln!(
                o,
                "    {} {:>9}  {:<5} {} [{} – {}] ({}/{})  p50 {}  missing {}  late {}  others {:.2}",
                LETTERS[ti.min(LETTERS.len() - 1)],
                thousands(r.rate as u64),
                if r.passes { "pass" } else { "FAIL" },
                ns(r.median_p99_ns as u64),
                ns(r.min_p99_ns),
                ns(r.max_p99_ns),
                r.rounds_under_bound,
                r.rounds.len(),
                ns(p50 as u64),
                thousands(most(|f| f.missing)),
                ns(most(|f| f.publisher_late_p99_ns)),
                r.rounds.iter().map(|f| f.other_cores).fold(0.0, f64::max),
            );
        }
    }
    let json = serde_json::json!({
        "range": { "low": s.low, "high": s.high },
        "p99_bound_ns": bound_ns,
        "rounds_per_rate": setup.rounds,
        "rule": "a rate passes when every round delivered every tick to fast clients (none missing, skipped or out of order, run complete) and the median round's p99 from intended send time is under the bound",
        "targets": targets_json,
        "ratios": ratios,
    });
    (o, json)
}
