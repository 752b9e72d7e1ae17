//! The resume scenarios end to end against a real `tickwire serve` on
//! loopback: reconnecting clients (`--reconnect-every`) lose nothing and
//! a server that cannot resume fails the run; stalled `catchup` clients
//! (`--stall-policy catchup`) lose nothing. Counts only, no timings.

mod support;

use std::time::Duration;

use support::{bench, tmpdir};

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Runs the bench with `args` plus an output directory; returns the exit
/// code, stdout and the first run of the JSON report.
fn run(name: &str, args: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let dir = tmpdir(name);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--quiet", "--out", dir.to_str().unwrap()]);
    let out = bench(&all, Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    (out.status.code(), stdout, doc["runs"][0].clone())
}

const RECONNECT_LOAD: [&str; 16] = [
    "--clients",
    "20",
    "--per-client",
    "5",
    "--symbols",
    "20",
    "--rate",
    "500",
    "--seconds",
    "3",
    "--warmup",
    "0.5",
    "--reconnect-every",
    "300ms",
    "--reconnect-share",
    "0.5",
];

/// Checks a reconnect run: every method used, every resume recovered,
/// nothing lost or duplicated.
fn assert_lossless_reconnects(name: &str, args: &[&str], clients: u64) {
    let (code, stdout, run) = run(name, args);
    assert_eq!(code, Some(0), "{stdout}");
    let r = &run["reconnect"];
    assert_eq!(n(&r["clients"]), clients, "{r}");
    // Every method was used, several times over the run.
    for m in ["by_close", "by_fin", "by_rst"] {
        assert!(n(&r[m]) >= 2, "{m}: {r}");
    }
    assert_eq!(n(&r["ticks_lost"]), 0, "{stdout}");
    assert_eq!(n(&r["duplicates"]), 0, "{stdout}");
    assert_eq!(n(&r["failed"]), 0, "{stdout}");
    assert_eq!(n(&r["not_recovered"]), 0, "{stdout}");
    let reconnects = n(&r["by_close"]) + n(&r["by_fin"]) + n(&r["by_rst"]);
    assert!(n(&r["resume_latency"]["count"]) > 0, "{r}");
    assert!(n(&r["resume_latency"]["count"]) <= reconnects, "{r}");
    let fast = &run["fast"];
    assert!(n(&fast["expected"]) > 0);
    assert_eq!(n(&fast["delivered"]), n(&fast["expected"]), "{fast}");
    assert!(stdout.contains("reconnect    0 lost"), "{stdout}");
}

#[test]
fn reconnecting_clients_resume_and_lose_nothing() {
    assert_lossless_reconnects("reconnect", &RECONNECT_LOAD, 10);
}

#[test]
fn reconnecting_star_clients_resume_and_lose_nothing() {
    let mut args = RECONNECT_LOAD.to_vec();
    args[1] = "6";
    args.push("--all-symbols");
    assert_lossless_reconnects("reconnect-star", &args, 3);
}

#[test]
fn a_server_that_cannot_resume_fails_the_reconnect_run() {
    let mut args = RECONNECT_LOAD.to_vec();
    args.push("--server-arg=--history-bytes=0");
    let (code, stdout, run) = run("reconnect-nohistory", &args);
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(run["complete"], false);
    let r = &run["reconnect"];
    assert!(n(&r["not_recovered"]) > 0, "{r}");
    assert!(stdout.contains("PROBLEM"), "{stdout}");
    // Whatever was missed is counted as lost, and shouted when there is any.
    let fast = &run["fast"];
    assert_eq!(
        n(&r["ticks_lost"]),
        n(&fast["missing"]) + n(&fast["gap_ticks"])
    );
    if n(&r["ticks_lost"]) > 0 {
        assert!(stdout.contains("LOST"), "{stdout}");
    }
}

/// A stalled client on `*` at 2,000 ticks/s, with a server byte cap far
/// below the backlog: `catchup` must get every tick, where `conflate`
/// (the control, so the test can fail) drops some.
fn stalled_run(name: &str, policy: &str) -> serde_json::Value {
    let (code, stdout, run) = run(
        name,
        &[
            "--clients",
            "20",
            "--rate",
            "2000",
            "--seconds",
            "4",
            "--warmup",
            "0.5",
            "--slow",
            "2",
            "--stall",
            "2",
            "--stall-at",
            "1",
            "--stall-policy",
            policy,
            "--drain",
            "10",
            "--server-arg=--client-buffer-bytes=16384",
        ],
    );
    assert_eq!(run["load"]["stall_policy"], policy);
    if policy == "catchup" {
        assert_eq!(code, Some(0), "{stdout}");
    }
    run["slow"]["group"].clone()
}

#[test]
fn stalled_catchup_clients_on_star_lose_nothing() {
    let slow = stalled_run("catchup", "catchup");
    assert!(n(&slow["expected"]) > 0, "{slow}");
    assert_eq!(n(&slow["delivered"]), n(&slow["expected"]), "{slow}");
    assert_eq!(n(&slow["gap_events"]), 0, "{slow}");
    assert_eq!(n(&slow["reorders"]), 0, "{slow}");
}

#[test]
fn stalled_conflate_clients_lose_ticks_the_control() {
    let slow = stalled_run("conflate", "conflate");
    assert!(n(&slow["gap_ticks"]) > 0, "{slow}");
}
