//! Connection limits, one test each: total and per-address WebSocket
//! connections and publishers are refused with 503 (and a reason) before the
//! upgrade and their places come back when connections end; a silent client
//! is pinged and, when it does not answer, closed with 1008.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upgrade request from `source` (a loopback address); returns the
/// response head and body as text, and the stream (kept open by the caller).
async fn upgrade_from(
    source: &str,
    addr: SocketAddr,
    path: &str,
) -> (String, tokio::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    (String::from_utf8_lossy(&buf[..n]).to_string(), s)
}

async fn refused(source: &str, addr: SocketAddr, path: &str, needle: &str) {
    let (resp, _) = upgrade_from(source, addr, path).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains(needle), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_with_503() {
    let mut c = config();
    c.max_connections_per_ip = 2;
    let h = start(c);
    let a = subscriber(h.addr()).await;
    let _b = publisher(h.addr()).await;
    refused(
        "127.0.0.1",
        h.addr(),
        "/v1/stream",
        "127.0.0.1 already has 2",
    )
    .await;
    // Another address is not affected.
    let (resp, _other) = upgrade_from("127.0.0.2", h.addr(), "/v1/stream").await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    // Plain HTTP is not counted.
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A place comes back when a connection ends.
    drop(a);
    let h2 = h.addr();
    let mut ok = false;
    for _ in 0..100 {
        let (resp, _s) = upgrade_from("127.0.0.1", h2, "/v1/stream").await;
        if resp.starts_with("HTTP/1.1 101") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the closed connection's place never came back");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_total_are_limited_with_503() {
    let mut c = config();
    c.max_connections = 2;
    let h = start(c);
    let _a = subscriber(h.addr()).await;
    let (resp, _b) = upgrade_from("127.0.0.2", h.addr(), "/v1/stream").await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    refused(
        "127.0.0.3",
        h.addr(),
        "/v1/stream",
        "limit of 2 WebSocket connections",
    )
    .await;
    refused(
        "127.0.0.3",
        h.addr(),
        "/v1/publish",
        "limit of 2 WebSocket connections",
    )
    .await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_limited_with_503_and_subscribers_are_not() {
    let mut c = config();
    c.max_publishers = 1;
    let h = start(c);
    let mut p = publisher(h.addr()).await;
    refused(
        "127.0.0.1",
        h.addr(),
        "/v1/publish",
        "limit of 1 publishers",
    )
    .await;
    let _s = subscriber(h.addr()).await;
    p.sync().await;
    drop(p);
    let mut ok = false;
    for _ in 0..100 {
        let (resp, _s) = upgrade_from("127.0.0.1", h.addr(), "/v1/publish").await;
        if resp.starts_with("HTTP/1.1 101") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the publisher's place never came back");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_pinged_then_closed_with_1008() {
    let mut c = config();
    c.idle_timeout = Duration::from_millis(600);
    let h = start(c);
    let start = tokio::time::Instant::now();
    let mut silent = subscriber(h.addr()).await;
    let mut alive = subscriber(h.addr()).await;
    // The one that answers every ping stays open for several timeouts.
    let answering = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(2000);
        let mut pings = 0;
        while tokio::time::Instant::now() < until {
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(100), alive.try_recv()).await
            {
                match m {
                    Msg::Ping(p) => {
                        alive.send_frame(true, 10, &p).await;
                        pings += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        alive.send_text(r#"{"op":"ping","id":5}"#).await;
        let (pong, _) = alive.recv_until("pong").await;
        assert_eq!(pong["id"], 5);
        pings
    });
    assert!(matches!(silent.recv().await, Msg::Ping(_)));
    let (code, reason, _) = silent.recv_close().await;
    assert_eq!(code, Some(1008));
    assert!(reason.contains("idle"), "{reason}");
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    let pings = answering.await.unwrap();
    assert!(pings >= 3, "pinged {pings} times");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_symbol_table_refuses_new_symbols() {
    let mut c = config();
    c.max_symbols = 2;
    let h = start(c);
    let mut ws = subscriber(h.addr()).await;
    ws.subscribe(1, &["A", "B"], None, false).await;
    ws.send_text(r#"{"op":"subscribe","id":2,"symbols":["C"]}"#)
        .await;
    let e = ws.recv_json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("too_many_symbols")),
        "{e}"
    );
    // That was the budget of names nobody has published (see
    // tests/symbol_churn.rs); publishers have their own. Once A and B have
    // had ticks, a publisher's tick of a new symbol is refused; known
    // ones pass.
    let mut p = publisher(h.addr()).await;
    p.publish(&[trade("A", 1, "1", "1"), trade("B", 1, "1", "1")])
        .await;
    assert_eq!(ws.recv_json().await["sym"], "A");
    assert_eq!(ws.recv_json().await["sym"], "B");
    p.send_json(serde_json::Value::Array(vec![trade("D", 1, "1", "1")]))
        .await;
    let e = p.recv_json().await;
    assert_eq!(e["code"], "too_many_symbols", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("already tracks 2"),
        "{e}"
    );
    p.publish(&[trade("A", 2, "1", "1")]).await;
    assert_eq!(ws.recv_json().await["sym"], "A");
    h.shutdown();
}
