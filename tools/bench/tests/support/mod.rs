//! What the runner's end-to-end tests share: the binaries, a scratch
//! directory, and runs bounded in time.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runner, built by Cargo for this test.
pub const RUNNER: &str = env!("CARGO_BIN_EXE_tickwire-bench");

/// The `tickwire` binary: the one the runner starts servers with and the
/// one `tickwire bench` goes through. `TICKWIRE_BIN` if set (the runner
/// uses it too); else `tickwire` beside the runner, where `cargo test` at
/// the root has built it. Cargo builds another package's binaries only for
/// that package's own tests, so when it is missing (`cargo test -p
/// tickwire-bench` in a fresh clone) it is built here, once, with the
/// cargo running this test, into the same target directory and profile.
pub fn tickwire() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TICKWIRE_BIN") {
            return PathBuf::from(p);
        }
        let dir = Path::new(RUNNER)
            .parent()
            .expect("the runner is in a directory");
        let bin = dir.join("tickwire");
        if bin.is_file() {
            return bin;
        }
        // target/<profile>/tickwire-bench: build the same profile there.
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--package", "tickwire", "--bin", "tickwire"])
            .arg("--target-dir")
            .arg(dir.parent().expect("a target directory"))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile != "debug" {
            cargo.args(["--profile", profile]);
        }
        let status = cargo.status().expect("running cargo to build tickwire");
        assert!(status.success(), "cargo build --bin tickwire: {status}");
        assert!(
            bin.is_file(),
            "built tickwire, but not at {} (a --target build? set TICKWIRE_BIN)",
            bin.display()
        );
        bin
    })
}

/// A scratch directory for one test, removed when the test ends (passed or
/// failed): a test suite run leaves nothing behind in the temp directory.
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

pub fn tmpdir(name: &str) -> Scratch {
    let d = tempfile::Builder::new()
        .prefix(&format!("tickwire-bench-test-{name}-"))
        .tempdir()
        .expect("a scratch directory");
    Scratch(d)
}

/// Runs the child to completion, killing it (and failing) past `limit`.
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "bench did not finish within {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The runner, with the `tickwire` binary it starts servers with in place.
pub fn runner() -> Command {
    tickwire();
    Command::new(RUNNER)
}

pub fn bench(args: &[&str], limit: Duration) -> Output {
    let child = runner()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, limit)
}

// The child is handed to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
/// Starts `tickwire serve --no-feed` on a free loopback port with `extra`
/// flags; returns it and its address (`HOST:PORT`, no scheme).
pub fn start_server(dir: &Path, extra: &[&str]) -> (Child, String) {
    let addr_file = dir.join("addr");
    let mut child = Command::new(tickwire())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-feed",
            "--addr-file",
        ])
        .arg(&addr_file)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return (child, a.trim().to_owned());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
