//! `?ts=string`: `ts` and `rx` as JSON strings, exact for JavaScript's
//! `JSON.parse` (they exceed 2^53), on /v1/stream and /v1/sse, over real
//! sockets; other clients keep numbers.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Not a multiple of 256: a double would round it.
const TS: u64 = 1_795_645_005_495_781_431;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_asking_ts_string_gets_exact_timestamps_as_strings() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("EXACT", TS, "1.5", "2")]).await;

    let (mut exact, head) = connect_with(addr, "/v1/stream?ts=string", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(exact.recv_json().await["type"], "hello");
    let mut plain = subscriber(addr).await;
    exact.subscribe(1, &["EXACT"], None, true).await;
    plain.subscribe(1, &["EXACT"], None, false).await;
    // The snapshot, then a live tick, both with strings.
    let snap = exact.recv_json().await;
    assert_eq!(snap["snap"], true, "{snap}");
    assert_eq!(snap["ts"], TS.to_string(), "{snap}");
    let rx: u64 = snap["rx"]
        .as_str()
        .expect("rx is a string")
        .parse()
        .unwrap();
    assert!(rx > 1_700_000_000_000_000_000);
    publ.publish(&[trade("EXACT", TS + 1, "1.6", "3")]).await;
    let live = exact.recv_json().await;
    assert_eq!(live["ts"], (TS + 1).to_string(), "{live}");
    assert!(live["rx"].is_string(), "{live}");
    assert_eq!(live["px"].to_string(), "1.6", "prices stay numbers");
    assert_eq!(live["seq"], 2, "seq stays a number");
    // The other subscriber still gets numbers.
    let v = plain.recv_json().await;
    assert_eq!(v["ts"].as_u64(), Some(TS + 1), "{v}");
    drop((exact, plain, publ));
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_takes_ts_string_and_a_bad_value_is_refused_with_the_choices() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[quote("EXACT", TS, "1", "2")]).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/sse?symbols=EXACT&ts=string HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let want = format!("\"ts\":\"{TS}\",\"rx\":\"");
    while !String::from_utf8_lossy(&got).contains(&want) {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the snapshot event in time")
            .unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // Bad values: 400 with the choices, on both endpoints.
    let (_, head) = connect_with(addr, "/v1/stream?ts=ms", "", None).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let body = http_get(addr, "/v1/sse?symbols=A&ts=ms").await;
    assert!(body.contains("400") && body.contains("ts=string"), "{body}");
    drop(publ);
}
