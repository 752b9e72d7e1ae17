//! Scale-out behind a load balancer (nginx's stream module): a dead
//! gateway's clients move to the other one; with the PROXY protocol, the
//! per-address limit and the logs use the real client's address.
//!
//! Each runs a real `nats-server` (with JetStream) and `tickwire serve`
//! processes; the harness (and when a missing nats-server fails a test
//! rather than skip it: `TICKWIRE_REQUIRE_NATS`) is in
//! `tests/common/scaleout.rs`. The tests take one lock each: every one runs
//! a handful of processes, which on a 2-core machine is enough load
//! without running them together.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::scaleout::*;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateways_clients_move_through_the_load_balancer() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        ingest, gw1, gw2, ..
    } = deployment;
    let Some(lb) = Nginx::start(&[gw1.addr, gw2.addr]).await else {
        return;
    };
    let mut gateways = [Some(gw1), Some(gw2)];

    let mut c = subscriber(lb.addr()).await;
    c.subscribe(1, &["LB"], Some(&["trade"]), true).await;
    let mut p = publisher(ingest.addr).await;
    let batch: Vec<Value> = (1..=20)
        .map(|i| trade("LB", i, &format!("{i}"), "1"))
        .collect();
    p.publish(&batch).await;
    let seen = recv_ticks(&mut c, 20).await;
    let had = seen.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(had, 20);

    // Which gateway is it on? Kill that one.
    let mut on = None;
    for (i, g) in gateways.iter().enumerate() {
        let g = g.as_ref().unwrap();
        if metric(g.addr, "tickwire_connections{kind=\"subscriber\"}").await == 1.0 {
            on = Some(i);
        }
    }
    let on = on.expect("the client is on one of the gateways");
    gateways[on] = None; // SIGKILL
    c.expect_eof().await;

    // Published while the client is away.
    p.publish(&[trade("LB", 21, "21", "1"), trade("LB", 22, "22", "1")])
        .await;

    // Reconnect through the same address: nginx sends it to the survivor,
    // whose snapshot is never older than what the client had.
    let mut c = subscriber(lb.addr()).await;
    c.subscribe(2, &["LB"], Some(&["trade"]), true).await;
    let snap = recv_ticks(&mut c, 1).await.remove(0);
    assert_eq!(snap["snap"], true);
    assert!(snap["seq"].as_u64().unwrap() >= had, "{snap}");
    assert_eq!(snap["seq"], 22);
    let survivor = gateways[1 - on].as_ref().unwrap();
    assert_eq!(
        metric(survivor.addr, "tickwire_connections{kind=\"subscriber\"}").await,
        1.0
    );
    p.publish(&[trade("LB", 23, "23", "1")]).await;
    assert_eq!(recv_ticks(&mut c, 1).await[0]["seq"], 23);
}

/// A WebSocket upgrade to `/v1/stream` from source address `from` (any
/// 127/8 address: the loopback interface answers for all of them); returns
/// the socket, held open, and the response's status line.
async fn upgrade_from(from: &str, to: SocketAddr) -> (tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let status = read_head(&mut s).await;
    (s, status.lines().next().unwrap_or_default().to_owned())
}

/// Reads until the end of an HTTP response head (or EOF).
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    // A refusal's body follows its head: take what is there.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut tmp)).await {
        buf.extend_from_slice(&tmp[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Issue #15 item 4: behind nginx's stream module with `proxy_protocol on`,
/// the per-address limit and the logs use each client's own address; a v2
/// header works too; a header from an untrusted address, or none from a
/// trusted one, is refused with a 400 that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_with_proxy_protocol_limits_and_logs_use_the_real_client() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        "node",
        &[
            "--no-feed",
            "--max-connections-per-ip",
            "2",
            "--proxy-protocol-from",
            "127.0.0.1/32",
        ],
    )
    .await;
    let Some(lb) = Nginx::start_with(&[node.addr], "proxy_protocol on;").await else {
        return;
    };
    // Two clients from 127.0.0.2 fill that address's share; a third is
    // refused; 127.0.0.3 is someone else. Without the header all four
    // would be nginx (127.0.0.1), and the third and fourth refused.
    let (_a, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let (_b, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let (_c, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 503 "), "{s}");
    let (_d, s) = upgrade_from("127.0.0.3", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let deadline = Instant::now() + WAIT;
    while !node.log().contains("peer=127.0.0.3:") {
        assert!(
            Instant::now() < deadline,
            "no log line for 127.0.0.3: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // v2, straight from a trusted address (nginx sends v1 only).
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ("192.0.2.7:4000".parse::<SocketAddr>().unwrap(), node.addr),
    )
    .build()
    .unwrap();
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    s.write_all(&v2).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Trusted, but no header: refused, saying so.
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 400") && head.contains("no PROXY protocol header"),
        "{head}"
    );
    // A header from an address not trusted: refused, saying so.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(node.addr).await.unwrap();
    s.write_all(
        b"PROXY TCP4 198.51.100.1 127.0.0.1 5000 80\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 400") && head.contains("not in --proxy-protocol-from"),
        "{head}"
    );
}
