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
    let dir = std::env::temp_dir().join(format!(
        "tickwire-cli-{}-{}",
        std::process::id(),
        args.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join(format!("addr-{}", Instant::now().elapsed().as_nanos()));
    let _ = std::fs::remove_file(&addr_file);
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
    let now = tickwire::tick::wall_clock_ns();
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
}
