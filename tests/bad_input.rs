//! Bad input, one test each: the offender gets a clear error or the right
//! close code, the server never panics, and nobody else is affected.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A bystander that must keep working whatever the others do.
async fn bystander(addr: std::net::SocketAddr) -> RawWs {
    let mut b = subscriber(addr).await;
    b.subscribe(1, &["BY"], None, false).await;
    b
}

async fn bystander_still_served(addr: std::net::SocketAddr, b: &mut RawWs, seq: u64) {
    let mut p = publisher(addr).await;
    p.publish(&[trade("BY", seq, "1", "1")]).await;
    let v = b.recv_json().await;
    assert_eq!(
        (v["sym"].as_str(), v["seq"].as_u64()),
        (Some("BY"), Some(seq))
    );
}

async fn expect_error(ws: &mut RawWs, code: &str, id: Value) -> String {
    let e = ws.recv_json().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["id"], id, "{e}");
    let msg = e["message"].as_str().unwrap().to_string();
    assert!(msg.len() > 10, "the message says what was wrong: {msg}");
    msg
}

async fn still_usable(ws: &mut RawWs) {
    ws.send_text(r#"{"op":"ping","id":77}"#).await;
    let (pong, _) = ws.recv_until("pong").await;
    assert_eq!(pong["id"], 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_messages_get_errors_and_the_connection_stays_open() {
    let mut c = config();
    c.max_keys_per_connection = 4;
    let h = start(c);
    let mut b = bystander(h.addr()).await;
    let mut ws = subscriber(h.addr()).await;
    let cases: &[(&str, &str, Value, &str)] = &[
        ("{not json", "bad_json", Value::Null, "not valid JSON"),
        ("[1,2,3]", "bad_json", Value::Null, "JSON object"),
        (r#"{"op":"fly","id":5}"#, "unknown_op", json!(5), "fly"),
        (
            r#"{"op":"subscribe","id":6,"symbols":"AAPL"}"#,
            "bad_field",
            json!(6),
            "symbols",
        ),
        (
            r#"{"op":"subscribe","id":7,"symbols":["A"],"channels":["trades"]}"#,
            "bad_field",
            json!(7),
            "channels",
        ),
        (
            r#"{"op":"subscribe","id":8,"symbols":["A"],"snapshot":1}"#,
            "bad_field",
            json!(8),
            "snapshot",
        ),
        (
            r#"{"op":"ping","id":"nine"}"#,
            "bad_field",
            Value::Null,
            "id",
        ),
        (
            r#"{"op":"subscribe","id":10,"symbols":["BAD SYM"]}"#,
            "invalid_symbol",
            json!(10),
            "BAD SYM",
        ),
        (
            r#"{"op":"subscribe","id":11,"symbols":["ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"]}"#,
            "invalid_symbol",
            json!(11),
            "33 characters",
        ),
        (
            r#"{"op":"subscribe","id":12,"symbols":["A","B","C"]}"#,
            "too_many_symbols",
            json!(12),
            "limit is 4",
        ),
    ];
    for (msg, code, id, needle) in cases {
        ws.send_text(msg).await;
        let m = expect_error(&mut ws, code, id.clone()).await;
        assert!(m.contains(needle), "{msg} -> {m}");
        still_usable(&mut ws).await;
    }
    // A refused subscribe changed nothing: two keys still fit.
    ws.subscribe(13, &["A"], None, false).await;
    // A binary frame where JSON is expected.
    ws.send_frame(true, 2, b"\x01\x02").await;
    let m = expect_error(&mut ws, "bad_json", Value::Null).await;
    assert!(m.contains("binary"), "{m}");
    still_usable(&mut ws).await;
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_floods_are_rate_limited_then_closed_with_1008() {
    let mut c = config();
    c.control_rate_per_sec = 1;
    c.control_burst = 5;
    let h = start(c);
    let mut b = bystander(h.addr()).await;
    let mut ws = subscriber(h.addr()).await;
    for i in 0..200 {
        ws.send_text(&format!(r#"{{"op":"ping","id":{i}}}"#)).await;
    }
    let (code, _, texts) = ws.recv_close().await;
    assert_eq!(code, Some(1008));
    let kinds: Vec<Value> = texts
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap()["type"].clone())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "pong").count(),
        5,
        "the burst is served"
    );
    assert!(texts.iter().any(|t| t.contains("rate_limited")));
    ws.expect_eof().await;
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

/// Binary frames and oversized messages are answered like control
/// messages, so they cost tokens like them: a flood of them is refused
/// `rate_limited` once the burst is spent, then closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_oversized_messages_spend_rate_limit_tokens() {
    let mut c = config();
    c.control_rate_per_sec = 1;
    c.control_burst = 3;
    c.max_message_bytes = 100;
    c.max_keys_per_connection = 1;
    let h = start(c);
    let mut ws = subscriber(h.addr()).await;
    for _ in 0..2 {
        ws.send_frame(true, 2, b"\x01").await;
    }
    ws.send_text(&format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(500)))
        .await;
    ws.send_frame(true, 2, b"\x01").await;
    let codes: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(ws.recv_json().await["code"].clone());
        }
        v
    };
    assert_eq!(
        codes,
        ["bad_json", "bad_json", "message_too_large", "rate_limited"],
        "the fourth is over the burst of 3"
    );
    for _ in 0..150 {
        ws.send_frame(true, 2, b"\x01").await;
    }
    assert_eq!(ws.recv_close().await.0, Some(1008));
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_read_through_and_answered() {
    let mut c = config();
    // A subscriber's cap adds room for a subscribe naming its whole key
    // allowance (35 bytes a key): 954 + 2 × 35 = 1024.
    c.max_message_bytes = 954;
    c.max_keys_per_connection = 2;
    let h = start(c);
    let mut b = bystander(h.addr()).await;
    let mut ws = subscriber(h.addr()).await;
    // A 4 MB frame, 4,000 times the cap, sent in pieces: skipped as it
    // arrives, then answered, and the connection reads on.
    let size = 4usize << 20;
    let mut head = vec![0x81u8, 0x80 | 127];
    head.extend_from_slice(&(size as u64).to_be_bytes());
    head.extend_from_slice(&[0; 4]); // mask key 0: the payload as is
    use tokio::io::AsyncWriteExt;
    ws.stream.write_all(&head).await.unwrap();
    let body = format!(
        r#"{{"op":"ping","id":4,"pad":"{}"}}"#,
        " ".repeat(size - 29)
    );
    assert_eq!(body.len(), size);
    for piece in body.as_bytes().chunks(64 * 1024) {
        ws.stream.write_all(piece).await.unwrap();
    }
    let e = ws.recv_json().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("message_too_large"), Some(4)),
        "{e}"
    );
    let m = e["message"].as_str().unwrap();
    assert!(m.contains(&size.to_string()) && m.contains("1024"), "{m}");
    ws.send_text(r#"{"op":"ping","id":5}"#).await;
    assert_eq!(ws.recv_json().await["id"], 5);
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_are_reassembled_under_the_cap() {
    let mut c = config();
    // A subscriber's cap adds room for a subscribe naming its whole key
    // allowance (35 bytes a key): 954 + 2 × 35 = 1024.
    c.max_message_bytes = 954;
    c.max_keys_per_connection = 2;
    let h = start(c);
    let mut b = bystander(h.addr()).await;
    // A small fragmented message works.
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(false, 1, br#"{"op":"pi"#).await;
    ws.send_frame(true, 9, b"interleaved ping").await;
    ws.send_frame(false, 0, br#"ng","id""#).await;
    ws.send_frame(true, 0, br#":3}"#).await;
    assert_eq!(ws.recv().await, Msg::Pong(b"interleaved ping".to_vec()));
    let (pong, _) = ws.recv_until("pong").await;
    assert_eq!(pong["id"], 3);
    // Fragments adding up past the cap, each being small: answered when
    // the message ends, with its id (in the first fragment).
    ws.send_frame(false, 1, br#"{"id":8,"op":"ping","x":""#)
        .await;
    ws.send_frame(false, 0, &[b' '; 600]).await;
    ws.send_frame(false, 0, &[b' '; 600]).await;
    ws.send_frame(true, 0, br#""}"#).await;
    let (e, _) = ws.recv_until("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("message_too_large"), Some(8)),
        "{e}"
    );
    ws.send_text(r#"{"op":"ping","id":9}"#).await;
    assert_eq!(ws.recv_until("pong").await.0["id"], 9);
    drop(ws);
    // A continuation with nothing to continue: 1002.
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(true, 0, b"orphan").await;
    assert_eq!(ws.recv_close().await.0, Some(1002));
    // A data frame inside a fragmented message: 1002.
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(false, 1, b"{").await;
    ws.send_frame(true, 1, b"{}").await;
    assert_eq!(ws.recv_close().await.0, Some(1002));
    bystander_still_served(h.addr(), &mut b, 1).await;
    assert_no_leaks_except(&h, 1).await;
    h.shutdown();
}

/// Like `assert_no_leaks`, with `subs` subscribers (bystanders) still open.
async fn assert_no_leaks_except(h: &tickwire::server::ServerHandle, subs: i64) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = h.stats().clone();
    eventually("only the bystander left, nothing queued", || {
        s.subscribers.load(Relaxed) == subs
            && s.queued_bytes.load(Relaxed) == 0
            && s.pending_ticks.load(Relaxed) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_closed_with_1007() {
    let h = start(config());
    let mut b = bystander(h.addr()).await;
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(true, 1, b"{\"op\":\"ping\xff\"}").await;
    assert_eq!(ws.recv_close().await.0, Some(1007));
    ws.expect_eof().await;
    // Invalid UTF-8 split across fragments too.
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(false, 1, b"{\"a\":\"\xe2\x82").await;
    ws.send_frame(true, 0, b"\x28\"}").await;
    assert_eq!(ws.recv_close().await.0, Some(1007));
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_violations_are_closed_with_1002() {
    let h = start(config());
    let mut b = bystander(h.addr()).await;
    for bytes in [
        encode_frame(true, 3, b"reserved opcode"),
        {
            let mut f = encode_frame(true, 1, b"{}");
            f[0] |= 0x40; // RSV1 without an extension
            f
        },
        encode_frame(false, 9, b"fragmented ping"),
        encode_frame(true, 9, &[0u8; 126]),
        encode_frame(true, 8, &999u16.to_be_bytes()),
        // fastwebsockets 0.10 lets these through; `framing::FrameGuard` does not.
        vec![0x81, 0x02, b'{', b'}'],        // an unmasked client frame
        encode_frame(true, 10, &[0u8; 126]), // a pong over 125 bytes
        {
            // A close over 125 bytes (a valid code and a long reason).
            let mut p = 1000u16.to_be_bytes().to_vec();
            p.extend_from_slice(&[b'x'; 124]);
            encode_frame(true, 8, &p)
        },
    ] {
        let mut ws = subscriber(h.addr()).await;
        use tokio::io::AsyncWriteExt;
        ws.stream.write_all(&bytes).await.unwrap();
        let (code, _, _) = ws.recv_close().await;
        assert_eq!(code, Some(1002), "for frame {:02x?}", &bytes[..2]);
    }
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_published_ticks_are_refused_and_reach_nobody() {
    let h = start(config());
    let mut sub = subscriber(h.addr()).await;
    sub.subscribe(1, &["*"], None, false).await;
    let mut p = publisher(h.addr()).await;
    for (bad, needle) in [
        ("{oops", "bad_json"),
        (
            r#"{"type":"trade","sym":"X","ts":1,"px":"abc","qty":1}"#,
            "px",
        ),
        (
            r#"{"type":"trade","sym":"X","ts":1,"px":1.0000000001,"qty":1}"#,
            "9 decimal places",
        ),
        (
            r#"{"type":"quote","sym":"X","ts":1,"bid":1,"bsz":1,"ask":1}"#,
            "asz",
        ),
        (
            r#"{"type":"trade","sym":"BAD SYM","ts":1,"px":1,"qty":1}"#,
            "BAD SYM",
        ),
        (
            r#"{"type":"trade","sym":"X","ts":"soon","px":1,"qty":1}"#,
            "ts",
        ),
        (
            r#"[{"type":"trade","sym":"X","ts":1,"px":1,"qty":1,"colour":"red"}]"#,
            "tick 1 of 1",
        ),
    ] {
        p.send_text(bad).await;
        let e = p.recv_json().await;
        assert_eq!(e["type"], "error");
        let text = e.to_string();
        assert!(text.contains(needle), "{bad} -> {text}");
    }
    p.send_frame(true, 2, b"\x00").await;
    assert_eq!(p.recv_json().await["code"], "bad_json");
    // The publisher is still usable, and the subscriber's first tick is the good one.
    p.publish(&[trade("GOOD", 1, "1", "1")]).await;
    let v = sub.recv_json().await;
    assert_eq!(
        (v["sym"].as_str(), v["seq"].as_u64()),
        (Some("GOOD"), Some(1))
    );
    assert_eq!(
        h.stats()
            .publish_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let mut c = config();
    c.handshake_timeout = Duration::from_millis(300);
    let h = start(c);
    let mut b = bystander(h.addr()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    partial
        .write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for s in [&mut silent, &mut partial] {
        let mut buf = [0u8; 1024];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "the server dropped the idle connection");
    }
    // Both are counted for the operator (`tickwire_handshake_timeouts_total`).
    let timeouts = &h.stats().handshake_timeouts;
    eventually("two handshake timeouts counted", || {
        timeouts.load(std::sync::atomic::Ordering::Relaxed) == 2
    })
    .await;
    bystander_still_served(h.addr(), &mut b, 1).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_frame_is_cleaned_up() {
    let h = start(config());
    let mut b = bystander(h.addr()).await;
    for _ in 0..20 {
        let mut ws = subscriber(h.addr()).await;
        ws.subscribe(1, &["BY", "*"], None, true).await;
        let f = encode_frame(true, 1, br#"{"op":"ping","id":1}"#);
        use tokio::io::AsyncWriteExt;
        ws.stream.write_all(&f[..7]).await.unwrap();
        drop(ws);
    }
    // A publisher vanishing mid-frame too.
    let mut p = publisher(h.addr()).await;
    use tokio::io::AsyncWriteExt;
    p.stream
        .write_all(&encode_frame(true, 1, br#"{"type":"trade","sym":"BY""#)[..12])
        .await
        .unwrap();
    drop(p);
    bystander_still_served(h.addr(), &mut b, 1).await;
    assert_no_leaks_except(&h, 1).await;
    h.shutdown();
}
