//! The binary subprotocol `tickwire.bin.v1` over real sockets: every record
//! field against the JSON of the same tick, snapshots, several records per
//! frame, negotiation, and symbol-id announcements for `*` subscribers.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

/// One decoded 64-byte record.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    kind: u8,
    snap: bool,
    reserved: u16,
    id: u32,
    seq: u64,
    ts: u64,
    rx: u64,
    f: [i64; 4],
}

fn decode(payload: &[u8]) -> Vec<Record> {
    assert_eq!(payload.len() % 64, 0, "whole records only");
    payload
        .chunks(64)
        .map(|r| {
            let u64_at = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap());
            let i64_at = |o: usize| i64::from_le_bytes(r[o..o + 8].try_into().unwrap());
            assert_eq!(r[1] & !1, 0, "only flag bit 0 is defined");
            Record {
                kind: r[0],
                snap: r[1] & 1 == 1,
                reserved: u16::from_le_bytes([r[2], r[3]]),
                id: u32::from_le_bytes(r[4..8].try_into().unwrap()),
                seq: u64_at(8),
                ts: u64_at(16),
                rx: u64_at(24),
                f: [i64_at(32), i64_at(40), i64_at(48), i64_at(56)],
            }
        })
        .collect()
}

/// A decimal field read from the JSON text itself (serde_json's `Value`
/// would round it through f64), in 1e-9 units.
fn fixed(text: &str, field: &str) -> i64 {
    let at = text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    let end = text[at..].find([',', '}']).unwrap() + at;
    let s = text[at..end].to_string();
    let (neg, s) = s
        .strip_prefix('-')
        .map_or((false, s.as_str()), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<9}");
    let n = int.parse::<i128>().unwrap() * 1_000_000_000 + frac.parse::<i128>().unwrap();
    i64::try_from(if neg { -n } else { n }).unwrap()
}

/// The record a JSON tick (its text) must decode to, given the symbol ids.
fn expected(text: &str, ids: &HashMap<String, u32>) -> Record {
    let j: Value = serde_json::from_str(text).unwrap();
    let trade = j["type"] == "trade";
    let f = if trade {
        let side = j["side"].as_str().unwrap().as_bytes()[0];
        [fixed(text, "px"), fixed(text, "qty"), i64::from(side), 0]
    } else {
        ["bid", "bsz", "ask", "asz"].map(|k| fixed(text, k))
    };
    Record {
        kind: if trade { 1 } else { 2 },
        snap: j["snap"] == true,
        reserved: 0,
        id: ids[j["sym"].as_str().unwrap()],
        seq: j["seq"].as_u64().unwrap(),
        ts: j["ts"].as_u64().unwrap(),
        rx: j["rx"].as_u64().unwrap(),
        f,
    }
}

async fn binary_subscriber(addr: std::net::SocketAddr, offer: &str) -> RawWs {
    let (mut ws, head) = connect_with(
        addr,
        "/v1/stream",
        &format!("Sec-WebSocket-Protocol: {offer}\r\n"),
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.protocol.as_deref(), Some("tickwire.bin.v1"), "{head}");
    let hello = ws.recv_json().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], "tickwire.bin.v1");
    ws
}

/// Reads binary frames until `n` records have arrived; returns them and the
/// number of frames they came in. Text frames are control messages.
async fn recv_records(ws: &mut RawWs, n: usize, texts: &mut Vec<Value>) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut frames = 0;
    while out.len() < n {
        match ws.recv().await {
            Msg::Binary(p) => {
                frames += 1;
                out.extend(decode(&p));
            }
            Msg::Text(t) => texts.push(serde_json::from_str(&t).unwrap()),
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(out.len(), n, "no more records than expected");
    (out, frames)
}

async fn recv_text(ws: &mut RawWs) -> String {
    match ws.recv().await {
        Msg::Text(t) => t,
        m => panic!("expected text, got {m:?}"),
    }
}

fn ids_of(reply: &Value) -> HashMap<String, u32> {
    reply["ids"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as u32))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_match_the_json_of_the_same_ticks() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    // Last values for snapshots: edge-case prices, every side, both channels.
    publ.publish(&[
        serde_json::from_str(r#"{"type":"trade","sym":"AAPL","ts":1700000000123456789,"px":"9223372036.854775807","qty":0.000000001,"side":"S"}"#).unwrap(),
        serde_json::from_str(r#"{"type":"quote","sym":"AAPL","ts":1700000000123456790,"bid":"-0.5","bsz":300,"ask":189.24,"asz":"0"}"#).unwrap(),
        serde_json::from_str(r#"{"type":"trade","sym":"BRK.B","ts":1700000000000000001,"px":"-9223372036.854775808","qty":1}"#).unwrap(),
    ])
    .await;

    let mut js = subscriber(addr).await;
    let mut bin = binary_subscriber(addr, "tickwire.bin.v1").await;
    let jr = js.subscribe(1, &["AAPL", "BRK.B"], None, true).await;
    let br = bin.subscribe(1, &["AAPL", "BRK.B"], None, true).await;
    let ids = ids_of(&br);
    assert_eq!(ids, ids_of(&jr), "one id space for every client");

    // Snapshots: flagged, and all pending together, so in one frame.
    let mut snaps_json = Vec::new();
    for _ in 0..3 {
        snaps_json.push(recv_text(&mut js).await);
    }
    let mut texts = Vec::new();
    let (snaps, frames) = recv_records(&mut bin, 3, &mut texts).await;
    assert!(
        texts.is_empty(),
        "named symbols need no announcement: {texts:?}"
    );
    assert_eq!(frames, 1, "snapshot records queued together share a frame");
    let mut want: Vec<Record> = snaps_json.iter().map(|j| expected(j, &ids)).collect();
    let key = |r: &Record| (r.id, r.kind);
    want.sort_by_key(key);
    let mut got = snaps.clone();
    got.sort_by_key(key);
    assert_eq!(got, want);
    assert!(got.iter().all(|r| r.snap));
    assert_eq!(got[0].f, [i64::MAX, 1, i64::from(b'S'), 0]);

    // Live ticks, published as one batch.
    let live: Vec<Value> = (0..40)
        .map(|i| {
            if i % 3 == 0 {
                quote(
                    "AAPL",
                    1_700_000_001_000_000_000 + i,
                    &format!("1{i}.25"),
                    "99.5",
                )
            } else {
                trade(
                    if i % 2 == 0 { "AAPL" } else { "BRK.B" },
                    1_700_000_001_000_000_000 + i,
                    &format!("{i}.123456789"),
                    "7",
                )
            }
        })
        .collect();
    publ.publish(&live).await;
    let mut live_json = Vec::new();
    for _ in 0..live.len() {
        live_json.push(recv_text(&mut js).await);
    }
    let (records, frames) = recv_records(&mut bin, live.len(), &mut texts).await;
    assert!(frames <= live.len());
    let want: Vec<Record> = live_json.iter().map(|j| expected(j, &ids)).collect();
    assert_eq!(records, want, "same ticks, same order, every field equal");
    assert!(records.iter().all(|r| !r.snap));

    // Control messages stay JSON text on a binary connection.
    bin.send_text(r#"{"op":"ping","id":9}"#).await;
    assert_eq!(bin.recv_json().await["type"], "pong");
    drop((js, bin, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogged_records_coalesce_into_few_frames() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    let syms: Vec<String> = (0..300).map(|i| format!("S{i}")).collect();
    let ticks: Vec<Value> = syms.iter().map(|s| trade(s, 1, "1.5", "2")).collect();
    publ.publish(&ticks).await;
    let mut bin = binary_subscriber(addr, "tickwire.bin.v1").await;
    let names: Vec<&str> = syms.iter().map(String::as_str).collect();
    let reply = bin.subscribe(1, &names, Some(&["trade"]), true).await;
    let ids = ids_of(&reply);
    let mut texts = Vec::new();
    let (records, frames) = recv_records(&mut bin, 300, &mut texts).await;
    // 300 snapshot records queued at once: 256 per frame at most.
    assert_eq!(frames, 2);
    let mut got: Vec<u32> = records.iter().map(|r| r.id).collect();
    got.sort();
    let mut want: Vec<u32> = ids.values().copied().collect();
    want.sort();
    assert_eq!(got, want);
    assert!(
        records
            .iter()
            .all(|r| r.snap && r.kind == 1 && r.f == [1_500_000_000, 2_000_000_000, 66, 0])
    );
    drop((bin, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_wins_when_both_are_offered() {
    let h = start(config());
    let a = h.addr();
    for offer in [
        "tickwire.json.v1, tickwire.bin.v1",
        "tickwire.bin.v1, tickwire.json.v1",
        "chat, tickwire.bin.v1",
    ] {
        binary_subscriber(a, offer).await;
    }
    // Two header lines count as one list.
    let (mut ws, head) = connect_with(
        a,
        "/v1/stream",
        "Sec-WebSocket-Protocol: tickwire.json.v1\r\nSec-WebSocket-Protocol: tickwire.bin.v1\r\n",
        None,
    )
    .await;
    assert_eq!(ws.protocol.as_deref(), Some("tickwire.bin.v1"), "{head}");
    assert_eq!(ws.recv_json().await["protocol"], "tickwire.bin.v1");
    // JSON alone is still JSON.
    let (mut ws, _) = connect_with(
        a,
        "/v1/stream",
        "Sec-WebSocket-Protocol: tickwire.json.v1\r\n",
        None,
    )
    .await;
    assert_eq!(ws.protocol.as_deref(), Some("tickwire.json.v1"));
    assert_eq!(ws.recv_json().await["protocol"], "tickwire.json.v1");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_subscribers_are_told_ids_of_new_symbols() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("OLD", 1, "1", "1")]).await;
    let mut bin = binary_subscriber(addr, "tickwire.bin.v1").await;
    let reply = bin.subscribe(1, &["*"], None, false).await;
    let old_id = reply["ids"]["OLD"].as_u64().unwrap() as u32;

    publ.publish(&[
        trade("OLD", 2, "1", "1"),
        trade("NEW", 3, "2", "1"),
        quote("NEW", 4, "1.5", "2.5"),
        trade("NEW", 5, "2", "1"),
    ])
    .await;
    // Collect everything in arrival order: texts and records interleaved.
    let mut events: Vec<Result<Value, Record>> = Vec::new();
    while events.iter().filter(|e| e.is_err()).count() < 4 {
        match bin.recv().await {
            Msg::Text(t) => events.push(Ok(serde_json::from_str(&t).unwrap())),
            Msg::Binary(p) => events.extend(decode(&p).into_iter().map(Err)),
            m => panic!("{m:?}"),
        }
    }
    let new_id = h.ingest().symbols().lookup("NEW").unwrap().0;
    let announce = json!({"type":"symbol","sym":"NEW","id":new_id});
    assert_eq!(
        events
            .iter()
            .filter(|e| e.as_ref().ok() == Some(&announce))
            .count(),
        1,
        "announced once: {events:?}"
    );
    assert_eq!(events.len(), 5, "nothing but the announcement: {events:?}");
    let pos = events.iter().position(|e| e.is_ok()).unwrap();
    let first_new = events
        .iter()
        .position(|e| matches!(e, Err(r) if r.id == new_id))
        .unwrap();
    assert!(
        pos < first_new,
        "announcement precedes the first record: {events:?}"
    );
    assert!(matches!(&events[0], Err(r) if r.id == old_id && r.seq == 2));

    // A symbol subscribed by name later is not announced again.
    let reply = bin.subscribe(2, &["NEW"], None, false).await;
    assert_eq!(reply["ids"]["NEW"].as_u64(), Some(u64::from(new_id)));
    publ.publish(&[trade("NEW", 6, "3", "1")]).await;
    match bin.recv().await {
        Msg::Binary(p) => assert_eq!(decode(&p)[0].seq, 3),
        m => panic!("{m:?}"),
    }
    drop((bin, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}
