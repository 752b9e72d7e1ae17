//! `tickwire bench` end to end: the real binaries, a real server on
//! loopback, short bounded runs, and the report files checked for
//! consistency.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{RUNNER, bench, runner, start_server, tickwire, tmpdir, wait_bounded};

/// A small well-formedness check: one root `<svg>`, every tag closed in
/// order (no XML parser in the dependency tree).
fn assert_well_formed_svg(text: &str) {
    let body = text.trim_start_matches(|c: char| c.is_whitespace());
    let body = if body.starts_with("<?xml") {
        &body[body.find("?>").unwrap() + 2..]
    } else {
        body
    };
    assert!(
        body.trim_start().starts_with("<svg"),
        "root element is not <svg>"
    );
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            if stack.is_empty() {
                assert!(
                    rest[end + 1..].trim().is_empty(),
                    "content after the root element"
                );
            }
        } else if !tag.starts_with('!') && !tag.starts_with('?') {
            elements += 1;
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap();
            if !tag.ends_with('/') {
                stack.push(name.to_owned());
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert!(
        elements > 50,
        "only {elements} elements: not much of a plot"
    );
}

#[test]
fn short_run_against_a_spawned_server_reports_consistent_figures() {
    let dir = tmpdir("short");
    let out = bench(
        &[
            "--clients",
            "50",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--rate",
            "200",
            "--drain",
            "2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("p99.9") && stdout.contains("from intended"),
        "{stdout}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["complete"], true);
    let run = &doc["runs"][0];
    let fast = &run["fast"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert_eq!(n(&fast["clients"]), 50);
    let published = n(&run["publish"]["published"]);
    assert!((350..=410).contains(&published), "published {published}");
    assert!(n(&fast["expected"]) > 0);
    assert_eq!(
        n(&fast["delivered"]),
        n(&fast["expected"]),
        "fast clients missed ticks: {fast}"
    );
    assert_eq!(n(&fast["missing"]), 0);
    assert_eq!(n(&fast["gap_events"]), 0);
    assert_eq!(n(&fast["reorders"]), 0);
    assert_eq!(n(&run["parse_errors"]), 0);
    assert_eq!(n(&run["unexpected_ticks"]), 0);
    for key in ["latency", "latency_intended"] {
        let l = &run[key];
        let seq: Vec<u64> = [
            "min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns",
        ]
        .iter()
        .map(|k| n(&l[k]))
        .collect();
        assert!(
            seq.windows(2).all(|w| w[0] <= w[1]),
            "{key} percentiles out of order: {seq:?}"
        );
        assert!(seq[0] > 0 && seq[6] < 10_000_000_000, "{key}: {seq:?}");
        // Only ticks after the warm-up are timed.
        assert!(n(&l["count"]) > 0 && n(&l["count"]) <= n(&fast["delivered"]));
    }
    let server = &run["server_resources"];
    assert!(server["cpu_seconds"].as_f64().unwrap() >= 0.0);
    assert!(n(&server["rss_peak"]) > 1_000_000);
    assert!(run["runner"]["cpu_seconds"].as_f64().unwrap() > 0.0);

    assert_well_formed_svg(&std::fs::read_to_string(dir.join("latency.svg")).unwrap());
    let hlog = std::fs::read_to_string(dir.join("latency.hlog")).unwrap();
    assert!(
        hlog.contains("#[StartTime:") && hlog.contains("HISTF"),
        "{hlog}"
    );
}

#[test]
fn a_url_nobody_listens_on_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let out = bench(
        &["--url", &url, "--seconds", "1", "--quiet"],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("refused"),
        "{stderr}"
    );
}

/// A loopback server that answers every connection with `reply`.
fn fake_server(reply: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    port
}

#[test]
fn a_server_speaking_another_protocol_is_a_clear_error() {
    let port = fake_server(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    let out = bench(
        &[
            "--url",
            &format!("ws://127.0.0.1:{port}"),
            "--seconds",
            "1",
            "--quiet",
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("404 Not Found") && stderr.contains("instead of switching"),
        "{stderr}"
    );

    let port = fake_server(b"SSH-2.0-OpenSSH_9.2\r\n");
    let out = bench(
        &[
            "--url",
            &format!("ws://127.0.0.1:{port}"),
            "--seconds",
            "1",
            "--quiet",
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
}

#[test]
fn a_server_dying_mid_run_gives_a_partial_report() {
    let dir = tmpdir("dies");
    let (mut server, addr) = start_server(&dir, &[]);
    let url = format!("ws://{addr}");
    let child = runner()
        .args([
            "--url",
            &url,
            "--clients",
            "20",
            "--seconds",
            "5",
            "--warmup",
            "0",
            "--rate",
            "200",
        ])
        .args(["--quiet", "--out", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    server.kill().unwrap();
    server.wait().unwrap();
    let out = wait_bounded(child, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("PARTIAL"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["runs"][0]["complete"], false);
    assert!(!doc["runs"][0]["problems"].as_array().unwrap().is_empty());
}

#[test]
fn a_file_descriptor_limit_below_clients_is_a_clear_error() {
    tickwire();
    // The shell lowers the soft and hard limits to 512 (lowering is always
    // allowed), then becomes the runner.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"ulimit -n 512 && exec "$0" "$@""#, RUNNER])
        .args(["--clients", "5000", "--seconds", "1", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("file-descriptor limit is 512"), "{stderr}");
}

/// `--compare self binance:self`: the same load on the main endpoint and
/// on the Binance endpoint (raw `@trade`/`@bookTicker` streams), each
/// delivery counted and checked by trade id / `u`, trades timed from `E`.
#[test]
fn the_main_and_the_binance_endpoint_in_one_compare_run() {
    let dir = tmpdir("binance");
    let out = bench(
        &[
            "--compare",
            "self",
            "binance:self",
            "--rounds",
            "1",
            "--clients",
            "20",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--rate",
            "200",
            "--drain",
            "3",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Binance endpoint"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"));
    for run in runs {
        let fast = &run["fast"];
        assert!(n(&fast["expected"]) > 0, "{run}");
        assert_eq!(n(&fast["delivered"]), n(&fast["expected"]), "{run}");
        assert_eq!(n(&fast["gap_events"]), 0);
        assert_eq!(n(&fast["reorders"]), 0);
        assert_eq!(n(&run["parse_errors"]), 0);
        assert_eq!(n(&run["unexpected_ticks"]), 0);
        assert!(n(&run["latency"]["count"]) > 0, "trades are timed: {run}");
    }
}

#[test]
fn bad_flags_are_refused_before_anything_starts() {
    for args in [
        &["--seconds", "0"][..],
        &["--channels", "trades"],
        &["--per-client", "200", "--symbols", "100"],
        &["--sweep", "threads=1,2"],
        &["--url", "http://127.0.0.1:1"],
        &["--compare", "self", "nats:x"],
        &["--compare", "self", "nats:1000"],
        &["--publish-url", "ws://127.0.0.1:1"],
        &["--url", "pub:ws://127.0.0.1:1"],
        &["--protocol", "binance", "--url", "ws://127.0.0.1:1"],
        &["--protocol", "fix"],
        &["--compare", "self", "binance:nats:1"],
        &["--compare", "self", "binance:ws://127.0.0.1:1"],
        &["--protocol", "binance", "--all-symbols"],
        &[
            "--compare",
            "self",
            "self",
            "self",
            "self",
            "self",
            "self",
            "self",
        ],
    ] {
        let out = bench(args, Duration::from_secs(20));
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn a_url_list_spreads_clients_and_samples_each_process_once() {
    let dir = tmpdir("urls");
    let (mut server, addr) = start_server(&dir, &[]);
    let url = format!("ws://{addr}");
    // The same server three times: two subscriber URLs and the publisher's.
    let out = bench(
        &[
            "--url",
            &format!("{url},{url}"),
            "--publish-url",
            &url,
            "--clients",
            "10",
            "--seconds",
            "1",
            "--warmup",
            "0.2",
            "--rate",
            "100",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(run["subscribe_urls"].as_array().unwrap().len(), 2);
    assert_eq!(run["fast"]["missing"], 0, "{}", run["fast"]);
    assert_eq!(
        run["server_resources"]["pids"],
        serde_json::json!([server.id()]),
        "one process behind three URLs is sampled once"
    );
}

/// Whether nats-server is installed. When it is not, the caller skips its
/// test (printing why), unless TICKWIRE_REQUIRE_NATS=1 makes that a failure.
fn nats_server_available() -> bool {
    let found = std::env::var_os("TICKWIRE_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.join("nats-server")),
        )
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .any(|p| p.is_file());
    if !found {
        assert!(
            std::env::var("TICKWIRE_REQUIRE_NATS").as_deref() != Ok("1"),
            "TICKWIRE_REQUIRE_NATS=1 but nats-server is not installed (nor TICKWIRE_NATS_SERVER set)"
        );
        eprintln!(
            "skipped: nats-server is not installed (set TICKWIRE_REQUIRE_NATS=1 to fail instead)"
        );
    }
    found
}

/// Processes whose command line mentions this runner's temp files (every
/// child it starts has its pid in an argument: addr file or NATS store).
fn children_of_runner(runner: u32) -> Vec<String> {
    let tag = format!("tickwire-bench-{runner}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&tag).then_some(cmd)
        })
        .collect()
}

fn runner_temp_dirs(runner: u32) -> Vec<PathBuf> {
    let tag = format!("tickwire-bench-{runner}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&tag))
        })
        .collect()
}

#[test]
fn standalone_and_nats_deployments_in_one_run() {
    if !nats_server_available() {
        return;
    }
    let dir = tmpdir("nats");
    let child = runner()
        .args(["--compare", "self", "nats:1", "nats:2"])
        .args(["--clients", "20", "--seconds", "2", "--warmup", "0.5"])
        .args(["--rate", "200", "--drain", "3", "--rounds", "1", "--quiet"])
        .args(["--out", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runner = child.id();
    let out = wait_bounded(child, Duration::from_secs(150));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("B/A") && stdout.contains("C/A"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["complete"], true);
    assert_eq!(
        doc["comparison"]["targets"],
        serde_json::json!(["tickwire", "nats:1", "nats:2"])
    );
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"));
    let expected = n(&runs[0]["fast"]["expected"]);
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(n(&run["target_index"]), i as u64);
        let fast = &run["fast"];
        // The same load everywhere (the publisher keeps a schedule, so a
        // loaded machine can shift a tick or two across the window's
        // edges), and every tick arrives: the runner waited for the
        // gateways' bus subscriptions before publishing.
        let this = n(&fast["expected"]);
        assert!(
            this.abs_diff(expected) * 50 <= expected,
            "run {i}: {this} ticks expected against run 0's {expected}"
        );
        assert_eq!(n(&fast["delivered"]), this, "run {i}: {fast}");
        assert_eq!(n(&fast["gap_events"]), 0, "run {i}");
        assert_eq!(n(&fast["reorders"]), 0, "run {i}");
        assert_eq!(n(&run["unexpected_ticks"]), 0, "run {i}");
        assert!(n(&run["latency"]["count"]) > 0, "run {i}");
    }
    for (run, gateways) in [(&runs[1], 1), (&runs[2], 2)] {
        let subs = run["subscribe_urls"].as_array().unwrap();
        assert_eq!(subs.len(), gateways);
        assert!(
            !subs.contains(&run["url"]),
            "subscribers on the ingest node"
        );
        let res = &run["server_resources"];
        let roles: Vec<&str> = res["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap())
            .collect();
        let mut want = vec!["nats-server", "ingest"];
        let names: Vec<String> = (1..=gateways).map(|g| format!("gateway-{g}")).collect();
        want.extend(names.iter().map(String::as_str));
        assert_eq!(roles, want);
        let sum: f64 = res["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["cpu_seconds"].as_f64().unwrap())
            .sum();
        assert!((sum - res["cpu_seconds"].as_f64().unwrap()).abs() < 1e-6);
        for pid in res["pids"].as_array().unwrap() {
            assert!(
                !Path::new(&format!("/proc/{}", n(pid))).exists(),
                "process {pid} outlived the run"
            );
        }
    }
    assert!(children_of_runner(runner).is_empty());
    assert!(runner_temp_dirs(runner).is_empty());
}

#[test]
fn the_hard_timeout_stops_a_whole_deployment() {
    if !nats_server_available() {
        return;
    }
    let out_dir = tmpdir("nats-timeout");
    let child = runner()
        .args(["--compare", "nats:1", "self", "--timeout", "4"])
        .args([
            "--clients",
            "10",
            "--seconds",
            "60",
            "--rate",
            "100",
            "--quiet",
        ])
        .args(["--out", out_dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runner = child.id();
    let out = wait_bounded(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("hard timeout"), "{stderr}");
    // SIGKILLed children take a moment to go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children_of_runner(runner).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(children_of_runner(runner), Vec::<String>::new());
    assert_eq!(runner_temp_dirs(runner), Vec::<PathBuf>::new());
}

#[test]
fn tickwire_bench_hands_every_argument_to_the_runner() {
    let run = |args: &[&str]| {
        let child = Command::new(tickwire())
            .arg("bench")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(20))
    };
    // `--help` is the runner's, not tickwire's.
    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(
        help.contains("Usage: tickwire bench") && help.contains("--server-bin"),
        "{help}"
    );
    // Flags, their values and the exit status pass through unchanged.
    let out = run(&["--seconds", "0", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--seconds must be in (0, 3600]"),
        "{stderr}"
    );
    let out = run(&["--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn a_missing_server_binary_is_a_clear_error() {
    for (flag, env) in [(true, false), (false, true)] {
        let mut cmd = runner();
        cmd.args(["--seconds", "1", "--quiet"]);
        if flag {
            cmd.args(["--server-bin", "/nonexistent/tickwire"]);
        }
        if env {
            cmd.env("TICKWIRE_BIN", "/nonexistent/tickwire");
        }
        let out = wait_bounded(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("no tickwire binary at /nonexistent/tickwire"),
            "{stderr}"
        );
    }
}
