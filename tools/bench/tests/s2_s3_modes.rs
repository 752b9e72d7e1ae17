//! The S2 and S3 modes end to end (`--find-max-rate`, `--stall-control`)
//! and the publisher's pacing report: real binaries, tickwire servers on
//! loopback, short bounded runs. No figure is asserted against a time;
//! the reports are checked for structure and for agreeing with themselves
//! (a rate reported as passing delivered every tick in every round, the
//! stalled share is the difference of the two growths, …).

use std::time::Duration;

mod support;

use serde_json::Value;
use support::{bench, tmpdir};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn report(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// Every run's publisher says how it was scheduled, and why when it did
/// not get a real-time priority.
fn check_pacing(doc: &Value) {
    for run in doc["runs"].as_array().unwrap() {
        let p = &run["publish"]["pacing"];
        let got = p["scheduling"].as_str().unwrap();
        assert!(
            got.starts_with("SCHED_FIFO") || got.starts_with("nice") || got == "normal",
            "{p}"
        );
        if !got.starts_with("SCHED_FIFO") {
            assert!(!p["fallback"].as_str().unwrap().is_empty(), "{p}");
        }
        assert_eq!(n(&p["spin_us"]), 20);
        assert!(p["run_queue_wait_ms"].as_f64().unwrap() >= 0.0, "{p}");
        assert!(n(&p["write_max_ns"]) >= n(&p["write_p99_ns"]), "{p}");
        assert!(n(&p["write_p99_ns"]) > 0, "{p}");
    }
}

/// With a bound no loopback run can miss (60 s), both targets pass every
/// rung of the ladder: the answer is "at or above the top", every rate
/// reported as passing delivered every tick in every round, and the
/// verdicts agree with the runs' own reports.
#[test]
fn find_max_rate_brackets_agree_with_the_runs() {
    let dir = tmpdir("maxrate");
    let out = bench(
        &[
            "--compare",
            "self",
            "self --workers=1",
            "--find-max-rate",
            "100..200",
            "--rate-steps",
            "1",
            "--rounds",
            "2",
            "--p99-bound",
            "60s",
            "--clients",
            "10",
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--drain",
            "2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("at most 12 runs, about"), "{stdout}");
    assert!(stdout.contains("ratio A/B"), "{stdout}");
    let doc = report(&dir);
    check_pacing(&doc);
    let m = &doc["max_rate"];
    assert_eq!(n(&m["rounds_per_rate"]), 2);
    assert_eq!(n(&m["p99_bound_ns"]), 60_000_000_000);
    let runs = doc["runs"].as_array().unwrap();
    // Ladder 100, 200 for both targets, 2 rounds each; nothing to bisect.
    assert_eq!(runs.len(), 8);
    for (ti, t) in m["targets"].as_array().unwrap().iter().enumerate() {
        let results = t["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{t}");
        for r in results {
            let rate = r["rate"].as_f64().unwrap();
            let rounds = r["rounds"].as_array().unwrap();
            assert_eq!(rounds.len(), 2);
            // The verdict's figures are the runs' own.
            for f in rounds {
                let run = runs
                    .iter()
                    .find(|run| {
                        n(&run["target_index"]) == ti as u64
                            && run["point"][1].as_f64() == Some(rate)
                            && run["round"] == f["round"]
                    })
                    .unwrap_or_else(|| panic!("no run for {f}"));
                assert_eq!(f["missing"], run["fast"]["missing"]);
                assert_eq!(f["p99_intended_ns"], run["latency_intended"]["p99_ns"]);
            }
            let delivered = rounds
                .iter()
                .all(|f| f["complete"] == true && n(&f["missing"]) == 0 && n(&f["gap_ticks"]) == 0);
            assert_eq!(r["delivered_every_tick"].as_bool().unwrap(), delivered);
            // A rate that lost a tick is never a pass.
            if r["passes"] == true {
                assert!(delivered, "{r}");
                assert!(r["median_p99_ns"].as_f64().unwrap() < 60e9);
            }
        }
        // Loopback at 200 ticks/s to 10 clients loses nothing: both pass
        // the top of the range and have no failing rate.
        assert_eq!(t["highest_passing"].as_f64(), Some(200.0), "{t}");
        assert!(t["lowest_failing"].is_null(), "{t}");
    }
    let ratio = &m["ratios"][0];
    assert_eq!(ratio["ratio"], "A/B");
    assert_eq!(ratio["range"]["ratio"].as_f64(), Some(1.0));
    assert!(ratio["range"]["at_most"].is_null());
}

/// A bound no run can meet (1 µs): the lowest rate fails, the ladder stops
/// there, nothing is reported as passing and no ratio is made up.
#[test]
fn find_max_rate_with_an_unreachable_bound_passes_nothing() {
    let dir = tmpdir("maxrate-none");
    let out = bench(
        &[
            "--find-max-rate",
            "100..400",
            "--rounds",
            "1",
            "--p99-bound",
            "0.001ms",
            "--clients",
            "10",
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("below 100 (the lowest rate failed)"),
        "{stdout}"
    );
    let doc = report(&dir);
    let t = &doc["max_rate"]["targets"][0];
    assert!(t["highest_passing"].is_null(), "{t}");
    assert_eq!(t["lowest_failing"].as_f64(), Some(100.0));
    let results = t["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["passes"], false);
    assert!(
        results[0]["why"]
            .as_str()
            .unwrap()
            .starts_with("median p99"),
        "{t}"
    );
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn find_max_rate_refuses_what_it_cannot_search() {
    for args in [
        &["--find-max-rate", "100"][..],
        &["--find-max-rate", "500..100"],
        &["--find-max-rate", "0..100"],
        &["--find-max-rate", "100..200", "--sweep", "rate=1,2"],
        &["--find-max-rate", "100..200", "--p99-bound", "0"],
        &["--stall-control"],
    ] {
        let out = bench(args, Duration::from_secs(20));
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

/// `--stall-control`: one stalled and one control run per round; the
/// control's slow clients read throughout (they get every tick), both
/// runs sample the server's memory at the stall's edges, and the stalled
/// share is the difference of the two growths.
#[test]
fn stall_control_runs_both_and_separates_the_stalled_share() {
    let dir = tmpdir("stall-control");
    let out = bench(
        &[
            "--clients",
            "20",
            "--slow",
            "2",
            "--stall",
            "1",
            "--stall-at",
            "0.5",
            "--seconds",
            "2.5",
            "--warmup",
            "0.2",
            "--rate",
            "200",
            "--stall-control",
            "--drain",
            "3",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stalled clients' share"), "{stdout}");
    assert!(stdout.contains("stall RSS"), "{stdout}");
    let doc = report(&dir);
    check_pacing(&doc);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // Round 1: the stalled run first.
    assert_eq!(runs[0]["stall_control"], false);
    assert_eq!(runs[1]["stall_control"], true);
    let mut growth = Vec::new();
    for run in runs {
        let slow = &run["slow"];
        let m = &slow["memory"];
        let (a, b) = (n(&m["rss_stall_start"]), n(&m["rss_stall_end"]));
        assert!(a > 1_000_000 && b > 1_000_000, "{m}");
        assert!(n(&m["rss_after_drain"]) > 1_000_000, "{m}");
        // A tickwire server answers /metrics: its queue is reported.
        assert!(m["queued_bytes_stall_end"].as_f64().is_some(), "{m}");
        assert!(m["queued_bytes_stall_peak"].as_f64().is_some(), "{m}");
        assert!(n(&m["rss_stall_peak"]) >= a.min(b), "{m}");
        growth.push(b as f64 - a as f64);
        assert!(n(&slow["fast_during"]["count"]) > 0, "{slow}");
    }
    // The control's slow clients never stopped reading: nothing skipped.
    let control_slow = &runs[1]["slow"]["group"];
    assert_eq!(n(&control_slow["gap_ticks"]), 0, "{control_slow}");
    assert_eq!(control_slow["delivered"], control_slow["expected"]);
    let row = &doc["stall_control"]["targets"][0];
    assert_eq!(n(&row["rounds"]), 1);
    let share = row["stalled_clients_share_bytes"].as_f64().unwrap();
    assert!((share - (growth[0] - growth[1])).abs() < 1.0, "{row}");
    assert_eq!(
        row["fast_p99_during_stall_ns"].as_f64(),
        runs[0]["slow"]["fast_during"]["p99_ns"].as_f64()
    );
    // The comparison tables leave control runs out.
    assert!(doc["comparison"].is_null());
}
