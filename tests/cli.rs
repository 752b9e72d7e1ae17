//! The `tickwire` binary as a user runs it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Server {
    // Its own directory, removed when this returns: it holds only the address.
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&addr_file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tickwire");
    // Owned by the guard at once, so the process is reaped on every path.
    let mut server = Server {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file) {
            server.addr = s.trim().parse().unwrap();
            return server;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_serve_streams_the_bundled_recording() {
    let s = spawn(&[]);
    let mut ws = subscriber(s.addr).await;
    ws.subscribe(1, &["*"], None, false).await;
    // The recording starts at the 09:30 open: live ticks within seconds.
    let v = ws.recv_json().await;
    assert!(
        ["trade", "quote"].contains(&v["type"].as_str().unwrap()),
        "{v}"
    );
    assert!(
        ["AIG", "BAC", "IBM", "SPY"].contains(&v["sym"].as_str().unwrap()),
        "{v}"
    );
    assert!(v.get("snap").is_none());
    let now = tickwire::model::tick::wall_clock_ns();
    let ts = v["ts"].as_u64().unwrap();
    assert!(
        now.abs_diff(ts) < 60_000_000_000,
        "ts is rebased to now when looping the demo feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_clients_with_1001_and_exits_zero() {
    let mut s = spawn(&["--no-feed"]);
    let mut ws = subscriber(s.addr).await;
    ws.subscribe(1, &["*"], None, false).await;
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (code, _, _) = ws.recv_close().await;
    assert_eq!(code, Some(1001));
    ws.send_close(1001, "").await;
    ws.expect_eof().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--evict-after", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("soon") && err.contains("5s"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--replay",
            "/nonexistent/feed.jsonl",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/feed.jsonl"), "{err}");
    // The coalescing window's bounds, each named with what was given.
    for (flag, value, says) in [
        (
            "--coalesce-paying-busy",
            "0.95",
            "at most --coalesce-busy (0.9), got 0.95",
        ),
        ("--coalesce-min-yield", "0.5", "at least 1, got 0.5"),
        ("--coalesce-busy", "1.5", "at most 1, got 1.5"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--no-feed", "--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains(says), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_connection_open_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let log = dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "serve",
            "--no-feed",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
        ])
        .arg(&addr_file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut s = Server {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    s.addr = wait_for_addr_file(&addr_file);
    let mut ws = subscriber(s.addr).await;
    let local = ws.stream.local_addr().unwrap().to_string();
    ws.send_close(1000, "bye").await;
    ws.recv_close().await;
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        if let Some(v) = lines()
            .into_iter()
            .find(|v| v["fields"]["message"] == "connection closed")
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no close line: {:?}", lines());
        std::thread::sleep(Duration::from_millis(20));
    };
    let open = lines()
        .into_iter()
        .find(|v| v["fields"]["message"] == "connection open")
        .unwrap();
    assert_eq!(open["level"], "INFO");
    assert_eq!(open["fields"]["peer"], local.as_str());
    assert_eq!(open["fields"]["kind"], "subscriber");
    assert_eq!(closed["fields"]["peer"], local.as_str());
    assert_eq!(closed["fields"]["reason"], "client closed");
    assert_eq!(closed["fields"]["frames"], 0);
    assert_eq!(closed["fields"]["dropped"], 0);
}

#[test]
fn serve_raises_its_open_file_limit_and_warns_when_max_connections_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let log = dir.path().join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
    cmd.args(["serve", "--no-feed", "--listen", "127.0.0.1:0"])
        .args(["--max-connections", "100000000", "--addr-file"])
        .arg(&addr_file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // Started with a low soft limit, as a shell's default would be.
    with_soft_fd_limit(&mut cmd, 512);
    let _s = Server {
        child: cmd.spawn().unwrap(),
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    wait_for_addr_file(&addr_file);
    let hard = tickwire::sys::fd_limit().unwrap().hard;
    let text = std::fs::read_to_string(&log).unwrap();
    // Plain text in a file: no colour escapes.
    assert!(!text.contains('\u{1b}'), "{text}");
    let limit_line = text
        .lines()
        .find(|l| l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("no open-file limit line: {text}"));
    assert!(
        limit_line.contains(&format!("soft={}", hard))
            && limit_line.contains(&format!("was={}", hard.min(512))),
        "{limit_line}"
    );
    let warn = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("does not fit in the open-file limit"))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(warn.contains("max_connections=100000000"), "{warn}");
}

/// Runs `tickwire serve ARGS --addr-file F` and returns it with its bound address.
fn spawn_listening(args: &[&str], tag: &str) -> Server {
    let addr_file =
        std::env::temp_dir().join(format!("tickwire-cli-{}-{tag}.addr", std::process::id()));
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("serve")
        .args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tickwire");
    let mut server = Server {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file) {
            server.addr = s.trim().parse().unwrap();
            let _ = std::fs::remove_file(&addr_file);
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("tickwire serve {args:?} exited: {status}");
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_applies_to_the_bundled_feed_without_replay() {
    // Was refused ("--speed requires --replay"); now the bundled feed plays
    // at 10× (the pace itself: replay::tests, on a paused clock).
    let s = spawn_listening(&["--listen", "127.0.0.1:0", "--speed", "10"], "speed");
    let mut ws = subscriber(s.addr).await;
    ws.subscribe(1, &["*"], None, false).await;
    let v = ws.recv_json().await;
    assert!(
        ["trade", "quote"].contains(&v["type"].as_str().unwrap()),
        "{v}"
    );
    // ts stays rebased to now at 10× (it follows the wall clock, not the recording).
    let now = tickwire::model::tick::wall_clock_ns();
    let ts = v["ts"].as_u64().unwrap();
    assert!(now.abs_diff(ts) < 60_000_000_000, "{v}");
    // --speed beside --no-feed has nothing to speed up: refused, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--speed", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-feed") && err.contains("--speed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_host_name_and_a_bad_one_gets_an_ip_suggestion() {
    let s = spawn_listening(&["--no-feed", "--listen", "localhost:0"], "localhost");
    assert!(s.addr.ip().is_loopback(), "{}", s.addr);
    let mut ws = subscriber(s.addr).await;
    ws.subscribe(1, &["X"], None, false).await;
    for (arg, words) in [
        ("no-such-host.invalid:8095", "cannot resolve"),
        ("localhost", "no port"),
        ("127.0.0.1", "no port"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--listen", arg])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(words) && err.contains("127.0.0.1:8080"),
            "{arg}: {err}"
        );
    }
}
