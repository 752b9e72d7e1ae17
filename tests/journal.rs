//! `serve --journal DIR`: a server killed with SIGKILL mid-stream and
//! restarted on its journal keeps its epoch, `seq` and offsets, so resuming
//! clients lose nothing; a bad tail is skipped and counted; the files play
//! with `tickwire cat`; an unusable directory is a clear start-up error.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// `tickwire serve --no-feed --journal JOURNAL` on `port` (0: any).
fn serve_journaled(dir: &Path, journal: &Path, port: u16, extra: &[&str]) -> (Served, SocketAddr) {
    let journal = journal.to_str().unwrap();
    let args: Vec<&str> = ["--journal", journal]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    serve_process(dir, port, &args)
}

/// Publishes R1 trades and R2 quotes every 2 ms until `stop` or until the
/// server goes away.
fn spawn_publisher(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publ = publisher(addr).await;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let batch = json!([trade("R1", n, "1", "1"), quote("R2", n, "1", "2")]);
            if publ
                .stream
                .write_all(&encode_frame(true, 1, batch.to_string().as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "twr"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_restarts_on_its_journal_and_clients_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    // Small files: the run rotates several times.
    let small = ["--journal-file-bytes", "4096"];
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &small);
    let (mut c, epoch) = subscribed_to_r1_r2(addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = spawn_publisher(addr, stop.clone());
    let mut ledger = Ledger::default();
    while ledger.count() < 300 {
        ledger.take(&c.recv_json().await);
    }
    // kill -9, mid-stream; the client reads what was sent before it.
    drop(first);
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    while let Some(msg) = c.try_recv().await {
        if let Msg::Text(t) = msg {
            ledger.take(&serde_json::from_str(&t).unwrap());
        }
    }
    ledger.assert_contiguous();
    assert!(journal_files(&journal).len() > 1, "the journal rotated");
    // A record cut short, as a kill during a write leaves it.
    let newest = journal_files(&journal).pop().unwrap();
    let cut_at = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&[0x08, 0, 0, 0, 0, 0, 0, 0, 7, 7])
        .unwrap();

    let (_second, addr2) = serve_journaled(dir.path(), &journal, addr.port(), &small);
    assert_eq!(addr2, addr);
    let metrics = scrape_metrics(addr).await;
    assert_eq!(
        metrics["tickwire_journal_bad_tails_total"], 1.0,
        "{metrics:?}"
    );
    assert_eq!(metrics["tickwire_journal_bad_tail_bytes_total"], 10.0);
    assert!(metrics["tickwire_journal_restored_ticks_total"] >= ledger.count() as f64);
    let _ = cut_at;
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let hello = ws.recv_json().await;
    assert_eq!(
        hello["epoch"],
        epoch.as_str(),
        "the journal keeps the epoch"
    );
    let (reply, ticks) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["R1","R2"],
               "resume":{"epoch":epoch,"seq":ledger.positions()}}),
    )
    .await;
    assert_eq!(reply["epoch"], epoch.as_str(), "{reply}");
    for k in reply["resumed"]["keys"].as_array().unwrap() {
        assert_eq!(k["recovered"], true, "{k}");
    }
    for t in &ticks {
        assert_ne!(t["snap"], true, "a complete resume sends no snapshot: {t}");
        ledger.take(t);
    }
    // Live ticks continue each key's seq.
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("R1", 1, "9", "1"), quote("R2", 1, "8", "9")])
        .await;
    let mut live = 0;
    while live < 2 {
        let v = ws.recv_json().await;
        if v["type"] == "trade" || v["type"] == "quote" {
            ledger.take(&v);
            live += 1;
        }
    }
    ledger.assert_contiguous();
    // A heartbeat's pos is the global offset, continued across the
    // restart (not a count of this process's ticks).
    let (mut hb, _) = connect_with(addr, "/v1/stream?heartbeat=100", "", None).await;
    hb.recv_json().await;
    hb.subscribe(3, &["R1"], None, false).await;
    let (beat, _) = hb.recv_until("heartbeat").await;
    assert!(
        beat["pos"].as_u64().unwrap() >= ledger.count() as u64,
        "{beat} after {} ticks",
        ledger.count()
    );

    // Every file plays with `tickwire cat` (the killed one up to its bad
    // tail, which cat reports).
    let mut played = 0;
    for f in journal_files(&journal) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .arg("cat")
            .arg(&f)
            .output()
            .unwrap();
        played += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"type\":\"trade\"") || l.contains("\"type\":\"quote\""))
            .count();
    }
    assert!(
        played >= ledger.count() - 2,
        "{played} of {}",
        ledger.count()
    );
}

#[test]
fn an_unusable_journal_directory_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--listen", "127.0.0.1:0", "--journal"])
        .arg(file.join("journal"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--journal") && err.contains("cannot create the directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_with_a_file_missing_in_the_middle_starts_a_new_epoch_not_a_silent_gap() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    // A file rotates between batches: about one 30-tick frame each. No bars: offsets are counted.
    let small = ["--journal-file-bytes", "1024", "--no-bars"];
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &small);
    let (mut c, epoch) = subscribed_to_r1_r2(addr).await;
    let mut publ = publisher(addr).await;
    // In 10 frames (a ping per frame stays within the control rate), each
    // delivered, hence journaled, before the next: one journal batch each.
    let mut ledger = Ledger::default();
    for f in 0..10 {
        let ticks: Vec<Value> = (1..=15)
            .flat_map(|i| {
                [
                    trade("R1", f * 15 + i, "1", "1"),
                    quote("R2", f * 15 + i, "1", "2"),
                ]
            })
            .collect();
        publ.publish(&ticks).await;
        while ledger.count() < (f as usize + 1) * 30 {
            ledger.take(&c.recv_json().await);
        }
    }
    drop(first);
    let files = journal_files(&journal);
    assert!(files.len() >= 3, "{files:?}");
    std::fs::remove_file(&files[1]).unwrap();

    let (_second, _) = serve_journaled(dir.path(), &journal, addr.port(), &small);
    let (mut ws, _) = connect_with(addr, "/v1/stream", "", None).await;
    let hello = ws.recv_json().await;
    assert_ne!(
        hello["epoch"],
        epoch.as_str(),
        "a gap is a new epoch: {hello}"
    );
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["R1","R2"],
               "resume":{"epoch":epoch,"seq":ledger.positions()}}),
    )
    .await;
    for k in reply["resumed"]["keys"].as_array().unwrap() {
        assert_eq!(
            (k["recovered"].as_bool(), k["reason"].as_str()),
            (Some(false), Some("other_epoch")),
            "{k}"
        );
    }
    // Offsets still move past every old one (the new process's first file
    // starts after them): an old position is never read as a new tick.
    let newest = journal_files(&journal).pop().unwrap();
    assert!(
        newest.ends_with("journal-00000000000000000301.twr"),
        "{newest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_restores_its_books_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &[]);
    let mut sub = subscriber(addr).await;
    let (reply, _) = ask(
        &mut sub,
        json!({"op":"subscribe","id":1,"symbols":["BK"],"channels":["book"]}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let mut publ = publisher(addr).await;
    let book = |snap: bool, bids: Value, asks: Value| json!({"type":"book","sym":"BK","ts":1,"snap":snap,"bids":bids,"asks":asks});
    publ.publish(&[book(true, json!([[99, 1], [98, 2]]), json!([[101, 1]]))])
        .await;
    publ.publish(&[book(false, json!([[99, 3]]), json!([[102, 4]]))])
        .await;
    // Delivered, hence journaled.
    let mut last = Value::Null;
    while last["seq"] != 2 {
        (last, _) = sub.recv_until("book").await;
    }
    drop(first);

    let (_second, _) = serve_journaled(dir.path(), &journal, addr.port(), &[]);
    let mut c = subscriber(addr).await;
    let (_, got) = ask(
        &mut c,
        json!({"op":"subscribe","id":1,"symbols":["BK"],"channels":["book"]}),
    )
    .await;
    let snap = got
        .iter()
        .find(|v| v["type"] == "book")
        .unwrap_or_else(|| panic!("a book snapshot: {got:?}"));
    assert_eq!(
        (snap["seq"].as_u64(), snap["snap"].as_bool()),
        (Some(2), Some(true)),
        "{snap}"
    );
    let levels = |side: &str| -> Vec<(f64, f64)> {
        snap[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l[0].as_f64().unwrap(), l[1].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(levels("bids"), [(99.0, 3.0), (98.0, 2.0)], "{snap}");
    assert_eq!(levels("asks"), [(101.0, 1.0), (102.0, 4.0)], "{snap}");
    // The book's seq continues.
    publ = publisher(addr).await;
    publ.publish(&[book(false, json!([[98, 0]]), json!([]))])
        .await;
    let (next, _) = c.recv_until("book").await;
    assert_eq!(next["seq"], 3, "{next}");
}

/// #15 item 8: a publisher's `ref` message is journaled (written before the
/// ticks published after it, which a subscriber only gets once journaled),
/// and a server killed with SIGKILL serves it again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_restores_publishers_reference_data_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &[]);
    let mut sub = subscriber(addr).await;
    sub.subscribe(1, &["ZR"], Some(&["trade"]), false).await;
    let mut publ = publisher(addr).await;
    publ.send_text(
        r#"{"type":"ref","sym":"ZR","tick_size":"0.005","currency":"EUR","lot_size":"10"}"#,
    )
    .await;
    publ.publish(&[trade("ZR", 1, "12.345", "10")]).await;
    // Delivered, hence journaled, and the ref with it.
    let (t, _) = sub.recv_until("trade").await;
    assert_eq!(t["sym"], "ZR", "{t}");
    drop(first);

    let (_second, addr) = serve_journaled(dir.path(), &journal, addr.port(), &[]);
    assert_eq!(
        symbols_with_ref(addr).await,
        json!([{"sym":"ZR","tick_size":"0.005","lot_size":"10","decimals":3,"currency":"EUR"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_journal_publishes_each_derived_quote_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &[]);
    let mut sub = subscriber(addr).await;
    ask(
        &mut sub,
        json!({"op":"subscribe","id":1,"symbols":["BK"],"channels":["book","quote"]}),
    )
    .await;
    let mut publ = publisher(addr).await;
    let book = |snap: bool, bids: Value, asks: Value| json!({"type":"book","sym":"BK","ts":1,"snap":snap,"bids":bids,"asks":asks});
    // A snapshot and three diffs, each moving the top: four quotes.
    publ.publish(&[
        book(true, json!([[99, 1]]), json!([[101, 1]])),
        book(false, json!([[99, 2]]), json!([])),
        book(false, json!([[100, 1]]), json!([])),
        book(false, json!([]), json!([[101, 0], [102, 3]])),
    ])
    .await;
    let mut quotes = 0;
    while quotes < 4 {
        if sub.recv_json().await["type"] == "quote" {
            quotes += 1;
        }
    }
    // A clean stop (SIGTERM): the file gets its end record, as `replay`
    // requires.
    let mut first = first;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(first.0.wait().unwrap().success());

    let server = start(config());
    let mut c = subscriber(server.addr()).await;
    ask(
        &mut c,
        json!({"op":"subscribe","id":1,"symbols":["BK"],"channels":["book","quote"],"snapshot":false}),
    )
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["replay", "--speed", "max", "--to"])
        .arg(format!("ws://{}/v1/publish", server.addr()))
        .args(journal_files(&journal))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Four book updates, four quotes (each produced again by its update,
    // the journal's copy skipped), then nothing more.
    let (mut books, mut quotes) = (Vec::new(), Vec::new());
    while books.len() < 4 || quotes.len() < 4 {
        let v = c.recv_json().await;
        match v["type"].as_str() {
            Some("book") => books.push(v["seq"].as_u64().unwrap()),
            Some("quote") => quotes.push(v["seq"].as_u64().unwrap()),
            _ => {}
        }
    }
    c.send_text(r#"{"op":"ping","id":7}"#).await;
    let (_, rest) = c.recv_until("pong").await;
    assert!(
        rest.iter().all(|v| v["type"] != "quote"),
        "a quote twice: {rest:?}"
    );
    assert_eq!(quotes, [1, 2, 3, 4]);
    // `tickwire cat` of the journal shows the book records, not the
    // derived quotes (which playing them produces).
    let cat = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("cat")
        .args(journal_files(&journal))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cat.stdout);
    assert_eq!(text.matches("\"type\":\"quote\"").count(), 0, "{text}");
    assert_eq!(text.matches("\"type\":\"book\"").count(), 4, "{text}");
}

/// The open 1m bar continues after a kill -9: its restored state holds
/// every journaled trade (also one whose bar update was not yet
/// published), its `seq` continues, and the next trade extends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_continues_its_open_bars_from_the_journal() {
    const S: u64 = 1_000_000_000;
    // The start of a minute; the test ends long before the minute does.
    const T0: u64 = 1_700_000_040 * S;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let (first, addr) = serve_journaled(dir.path(), &journal, 0, &[]);
    let mut sub = subscriber(addr).await;
    let (reply, _) = ask(
        &mut sub,
        json!({"op":"subscribe","id":1,"symbols":["BJ"],"channels":["trade","bar_1m"],"snapshot":false}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let mut publ = publisher(addr).await;
    publ.publish(&[
        trade("BJ", T0 + S, "100", "1"),
        trade("BJ", T0 + 2 * S, "105", "2"),
        trade("BJ", T0 + 3 * S, "95", "3"),
    ])
    .await;
    // The open bar with all three (published within a second), delivered,
    // hence journaled.
    loop {
        let (bar, _) = sub.recv_until("bar").await;
        if bar["trades"] == 3 {
            break;
        }
    }
    // A fourth trade, delivered; its bar update may or may not be out
    // before the kill: the restored bar has it either way.
    publ.publish(&[trade("BJ", T0 + 4 * S, "110", "1")]).await;
    loop {
        let (t, _) = sub.recv_until("trade").await;
        if t["ts"] == T0 + 4 * S {
            break;
        }
    }
    drop(first);

    let (_second, _) = serve_journaled(dir.path(), &journal, addr.port(), &[]);
    let mut c = subscriber(addr).await;
    let (_, got) = ask(
        &mut c,
        json!({"op":"subscribe","id":1,"symbols":["BJ"],"channels":["bar_1m"]}),
    )
    .await;
    let snap = got
        .iter()
        .find(|v| v["type"] == "bar")
        .unwrap_or_else(|| panic!("the open bar as the snapshot: {got:?}"))
        .clone();
    assert_eq!(snap["closed"], false, "{snap}");
    assert!(snap["trades"] == 3 || snap["trades"] == 4, "{snap}");
    publ = publisher(addr).await;
    publ.publish(&[trade("BJ", T0 + 5 * S, "90", "1")]).await;
    let mut seq = snap["seq"].as_u64().unwrap();
    let last = loop {
        let (bar, _) = c.recv_until("bar").await;
        seq += 1;
        assert_eq!(bar["seq"].as_u64(), Some(seq), "seq continues: {bar}");
        if bar["trades"] == 5 {
            break bar;
        }
    };
    let num = |k: &str| last[k].as_f64().unwrap();
    assert_eq!(
        (
            num("open"),
            num("high"),
            num("low"),
            num("close"),
            num("volume")
        ),
        (100.0, 110.0, 90.0, 90.0, 8.0),
        "{last}"
    );
    assert_eq!(
        (last["start"].as_u64(), last["closed"].as_bool()),
        (Some(T0), Some(false)),
        "{last}"
    );
}
