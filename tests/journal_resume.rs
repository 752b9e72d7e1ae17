//! `serve --journal DIR` serves a resume older than the memory history
//! from the journal files: with `--history-bytes` tiny (a few dozen ticks)
//! a client resuming from far back, by key `seq`, by offset on `*`, by
//! time, in binary, or over SSE with `Last-Event-ID`, gets every missed tick once, in
//! per-key order, then live ticks with no gap or duplicate at the seam;
//! also after a kill -9 and restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// About 45 ticks of history: every resume below reaches further back.
const TINY_HISTORY: &str = "20000";
/// Ticks of each key per published frame.
const PER_FRAME: u64 = 15;

/// The two keys the publisher below feeds.
const BOTH: &[(&str, &str)] = &[("R1", "trade"), ("R2", "quote")];

/// Publishes `frames` frames of [`PER_FRAME`] R1 trades and R2 quotes,
/// each read by `watch` (delivered, hence journaled) before the next.
async fn publish(addr: SocketAddr, watch: &mut RawWs, frames: u64, published: &mut u64) {
    let mut publ = publisher(addr).await;
    for _ in 0..frames {
        let ticks: Vec<Value> = (1..=PER_FRAME)
            .flat_map(|i| {
                let n = *published + i;
                [trade("R1", n, "1", "1"), quote("R2", n, "1", "2")]
            })
            .collect();
        publ.publish(&ticks).await;
        *published += PER_FRAME;
        let mut seen = 0;
        while seen < 2 * PER_FRAME {
            let v = watch.recv_json().await;
            if v["type"] == "trade" || v["type"] == "quote" {
                seen += 1;
            }
        }
    }
}

fn serve(dir: &Path, port: u16) -> (Served, SocketAddr) {
    let journal = dir.join("journal");
    let args = [
        "--journal",
        journal.to_str().unwrap(),
        "--journal-file-bytes",
        "4096",
        "--history-bytes",
        TINY_HISTORY,
    ];
    serve_process(dir, port, &args)
}

/// A WebSocket client that resumes with `req`: checks every key's
/// `recovered`, reads until each key has `want` ticks, and returns them.
async fn resume_ws(addr: SocketAddr, req: Value, want: usize) -> (RawWs, Ledger) {
    let mut ws = subscriber(addr).await;
    let (reply, before) = ask(&mut ws, req).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let resumed = &reply["resumed"];
    if let Some(whole) = resumed.get("recovered") {
        assert_eq!(whole, true, "{reply}");
    }
    for k in resumed["keys"].as_array().unwrap() {
        assert_eq!(k["recovered"], true, "{reply}");
    }
    let mut got = Ledger::default();
    for v in &before {
        assert_ne!(v["snap"], true, "a complete resume sends no snapshot: {v}");
        got.take(v);
    }
    while got.count() < want {
        let v = ws.recv_json().await;
        assert_ne!(v["type"], "lagging", "{v}");
        got.take(&v);
    }
    (ws, got)
}

/// A `tickwire.bin.v1` client and the symbol ids it was given.
struct BinaryClient {
    ws: RawWs,
    names: std::collections::HashMap<u64, String>,
}

/// Connects with the binary subprotocol and resumes with `req` (every
/// key must be recovered).
async fn binary_resume(addr: SocketAddr, req: Value) -> BinaryClient {
    let headers = "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n";
    let (mut ws, head) = connect_with(addr, "/v1/stream", headers, None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.recv_json().await;
    ws.send_json(req).await;
    let (reply, _) = ws.recv_until("subscribed").await;
    for k in reply["resumed"]["keys"].as_array().unwrap() {
        assert_eq!(k["recovered"], true, "{reply}");
    }
    let names = reply["ids"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(sym, id)| (id.as_u64().unwrap(), sym.clone()))
        .collect();
    BinaryClient { ws, names }
}

impl BinaryClient {
    /// Reads one frame: its 64-byte records into `got`.
    async fn read(&mut self, got: &mut Ledger) {
        match self.ws.recv().await {
            Msg::Binary(b) => {
                for (kind, id, seq) in resumed_bin_ticks(&b) {
                    let sym = &self.names[&id];
                    got.take_as(kind, &json!({"sym": sym, "seq": seq}));
                }
            }
            Msg::Text(t) => assert!(!t.contains("lagging"), "{t}"),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads one live frame's ticks (`PER_FRAME` of each key) into `got`.
async fn read_live(ws: &mut RawWs, got: &mut Ledger) {
    let target = got.count() + 2 * PER_FRAME as usize;
    while got.count() < target {
        let v = ws.recv_json().await;
        got.take(&v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_memory_history_is_served_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = serve(dir.path(), 0);
    let (mut watch, epoch) = subscribed_to_r1_r2(addr).await;
    let mut n = 0u64;
    publish(addr, &mut watch, 1, &mut n).await;
    // (A time before the journal's oldest tick is not served: the server
    // cannot tell whether older files of the epoch were deleted.)
    let t0 = tickwire::model::tick::wall_clock_ns();
    publish(addr, &mut watch, 9, &mut n).await;
    let positions = json!({"trade":{"R1":30},"quote":{"R2":30}});
    let m = scrape_metrics(addr).await;
    assert_eq!(m["tickwire_journal_resume_reads_total"], 0.0);

    // By key seq: every tick after 30 of each key, then live.
    let (mut by_seq, mut got) = resume_ws(
        addr,
        json!({"op":"subscribe","id":2,"symbols":["R1","R2"],"snapshot":false,
               "resume":{"epoch":epoch,"seq":positions}}),
        2 * (n as usize - 30),
    )
    .await;
    // By offset on `*`: everything from the start.
    let (mut star, mut got_star) = resume_ws(
        addr,
        json!({"op":"subscribe","id":3,"symbols":["*"],"snapshot":true,
               "resume":{"epoch":epoch,"offset":0}}),
        2 * n as usize,
    )
    .await;
    // By time: everything received since t0.
    let (mut by_ts, mut got_ts) = resume_ws(
        addr,
        json!({"op":"subscribe","id":4,"symbols":["R1","R2"],"snapshot":true,
               "resume":{"epoch":epoch,"ts":t0}}),
        2 * (n - PER_FRAME) as usize,
    )
    .await;
    // SSE: Last-Event-ID with offset 0 resumes every key of the stream.
    let mut sse = SseStream::open(addr, "/v1/sse?symbols=R1,R2", Some(&format!("{epoch}:0"))).await;
    let mut got_sse = Ledger::default();
    while got_sse.count() < 2 * n as usize {
        let e = sse.next().await;
        if e.event == "resume" {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["resumed"]["recovered"], true, "{v}");
        }
        assert_ne!(e.event, "lagging", "{}", e.data);
        got_sse.take_as(&e.event, &serde_json::from_str(&e.data).unwrap());
    }
    // Binary (`tickwire.bin.v1`): the same resume by key seq.
    let mut bin = binary_resume(
        addr,
        json!({"op":"subscribe","id":6,"symbols":["R1","R2"],"snapshot":false,
               "resume":{"epoch":epoch,"seq":positions}}),
    )
    .await;
    let mut got_bin = Ledger::default();
    while got_bin.count() < 2 * (n as usize - 30) {
        bin.read(&mut got_bin).await;
    }
    let m = scrape_metrics(addr).await;
    assert!(m["tickwire_journal_resume_reads_total"] >= 5.0, "{m:?}");
    assert!(
        m["tickwire_journal_resume_ticks_total"] >= 4.0 * 200.0,
        "{m:?}"
    );

    // The seam: the next live ticks follow, none twice, none missing.
    publish(addr, &mut watch, 1, &mut n).await;
    read_live(&mut by_seq, &mut got).await;
    read_live(&mut star, &mut got_star).await;
    read_live(&mut by_ts, &mut got_ts).await;
    let target = got_bin.count() + 2 * PER_FRAME as usize;
    while got_bin.count() < target {
        bin.read(&mut got_bin).await;
    }
    let target = got_sse.count() + 2 * PER_FRAME as usize;
    while got_sse.count() < target {
        let e = sse.next().await;
        got_sse.take_as(&e.event, &serde_json::from_str(&e.data).unwrap());
    }
    got.assert_exactly(BOTH, 31, n, "by seq");
    got_star.assert_exactly(BOTH, 1, n, "* by offset");
    got_ts.assert_exactly(BOTH, PER_FRAME + 1, n, "by ts");
    got_bin.assert_exactly(BOTH, 31, n, "binary by seq");
    got_sse.assert_exactly(BOTH, 1, n, "SSE Last-Event-ID");

    // kill -9, restart: the restored history holds only its last few
    // dozen ticks; a position from before the restart comes from disk.
    drop(first);
    let (_second, addr2) = serve(dir.path(), addr.port());
    assert_eq!(addr2, addr);
    let (mut watch, _) = subscribed_to_r1_r2(addr).await;
    let (mut after, mut got) = resume_ws(
        addr,
        json!({"op":"subscribe","id":5,"symbols":["R1","R2"],"snapshot":false,
               "resume":{"epoch":epoch,"seq":positions}}),
        2 * (n as usize - 30),
    )
    .await;
    publish(addr, &mut watch, 1, &mut n).await;
    read_live(&mut after, &mut got).await;
    got.assert_exactly(BOTH, 31, n, "after a restart");
    let m = scrape_metrics(addr).await;
    assert!(m["tickwire_journal_resume_reads_total"] >= 1.0, "{m:?}");
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_corrupt_journal_files_give_a_precise_answer_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(dir.path(), 0);
    let (mut watch, epoch) = subscribed_to_r1_r2(addr).await;
    let mut n = 0u64;
    publish(addr, &mut watch, 10, &mut n).await;
    let files = journal_files(dir.path());
    assert!(files.len() >= 5, "{files:?}");

    // A record in the middle of the third file overwritten: a resume
    // from before it is served up to it, then told of the gap (`lagging`)
    // and given each key's newest value; the read error is counted.
    let third = &files[2];
    let len = std::fs::metadata(third).unwrap().len();
    let mut bytes = std::fs::read(third).unwrap();
    for b in &mut bytes[len as usize / 2..len as usize / 2 + 24] {
        *b = 0xEE;
    }
    std::fs::write(third, &bytes).unwrap();
    let mut ws = subscriber(addr).await;
    let (reply, before) = ask(
        &mut ws,
        json!({"op":"subscribe","id":2,"symbols":["R1","R2"],"snapshot":false,
               "resume":{"epoch":epoch,"seq":{"trade":{"R1":2},"quote":{"R2":2}}}}),
    )
    .await;
    for k in reply["resumed"]["keys"].as_array().unwrap() {
        assert_eq!(k["recovered"], true, "{reply}");
    }
    let mut got = Ledger::default();
    let mut queued = std::collections::VecDeque::from(before);
    let lagging = loop {
        let v = match queued.pop_front() {
            Some(v) => v,
            None => ws.recv_json().await,
        };
        if v["type"] == "lagging" {
            break v;
        }
        got.take(&v);
    };
    // Up to the bad record: each key from seq 3 on, in order, once.
    for (key, seqs) in &got.0 {
        let want: Vec<u64> = (3..3 + seqs.len() as u64).collect();
        assert_eq!(seqs, &want, "{key:?}");
        assert!(
            seqs.len() < n as usize - 2,
            "{key:?} stops at the bad record"
        );
    }
    assert_eq!(lagging["reason"], "out_of_history", "{lagging}");
    // The newest value of each key follows (`on_gap` conflate).
    let mut newest = Ledger::default();
    while newest.count() < 2 {
        let v = ws.recv_json().await;
        newest.take(&v);
    }
    newest.assert_exactly(BOTH, n, n, "newest values after the gap");
    let m = scrape_metrics(addr).await;
    assert!(m["tickwire_journal_read_errors_total"] >= 1.0, "{m:?}");

    // The two oldest files deleted: from the start is no longer whole.
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let mut ws = subscriber(addr).await;
    let (reply, _) = ask(
        &mut ws,
        json!({"op":"subscribe","id":3,"symbols":["R1","R2"],
               "resume":{"epoch":epoch,"offset":0,"seq":{"trade":{"R1":1}}}}),
    )
    .await;
    let resumed = &reply["resumed"];
    assert_eq!(
        (resumed["recovered"].as_bool(), resumed["reason"].as_str()),
        (Some(false), Some("history_too_short")),
        "{reply}"
    );
    let key = &resumed["keys"][0];
    assert_eq!(key["recovered"], false, "{reply}");
    assert!(key["first_seq"].as_u64().unwrap() > 2, "{reply}");
    // The server still serves: a live tick reaches this client.
    publish(addr, &mut watch, 1, &mut n).await;
    let mut live = Ledger::default();
    while live.seqs("R1", "trade").and_then(|s| s.last()) != Some(&n) {
        let v = ws.recv_json().await;
        live.take(&v);
    }
}
