//! The README's reconnecting Python client (examples/resume_client.py,
//! with the `websockets` package from PyPI, unmodified) against a real
//! server: it drops its connection every 50 ticks under a steady publisher,
//! resumes, and must end with every key's `seq` contiguous, none twice.
//!
//! Python comes from `target/py-venv` (`.ci/run` creates it: `python3 -m
//! venv target/py-venv && target/py-venv/bin/pip install websockets`). The
//! test skips when it is missing, and fails instead when
//! `TICKWIRE_REQUIRE_PYTHON_WS` is set (CI).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

fn python() -> Option<std::path::PathBuf> {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var_os("TICKWIRE_REQUIRE_PYTHON_WS").is_none(),
        "{} with `websockets` is required (TICKWIRE_REQUIRE_PYTHON_WS is set)",
        py.display()
    );
    eprintln!("skipped: no {} with websockets", py.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_reconnects_resumes_and_loses_nothing() {
    let Some(py) = python() else { return };
    let h = start(config());
    let addr = h.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut publ = publisher(addr).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let batch = json!([trade("PY1", n, "1", "1"), quote("PY2", n, "1", "2")]);
                let frame = encode_frame(true, 1, batch.to_string().as_bytes());
                if publ.stream.write_all(&frame).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resume_client.py");
    let mut child = std::process::Command::new(py)
        .arg(script)
        .arg(format!("ws://{addr}/v1/stream"))
        .args(["PY1", "PY2", "--until", "400", "--drop-every", "50"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a client that hangs is killed, and the test fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("gap") && !stdout.contains("not recovered"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let seqs: HashMap<String, Vec<u64>> = serde_json::from_value(report["seqs"].clone()).unwrap();
    assert_eq!(seqs.values().map(Vec::len).sum::<usize>(), 400);
    for (key, s) in &seqs {
        let want: Vec<u64> = (s[0]..s[0] + s.len() as u64).collect();
        assert_eq!(s, &want, "{key}: every seq once, in order");
    }
}
