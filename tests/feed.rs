//! End-to-end behaviour of the feed over real sockets on 127.0.0.1.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_with_ids() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    let mut sub = subscriber(addr).await;

    let reply = sub.subscribe(7, &["AAPL", "MSFT"], None, true).await;
    assert_eq!(reply["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(reply["channels"], json!(["trade", "quote"]));
    let ids = reply["ids"].as_object().unwrap();
    assert!(ids["AAPL"].is_u64() && ids["MSFT"].is_u64() && ids["AAPL"] != ids["MSFT"]);

    // Exact decimals pass through untouched.
    publ.send_text(r#"{"type":"trade","sym":"AAPL","ts":1700000000123456789,"px":189.23,"qty":100,"side":"B"}"#).await;
    publ.sync().await;
    let t = match sub.recv().await {
        Msg::Text(t) => t,
        m => panic!("{m:?}"),
    };
    assert!(
        t.starts_with(r#"{"type":"trade","sym":"AAPL","seq":1,"ts":1700000000123456789,"rx":"#),
        "{t}"
    );
    assert!(t.ends_with(r#","px":189.23,"qty":100,"side":"B"}"#), "{t}");
    let v: Value = serde_json::from_str(&t).unwrap();
    let rx = v["rx"].as_u64().unwrap();
    let now = tickwire::model::tick::wall_clock_ns();
    assert!(
        rx <= now && now - rx < 10_000_000_000,
        "rx is the server's wall clock"
    );

    sub.send_json(json!({"op":"unsubscribe","id":8,"symbols":["AAPL"]}))
        .await;
    let (u, _) = sub.recv_until("unsubscribed").await;
    assert_eq!(
        u,
        json!({"type":"unsubscribed","id":8,"symbols":["AAPL"],"channels":["trade","quote"]})
    );

    // AAPL no longer arrives; MSFT still does.
    publ.publish(&[
        trade("AAPL", 2, "1", "1"),
        quote("AAPL", 3, "1", "2"),
        trade("MSFT", 4, "5", "1"),
    ])
    .await;
    let v = sub.recv_json().await;
    assert_eq!(
        (v["sym"].as_str(), v["type"].as_str()),
        (Some("MSFT"), Some("trade"))
    );

    // Channel filter.
    let mut q = subscriber(addr).await;
    q.subscribe(1, &["MSFT"], Some(&["quote"]), false).await;
    publ.publish(&[trade("MSFT", 5, "5", "1"), quote("MSFT", 6, "4.99", "5.01")])
        .await;
    let v = q.recv_json().await;
    assert_eq!(v["type"], "quote");
    assert_eq!(v["seq"], 1);
    drop((sub, q, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_contiguous_for_a_fast_client() {
    let h = start(config());
    let mut publ = publisher(h.addr()).await;
    let mut sub = subscriber(h.addr()).await;
    sub.subscribe(1, &["ES"], None, false).await;
    let n = 3000u64;
    // The client keeps up (each chunk of 100 fits the socket buffers, and
    // the next is sent once it has been read), so it must see every tick in
    // seq order with no gap, even though ticks arrive in bursts.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let reader = tokio::spawn(async move {
        for expect in 1..=n {
            let v = sub.recv_json().await;
            assert_eq!(v["seq"].as_u64(), Some(expect));
            assert_eq!(v["ts"].as_u64(), Some(expect));
            if expect % 100 == 0 {
                tx.send(()).await.unwrap();
            }
        }
    });
    for chunk in (1..=n).collect::<Vec<_>>().chunks(100) {
        let ticks: Vec<Value> = chunk
            .iter()
            .map(|i| trade("ES", *i, &format!("{}.25", 5000 + i), "1"))
            .collect();
        publ.send_json(Value::Array(ticks)).await;
        rx.recv().await.expect("reader alive");
    }
    reader.await.unwrap();
    assert_eq!(
        h.stats()
            .ticks_dropped_stale
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_on_subscribe_carries_the_last_value() {
    let h = start(config());
    let mut publ = publisher(h.addr()).await;
    publ.publish(&[
        trade("IBM", 1, "180", "10"),
        trade("IBM", 2, "181.5", "20"),
        quote("IBM", 3, "181.4", "181.6"),
    ])
    .await;

    let mut sub = subscriber(h.addr()).await;
    sub.subscribe(1, &["IBM", "NEW"], None, true).await;
    let mut snaps = [sub.recv_json().await, sub.recv_json().await];
    snaps.sort_by_key(|v| v["type"].as_str().unwrap().to_string());
    assert_eq!(snaps[0]["type"], "quote");
    assert_eq!(snaps[0]["snap"], true);
    assert_eq!(snaps[0]["seq"], 1);
    assert_eq!(snaps[1]["type"], "trade");
    assert_eq!(
        (snaps[1]["seq"].as_u64(), snaps[1]["snap"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(snaps[1]["ts"], 2);

    // Live ticks follow the snapshot, without the flag and without repeats.
    publ.publish(&[trade("IBM", 4, "182", "1")]).await;
    let v = sub.recv_json().await;
    assert_eq!((v["seq"].as_u64(), v.get("snap")), (Some(3), None));

    // snapshot:false gets no snapshot.
    let mut plain = subscriber(h.addr()).await;
    plain.subscribe(2, &["IBM"], None, false).await;
    publ.publish(&[quote("IBM", 5, "182", "182.1")]).await;
    let v = plain.recv_json().await;
    assert_eq!(
        (v["type"].as_str(), v["seq"].as_u64(), v.get("snap")),
        (Some("quote"), Some(2), None)
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_receives_present_and_future_symbols() {
    let h = start(config());
    let mut publ = publisher(h.addr()).await;
    publ.publish(&[trade("OLD", 1, "1", "1")]).await;
    let mut sub = subscriber(h.addr()).await;
    let reply = sub.subscribe(1, &["*"], None, true).await;
    assert_eq!(reply["symbols"], json!(["*"]));
    assert!(reply["ids"]["OLD"].is_u64());
    let snap = sub.recv_json().await;
    assert_eq!(
        (snap["sym"].as_str(), snap["snap"].as_bool()),
        (Some("OLD"), Some(true))
    );
    publ.publish(&[trade("NEW.SYM", 2, "2", "1"), quote("OLD", 3, "1", "2")])
        .await;
    let a = sub.recv_json().await;
    let b = sub.recv_json().await;
    assert_eq!(
        (a["sym"].as_str(), a["type"].as_str()),
        (Some("NEW.SYM"), Some("trade"))
    );
    assert_eq!(
        (b["sym"].as_str(), b["type"].as_str()),
        (Some("OLD"), Some("quote"))
    );

    // Subscribing by name as well never duplicates a tick.
    sub.subscribe(2, &["OLD"], None, true).await;
    publ.publish(&[trade("OLD", 4, "1", "1"), trade("ZZ", 5, "1", "1")])
        .await;
    let a = sub.recv_json().await;
    let b = sub.recv_json().await;
    assert_eq!(
        (a["sym"].as_str(), a["seq"].as_u64()),
        (Some("OLD"), Some(2))
    );
    assert_eq!(b["sym"], "ZZ");

    // Unsubscribing `*` keeps the named subscription only.
    sub.send_json(json!({"op":"unsubscribe","id":3,"symbols":["*"]}))
        .await;
    sub.recv_until("unsubscribed").await;
    publ.publish(&[trade("ZZ", 6, "1", "1"), trade("OLD", 7, "1", "1")])
        .await;
    let a = sub.recv_json().await;
    assert_eq!(
        (a["sym"].as_str(), a["seq"].as_u64()),
        (Some("OLD"), Some(3))
    );
    h.shutdown();
}

/// 500 subscribers, each on a seeded random set of keys: each gets exactly
/// its keys, every tick of them in order, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_subscribers_get_exactly_their_keys() {
    let h = start(config());
    let addr = h.addr();
    const SYMBOLS: usize = 40;
    const PER_KEY: u64 = 10;
    let syms: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i:02}")).collect();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(500);
    for c in 0..500 {
        let mut mine: Vec<&str> = Vec::new();
        while mine.len() < 4 {
            let s = syms[(rand() % SYMBOLS as u64) as usize].as_str();
            if !mine.contains(&s) {
                mine.push(s);
            }
        }
        let channels: Vec<&str> = match rand() % 3 {
            0 => vec!["trade"],
            1 => vec!["quote"],
            _ => vec!["trade", "quote"],
        };
        let expected: HashSet<(String, String)> = mine
            .iter()
            .flat_map(|s| channels.iter().map(move |c| (s.to_string(), c.to_string())))
            .chain([("ZEND".to_string(), "trade".to_string())])
            .collect();
        let mut mine: Vec<String> = mine.iter().map(|s| s.to_string()).collect();
        mine.push("ZEND".into());
        let channels: Vec<String> = channels.iter().map(|s| s.to_string()).collect();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = subscriber(addr).await;
            let subs: Vec<&str> = mine.iter().map(String::as_str).collect();
            let chans: Vec<&str> = channels.iter().map(String::as_str).collect();
            let mut chans_with_trade = chans.clone();
            if !chans_with_trade.contains(&"trade") {
                chans_with_trade.push("trade");
            }
            ws.subscribe(1, &subs[..subs.len() - 1], Some(&chans), false)
                .await;
            ws.subscribe(2, &["ZEND"], Some(&["trade"]), false).await;
            ready.send(()).await.unwrap();
            let mut seen: BTreeMap<(String, String), u64> = BTreeMap::new();
            loop {
                let v = ws.recv_json().await;
                let key = (
                    v["sym"].as_str().unwrap().to_string(),
                    v["type"].as_str().unwrap().to_string(),
                );
                assert!(
                    expected.contains(&key),
                    "client {c} got {key:?}, not subscribed"
                );
                let last = seen.entry(key.clone()).or_insert(0);
                assert_eq!(
                    v["seq"].as_u64().unwrap(),
                    *last + 1,
                    "client {c} {key:?} out of order"
                );
                *last += 1;
                if key.0 == "ZEND" {
                    break;
                }
            }
            // ZEND was published last: everything before it has arrived.
            for k in &expected {
                let want = if k.0 == "ZEND" { 1 } else { PER_KEY };
                assert_eq!(
                    seen.get(k).copied().unwrap_or(0),
                    want,
                    "client {c} key {k:?}"
                );
            }
        }));
    }
    for _ in 0..500 {
        ready_rx.recv().await.unwrap();
    }
    let mut publ = publisher(addr).await;
    for round in 1..=PER_KEY {
        let mut ticks = Vec::new();
        for s in &syms {
            ticks.push(trade(s, round, "10.5", "3"));
            ticks.push(quote(s, round, "10.4", "10.6"));
        }
        publ.send_json(Value::Array(ticks)).await;
    }
    publ.publish(&[trade("ZEND", 99, "1", "1")]).await;
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("clients finish")
            .unwrap();
    }
    drop(publ);
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_ops_answer_with_ids() {
    let h = start(config());
    let mut publ = publisher(h.addr()).await;
    publ.publish(&[trade("B", 1, "1", "1"), trade("A", 1, "1", "1")])
        .await;
    let mut sub = subscriber(h.addr()).await;
    sub.send_text(r#"{"op":"symbols","id":3}"#).await;
    assert_eq!(
        sub.recv_json().await,
        json!({"type":"symbols","id":3,"symbols":["A","B"]})
    );
    sub.send_text(r#"{"op":"ping","id":4}"#).await;
    let pong = sub.recv_json().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_i64()),
        (Some("pong"), Some(4))
    );
    assert!(pong["ts"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    // Subscribing to a symbol not seen yet is allowed; /v1/symbols lists only seen ones.
    sub.subscribe(5, &["NOT.YET"], None, true).await;
    let body = http_get(h.addr(), "/v1/symbols").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with(r#"["A","B"]"#), "{body}");
    h.shutdown();
}

async fn http_raw(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // Read until EOF, or until the server goes quiet (keep-alive answers).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_and_refusals() {
    let h = start(config());
    let a = h.addr();
    let r = http_get(a, "/healthz").await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
    let r = http_get(a, "/nope").await;
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("no such endpoint: /nope"),
        "{r}"
    );
    for path in ["/v1/stream", "/v1/publish"] {
        let r = http_get(a, path).await;
        assert!(
            r.starts_with("HTTP/1.1 426") && r.contains("WebSocket endpoint"),
            "{r}"
        );
    }
    let r = http_raw(
        a,
        "POST /v1/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // Wrong WebSocket version: 426 with the version we speak.
    let r = http_raw(
        a,
        "GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 426")
            && r.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{r}"
    );
    // Missing key: 400 saying so.
    let r = http_raw(a, "GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("Sec-WebSocket-Key"),
        "{r}"
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation() {
    let h = start(config());
    let a = h.addr();
    // Offered: answered with the one picked.
    let (_ws, head) = connect_with(
        a,
        "/v1/stream",
        "Sec-WebSocket-Protocol: tickwire.json.v1\r\n",
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"));
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: tickwire.json.v1"),
        "{head}"
    );
    // None offered: no header at all (RFC 6455), JSON spoken.
    let (mut ws, head) = connect_with(a, "/v1/stream", "", None).await;
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    assert_eq!(ws.recv_json().await["protocol"], "tickwire.json.v1");
    // Only unknown ones: refused before the upgrade, with the reason.
    let r = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
        s.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, mqtt\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("chat, mqtt"),
        "{r}"
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ping_and_close_handshake() {
    let h = start(config());
    let mut ws = subscriber(h.addr()).await;
    ws.send_frame(true, 9, b"hi").await;
    assert_eq!(ws.recv().await, Msg::Pong(b"hi".to_vec()));
    ws.send_close(1000, "bye").await;
    assert_eq!(ws.recv().await, Msg::Close(Some(1000), "bye".into()));
    ws.expect_eof().await;
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_with_1001() {
    let h = start(config());
    let mut subs = Vec::new();
    for _ in 0..5 {
        let mut s = subscriber(h.addr()).await;
        s.subscribe(1, &["*"], None, false).await;
        subs.push(s);
    }
    let mut publ = publisher(h.addr()).await;
    let stopper = std::thread::spawn(move || h.shutdown());
    for s in subs.iter_mut().chain(std::iter::once(&mut publ)) {
        let (code, reason, _) = s.recv_close().await;
        assert_eq!(code, Some(1001));
        assert_eq!(reason, "server shutting down");
        s.send_close(1001, "").await;
        s.expect_eof().await;
    }
    stopper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_works() {
    let mut c = config();
    c.listen = "[::1]:0".parse().unwrap();
    let Ok(h) = tickwire::server::start(c) else {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    };
    let mut publ = publisher(h.addr()).await;
    let mut sub = subscriber(h.addr()).await;
    sub.subscribe(1, &["X"], None, false).await;
    publ.publish(&[trade("X", 1, "1", "1")]).await;
    assert_eq!(sub.recv_json().await["sym"], "X");
    h.shutdown();
}

/// Frames sent in the same write as the upgrade request reach the server
/// inside hyper's read buffer; the session must read them first, then the
/// socket (and the connection must not keep hyper's buffer for its life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_upgrade_request_are_read_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(config());
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let mut bytes = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        h.addr()
    )
    .into_bytes();
    bytes.extend(encode_frame(
        true,
        1,
        br#"{"op":"subscribe","id":7,"symbols":["EARLY"],"snapshot":false}"#,
    ));
    bytes.extend(encode_frame(true, 1, br#"{"op":"ping","id":8}"#));
    s.write_all(&bytes).await.unwrap();
    // Everything the server sends: the 101, hello, subscribed, pong.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(&got).contains(r#""type":"pong","id":8"#) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&got)
        );
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let sub = text
        .find(r#""type":"subscribed","id":7"#)
        .expect("subscribed");
    assert!(sub < text.find(r#""type":"pong""#).unwrap());
    h.shutdown();
}
