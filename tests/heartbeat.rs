//! The opt-in heartbeat (`?heartbeat=MS`): the server's clock and ingest
//! position, as JSON, as a binary record and as an SSE event, over real
//! sockets; clients that did not ask get none.

mod common;

use common::*;
use tickwire::model::tick::wall_clock_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn near_now(ns: u64) -> bool {
    wall_clock_ns().abs_diff(ns) < 60_000_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_heartbeats_carry_the_clock_and_the_ingest_position() {
    // Positions are counted: no bars beside the trades (their number
    // depends on the once-a-second limit).
    let h = start(tickwire::server::config::Config {
        bars: false,
        ..config()
    });
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("BUSY", 1, "1", "1"), trade("BUSY", 2, "1", "1")])
        .await;
    let (mut ws, head) = connect_with(addr, "/v1/stream?heartbeat=100", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.recv_json().await["type"], "hello");
    // Subscribed to a symbol that never trades: heartbeats still come.
    ws.subscribe(1, &["QUIET"], None, false).await;
    let (a, _) = ws.recv_until("heartbeat").await;
    assert!(near_now(a["time"].as_u64().unwrap()), "{a}");
    assert_eq!(a["pos"], 2, "two ticks sequenced so far: {a}");
    // Ticks of other symbols move the position, not the client's stream.
    publ.publish(&[
        trade("BUSY", 3, "1", "1"),
        trade("BUSY", 4, "1", "1"),
        trade("BUSY", 5, "1", "1"),
    ])
    .await;
    let (b, other) = ws.recv_until("heartbeat").await;
    assert!(other.is_empty(), "only heartbeats: {other:?}");
    let (c, _) = ws.recv_until("heartbeat").await;
    assert!(b["pos"].as_u64() >= a["pos"].as_u64());
    assert_eq!(c["pos"], 5, "{c}");
    assert!(
        c["time"].as_u64() > a["time"].as_u64(),
        "the clock moves: {a} {c}"
    );

    // A client that did not ask gets none: after a pause, the reply to its
    // ping is the next thing it reads.
    let mut plain = subscriber(addr).await;
    plain.subscribe(1, &["QUIET"], None, false).await;
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    plain
        .send_json(serde_json::json!({"op":"ping","id":7}))
        .await;
    assert_eq!(plain.recv_json().await["type"], "pong");
    drop((ws, plain, publ));
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_sse_heartbeats_and_a_bad_interval_is_refused() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[quote("Q", 1, "1", "2")]).await;
    // Binary: a 64-byte record of kind 3, pos where ticks have seq.
    let (mut bin, head) = connect_with(
        addr,
        "/v1/stream?heartbeat=100",
        "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n",
        None,
    )
    .await;
    assert!(head.contains("tickwire.bin.v1"), "{head}");
    let rec = loop {
        if let Msg::Binary(b) = bin.recv().await {
            break b;
        }
    };
    assert_eq!(rec.len(), 64);
    assert_eq!(rec[0], 3, "kind 3: heartbeat");
    assert_eq!(u64::from_le_bytes(rec[8..16].try_into().unwrap()), 1);
    assert!(near_now(u64::from_le_bytes(
        rec[16..24].try_into().unwrap()
    )));

    // SSE: `event: heartbeat`, after the response head.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/sse?symbols=QUIET&heartbeat=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !String::from_utf8_lossy(&got)
        .contains("event: heartbeat\ndata: {\"type\":\"heartbeat\",\"time\":")
    {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(String::from_utf8_lossy(&got).contains("\"pos\":1}"));

    // Out of range or not a number: 400 naming the range, on both endpoints.
    let (_, head) = connect_with(addr, "/v1/stream?heartbeat=5", "", None).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let body = http_get(addr, "/v1/sse?symbols=A&heartbeat=1s").await;
    assert!(
        body.starts_with("HTTP/1.1 400") && body.contains("100 to 60000"),
        "{body}"
    );
    drop(publ);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_from_a_heartbeats_pos_and_gets_exactly_the_ticks_after_it() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("HB", 1, "1", "1"), trade("HB", 2, "1", "1")])
        .await;
    let (mut ws, _) = connect_with(addr, "/v1/stream?heartbeat=100", "", None).await;
    let hello = ws.recv_json().await;
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    ws.subscribe(1, &["HB"], None, false).await;
    let (beat, _) = ws.recv_until("heartbeat").await;
    let pos = beat["pos"].as_u64().unwrap();
    assert!(pos >= 2, "{beat}");
    // Gone; three more trades while away.
    drop(ws);
    publ.publish(&[
        trade("HB", 3, "1", "1"),
        trade("HB", 4, "1", "1"),
        trade("HB", 5, "1", "1"),
    ])
    .await;
    let (mut ws, _) = connect_with(addr, "/v1/stream", "", None).await;
    ws.recv_json().await;
    ws.send_json(serde_json::json!({"op":"subscribe","id":2,"symbols":["HB"],
        "channels":["trade"],"resume":{"epoch":epoch,"offset":pos}}))
        .await;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let v = ws.recv_json().await;
        if v["type"] == "trade" {
            assert_ne!(v["snap"], true, "{v}");
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seqs,
        [3, 4, 5],
        "exactly the ticks after the heartbeat's pos"
    );
}
