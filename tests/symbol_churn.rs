//! Issue #15 item 2: names subscribed but never published do not fill the
//! symbol table for good. One connection churns 30,000 fresh names through
//! a server of `--max-symbols 20000`; then a publisher's new symbol is
//! accepted and delivered, and the server's RSS is back near where it was.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::json;

/// The server process, killed on every path.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of `pid` in KiB (`/proc/PID/statm`, second field).
fn rss_kib(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * tickwire::sys::page_size().unwrap() / 1024
}

/// Subscribes to `names` (both channels) and unsubscribes them again.
async fn churn(ws: &mut RawWs, id: i64, names: &[String]) {
    ws.send_json(json!({"op":"subscribe","id":id,"symbols":names}))
        .await;
    let (reply, before) = ws.recv_until("subscribed").await;
    assert_eq!(reply["id"], id, "{before:?}");
    assert_eq!(reply["symbols"].as_array().unwrap().len(), names.len());
    ws.send_json(json!({"op":"unsubscribe","id":id + 1,"symbols":names}))
        .await;
    let (reply, before) = ws.recv_until("unsubscribed").await;
    assert_eq!(reply["id"], id + 1, "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_30000_unpublished_names_leaves_room_for_publishers_and_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args([
                "serve",
                "--no-feed",
                "--workers",
                "1",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--max-symbols", "20000", "--addr-file"])
            .arg(&addr_file)
            // What is measured is memory the server still holds, not how
            // soon the allocator gives freed pages back: serve delays that
            // by 1 s (src/main.rs), long enough to leave a churned round's
            // pages in RSS when this test reads it.
            .env("MIMALLOC_PURGE_DELAY", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = wait_for_addr_file(&addr_file);
    let pid = server.0.id();
    let mut ws = subscriber(addr).await;
    let batch =
        |round: usize| -> Vec<String> { (0..5_000).map(|i| format!("N{round}X{i}")).collect() };
    // One round first, so the baseline includes the buffers any round
    // needs (the request itself, the largest maps).
    churn(&mut ws, 1, &batch(0)).await;
    let baseline = rss_kib(pid);
    for round in 1..=6 {
        churn(&mut ws, round as i64 * 10, &batch(round)).await;
    }
    let after = rss_kib(pid);
    eprintln!("RSS: {baseline} KiB after one round, {after} KiB after six more");
    // Publishers still get new symbols, and subscribers their ticks.
    let mut s = subscriber(addr).await;
    s.subscribe(100, &["FRESH"], None, false).await;
    let mut p = publisher(addr).await;
    p.publish(&[trade("FRESH", 1, "10.5", "3")]).await;
    let v = s.recv_json().await;
    assert_eq!(
        (v["sym"].as_str(), v["seq"].as_u64()),
        (Some("FRESH"), Some(1)),
        "{v}"
    );
    let listed = http_get(addr, "/v1/symbols").await;
    assert!(
        listed.contains("FRESH") && !listed.contains("N1X0"),
        "{listed}"
    );
    // 30,000 names held for good would be several MiB (issue: ~170 bytes
    // each); what stays is allocator slack.
    assert!(
        after <= baseline + 2048,
        "RSS grew from {baseline} KiB to {after} KiB over 30,000 churned names"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_names_have_their_own_budget_released_when_connections_close() {
    let h = start(tickwire::server::config::Config {
        max_symbols: 10,
        max_keys_per_connection: 20,
        ..config()
    });
    let names = |from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("U{i}")).collect()
    };
    let mut a = subscriber(h.addr()).await;
    a.send_json(json!({"op":"subscribe","id":1,"symbols":names(0, 6)}))
        .await;
    a.recv_until("subscribed").await;
    let mut b = subscriber(h.addr()).await;
    b.send_json(json!({"op":"subscribe","id":2,"symbols":names(6, 4)}))
        .await;
    b.recv_until("subscribed").await;
    assert_eq!(h.ingest().symbols().held_len(), 10);
    // The held names' budget is spent: a stranger's new name is refused...
    let mut c = subscriber(h.addr()).await;
    c.send_json(json!({"op":"subscribe","id":3,"symbols":["LATE"]}))
        .await;
    let e = c.recv_json().await;
    assert_eq!(e["code"], "too_many_symbols", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("nobody has published"),
        "{e}"
    );
    // ...but publishers are not: their symbols have a budget of their own.
    let mut p = publisher(h.addr()).await;
    p.publish(&[trade("PUB", 1, "1", "1"), trade("U0", 1, "2", "1")])
        .await;
    let t = a.recv_json().await;
    assert_eq!(t["sym"], "U0", "a held name, once published, is delivered");
    // A's names go when A does (U0 stays: it has had a tick).
    drop(a);
    eventually("A's held names released", || {
        h.ingest().symbols().held_len() == 4
    })
    .await;
    c.subscribe(4, &["LATE"], None, false).await;
    assert!(h.ingest().symbols().lookup("U0").is_some());
    assert!(h.ingest().symbols().lookup("U1").is_none());
    drop((b, c, p));
    h.shutdown();
}
