//! TLS (`--tls-cert`/`--tls-key`): `wss://` and `https://` with a CA and
//! server certificate generated here (rcgen). Clients are tokio-rustls
//! trusting only that CA, and tokio-tungstenite over them for WebSocket.

mod common;
mod test_ca;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A test CA, a `localhost` certificate it signed, and a client that
/// trusts only that CA.
struct Pki {
    server: Arc<ServerConfig>,
    connector: TlsConnector,
    cert_pem: String,
    key_pem: String,
    /// The CA's certificate, for clients given a `--ca-file`.
    ca_pem: String,
}

fn pki() -> Pki {
    let ca = test_ca::test_ca();
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let mut client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        server: ca.server,
        connector: TlsConnector::from(Arc::new(client)),
        cert_pem: ca.cert_pem,
        key_pem: ca.key_pem,
        ca_pem: ca.ca_pem,
    }
}

fn tls_config(pki: &Pki) -> tickwire::server::config::Config {
    let mut c = config();
    c.tls = Some(pki.server.clone());
    c
}

/// A TLS connection to `localhost` (127.0.0.1), optionally with a small
/// receive buffer.
async fn tls_connect(addr: SocketAddr, pki: &Pki, rcvbuf: Option<usize>) -> TlsStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n as u32).unwrap();
    }
    let tcp = socket.connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    tokio::time::timeout(
        WAIT,
        pki.connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// A `wss://` client (or `ws://`, over `TcpStream`, to compare).
struct Wss<S = TlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
}

impl Wss {
    /// Connects to `path` and consumes the `hello`.
    async fn connect(addr: SocketAddr, pki: &Pki, path: &str, rcvbuf: Option<usize>) -> Wss {
        let tls = tls_connect(addr, pki, rcvbuf).await;
        Wss::handshake(format!("wss://localhost:{}{path}", addr.port()), tls).await
    }
}

impl Wss<TcpStream> {
    async fn connect_plain(addr: SocketAddr, path: &str) -> Wss<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Wss::handshake(format!("ws://{addr}{path}"), tcp).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wss<S> {
    async fn handshake(url: String, stream: S) -> Wss<S> {
        let (ws, response) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("WebSocket handshake");
        assert_eq!(response.status(), 101);
        let mut w = Wss { ws };
        let hello = w.recv_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        w
    }

    async fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// The next message, within the wait; `None` at the end of the stream.
    async fn next(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a message within the wait")
            .and_then(Result::ok)
    }

    async fn recv_json(&mut self) -> Value {
        loop {
            match self.next().await.expect("a message, not the end") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    async fn recv_until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let v = self.recv_json().await;
            if v["type"] == kind {
                return (v, before);
            }
            before.push(v);
        }
    }

    async fn subscribe(&mut self, symbols: &[&str]) {
        self.send_json(serde_json::json!({"op":"subscribe","id":1,"symbols":symbols}))
            .await;
        let (reply, _) = self.recv_until("subscribed").await;
        assert_eq!(reply["id"], 1);
    }

    /// Publishes and waits until the server has handled it (ping/pong).
    async fn publish(&mut self, ticks: Value) {
        self.send_json(ticks).await;
        self.sync().await;
    }

    async fn sync(&mut self) {
        self.send_json(serde_json::json!({"op":"ping","id":7}))
            .await;
        let (_, before) = self.recv_until("pong").await;
        assert!(before.iter().all(|v| v["type"] != "error"), "{before:?}");
    }

    /// Reads to the Close frame: its code and reason, and the texts before.
    async fn recv_close(&mut self) -> (Option<u16>, String, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            match self.next().await.expect("a Close frame before the end") {
                Message::Close(frame) => {
                    return match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string(), texts),
                        None => (None, String::new(), texts),
                    };
                }
                Message::Text(t) => texts.push(t.to_string()),
                _ => {}
            }
        }
    }
}

const KEYS: usize = 50;

fn round(r: u64) -> Value {
    Value::Array(
        (0..KEYS)
            .map(|k| trade(&format!("K{k:02}"), r, &format!("{r}.5"), "1"))
            .collect(),
    )
}

/// Reads `rounds` rounds on a fast client, checking per-key seq has no gap;
/// reports after each round.
fn fast_reader(
    mut ws: Wss,
    rounds: u64,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for i in 1..=rounds * KEYS as u64 {
            let v = ws.recv_json().await;
            let seq = last
                .entry(v["sym"].as_str().unwrap().to_string())
                .or_insert(0);
            assert_eq!(
                v["seq"].as_u64().unwrap(),
                *seq + 1,
                "fast client saw a gap"
            );
            *seq += 1;
            if i % KEYS as u64 == 0 {
                tx.send(()).await.unwrap();
            }
        }
    });
    (task, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_subscriber_gets_every_tick_in_per_key_seq_order() {
    let pki = pki();
    let h = start(tls_config(&pki));
    assert!(h.is_tls());
    let addr = h.addr();
    let mut sub = Wss::connect(addr, &pki, "/v1/stream", None).await;
    sub.subscribe(&["*"]).await;
    let mut publ = Wss::connect(addr, &pki, "/v1/publish", None).await;
    let rounds = 20u64;
    for r in 1..=rounds {
        publ.publish(round(r)).await;
    }
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..rounds * KEYS as u64 {
        let v = sub.recv_json().await;
        assert_eq!(v["type"], "trade", "{v}");
        let seq = last
            .entry(v["sym"].as_str().unwrap().to_string())
            .or_insert(0);
        assert_eq!(v["seq"].as_u64().unwrap(), *seq + 1, "{v}");
        *seq += 1;
    }
    assert_eq!(last.len(), KEYS);
    assert!(last.values().all(|&s| s == rounds));
    // Everything was flushed: nothing is left queued for the client.
    assert_eq!(h.stats().queued_bytes.load(Ordering::Relaxed), 0);
    drop((sub, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_client_is_coalesced_and_bounded_while_a_fast_one_keeps_up() {
    let pki = pki();
    let mut c = tls_config(&pki);
    c.client_buffer_bytes = 16 * 1024;
    c.socket_send_buffer = 4096;
    c.evict_after = Duration::from_secs(60);
    let h = start(c);
    let addr = h.addr();

    let mut stalled = Wss::connect(addr, &pki, "/v1/stream", Some(4096)).await;
    stalled.subscribe(&["*"]).await;
    let mut fast = Wss::connect(addr, &pki, "/v1/stream", None).await;
    fast.subscribe(&["*"]).await;
    let rounds = 200u64;
    let (reader, mut progress) = fast_reader(fast, rounds);

    let mut publ = Wss::connect(addr, &pki, "/v1/publish", None).await;
    let (mut max_pending, mut max_queued) = (0i64, 0i64);
    for r in 1..=rounds {
        publ.send_json(round(r)).await;
        tokio::time::timeout(WAIT, progress.recv())
            .await
            .expect("fast TLS client delayed by the stalled one")
            .unwrap();
        max_pending = max_pending.max(h.stats().pending_ticks.load(Ordering::Relaxed));
        max_queued = max_queued.max(h.stats().queued_bytes.load(Ordering::Relaxed));
    }
    reader.await.unwrap();
    let dropped = h.stats().ticks_dropped_stale.load(Ordering::Relaxed);
    // Had rustls taken the stalled client's batches without bound, its
    // outbox would never fill and nothing would be coalesced.
    assert!(
        dropped > 5_000,
        "stale ticks were dropped, not buffered: {dropped}"
    );
    assert!(
        max_pending <= KEYS as i64,
        "pending slots {max_pending} > one per key"
    );
    assert!(
        max_queued <= 16 * 1024 + 12 * 1024,
        "queued bytes {max_queued} beyond the cap"
    );

    // It drains: the newest value of every key, seq increasing per key.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut got = 0;
    while last.len() < KEYS || last.values().any(|&s| s < rounds) {
        let v = stalled.recv_json().await;
        let seq = v["seq"].as_u64().unwrap();
        let prev = last
            .entry(v["sym"].as_str().unwrap().to_string())
            .or_insert(0);
        assert!(seq > *prev, "reordered or repeated: {v}");
        *prev = seq;
        got += 1;
    }
    assert!(got < rounds as usize * KEYS, "coalesced ({got} ticks)");
    assert_eq!(h.stats().clients_evicted.load(Ordering::Relaxed), 0);
    drop((stalled, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_behind_too_long_gets_lagging_then_4000() {
    let pki = pki();
    let mut c = tls_config(&pki);
    c.client_buffer_bytes = 8 * 1024;
    c.socket_send_buffer = 4096;
    c.evict_after = Duration::from_millis(300);
    let h = start(c);
    let addr = h.addr();
    let mut stalled = Wss::connect(addr, &pki, "/v1/stream", Some(4096)).await;
    stalled.subscribe(&["*"]).await;
    let mut fast = Wss::connect(addr, &pki, "/v1/stream", None).await;
    fast.subscribe(&["*"]).await;
    let rounds = 40u64;
    let (reader, mut progress) = fast_reader(fast, rounds);
    let mut publ = Wss::connect(addr, &pki, "/v1/publish", None).await;
    for r in 1..=rounds {
        publ.send_json(round(r)).await;
        tokio::time::timeout(WAIT, progress.recv())
            .await
            .expect("fast TLS client delayed")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    reader.await.unwrap();
    let (code, reason, texts) = stalled.recv_close().await;
    assert_eq!(code, Some(4000), "closed as a slow consumer");
    assert_eq!(reason, "slow consumer");
    let lagging: Value = serde_json::from_str(texts.last().expect("a lagging notice")).unwrap();
    assert_eq!(lagging["type"], "lagging");
    assert!(lagging["behind_ms"].as_u64().unwrap() >= 300, "{lagging}");
    assert_eq!(h.stats().clients_evicted.load(Ordering::Relaxed), 1);
    drop(publ);
    assert_no_leaks(&h).await;
    h.shutdown();
}

/// One HTTPS request; the server closes after it. Returns the whole
/// response as text and whether it ended with TLS close_notify.
async fn https_get(addr: SocketAddr, pki: &Pki, path: &str) -> (String, bool) {
    let mut s = tls_connect(addr, pki, None).await;
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let clean = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("response within the wait")
        .is_ok();
    (String::from_utf8(out).unwrap(), clean)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_healthz_metrics_symbols_and_the_page() {
    let pki = pki();
    let h = start(tls_config(&pki));
    let (health, clean) = https_get(h.addr(), &pki, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    assert!(clean, "the response ends with close_notify");
    let (metrics, _) = https_get(h.addr(), &pki, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("tickwire_tls_handshakes_failed_total 0"),
        "{metrics}"
    );
    let (symbols, _) = https_get(h.addr(), &pki, "/v1/symbols").await;
    assert!(
        symbols.starts_with("HTTP/1.1 200") && symbols.ends_with("\r\n\r\n[]"),
        "{symbols}"
    );
    let (page, _) = https_get(h.addr(), &pki, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let (missing, _) = https_get(h.addr(), &pki, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_https_streams_ticks() {
    let pki = pki();
    // The event ids below count trades alone; built bars would take
    // offsets of their own (docs/PROTOCOL.md "Bars").
    let mut config = tls_config(&pki);
    config.bars = false;
    let h = start(config);
    let addr = h.addr();
    let mut s = tls_connect(addr, &pki, None).await;
    s.write_all(b"GET /v1/sse?symbols=SSE1&channels=trade HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut read_until = async |s: &mut TlsStream<TcpStream>, needle: &str| {
        while !String::from_utf8_lossy(&got).contains(needle) {
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {needle:?} within the wait: {}",
                        String::from_utf8_lossy(&got)
                    )
                })
                .unwrap();
            assert!(n > 0, "EOF: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&tmp[..n]);
        }
        String::from_utf8_lossy(&got).to_string()
    };
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    // The subscription is in place once the head is out.
    let mut publ = Wss::connect(addr, &pki, "/v1/publish", None).await;
    publ.publish(Value::Array(vec![
        trade("SSE1", 1, "10.5", "1"),
        trade("SSE1", 2, "11.5", "1"),
    ]))
    .await;
    // Ids are EPOCH:OFFSET: the two ticks are offsets 1 and 2.
    let text = read_until(&mut s, ":2\n\n").await;
    assert!(text.contains(":1\n\n"), "{text}");
    assert!(text.contains(r#""px":11.5"#), "{text}");
    drop((s, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_the_tls_port_fails_cleanly_and_others_are_unaffected() {
    let pki = pki();
    let h = start(tls_config(&pki));
    let addr = h.addr();
    let mut sub = Wss::connect(addr, &pki, "/v1/stream", None).await;
    sub.subscribe(&["P"]).await;

    // A plain ws:// client on the TLS port: refused, never upgraded.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("the server ends the plaintext connection");
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "no HTTP answer in plaintext: {answer:?}"
    );
    eventually("the failed handshake is counted", || {
        h.stats().tls_handshakes_failed.load(Ordering::Relaxed) == 1
    })
    .await;

    // The TLS subscriber is still served.
    let mut publ = Wss::connect(addr, &pki, "/v1/publish", None).await;
    publ.publish(Value::Array(vec![trade("P", 1, "1.5", "1")]))
        .await;
    let v = sub.recv_json().await;
    assert_eq!((v["sym"].as_str(), v["seq"].as_u64()), (Some("P"), Some(1)));
    drop((sub, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_dropped_by_the_handshake_timeout() {
    let pki = pki();
    let mut c = tls_config(&pki);
    c.handshake_timeout = Duration::from_millis(500);
    let h = start(c);
    let addr = h.addr();
    // A TLS record header announcing a ClientHello that never comes.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    // Meanwhile other clients complete their handshakes (the accept loop and
    // the worker are not held up).
    let (health, _) = https_get(addr, &pki, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stalled.read(&mut buf))
        .await
        .expect("dropped within the wait")
        .unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "closed, not answered");
    assert!(
        waited >= Duration::from_millis(450),
        "dropped only at the timeout ({waited:?})"
    );
    // (Counted just after the socket is dropped.)
    eventually("the stalled handshake is counted", || {
        h.stats().tls_handshakes_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    h.shutdown();
}

#[test]
fn unusable_tls_files_are_errors_naming_the_file() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    assert!(tickwire::net::tls::load(&cert, &key).is_ok());

    let missing = dir.path().join("missing.pem");
    let e = tickwire::net::tls::load(&missing, &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
    let e = tickwire::net::tls::load(&cert, &missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-key") && e.contains("missing.pem"), "{e}");
    // The key where the certificate should be, and the other way round.
    let e = tickwire::net::tls::load(&key, &key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no certificate") && e.contains("key.pem"), "{e}");
    let e = tickwire::net::tls::load(&cert, &cert)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no private key") && e.contains("cert.pem"),
        "{e}"
    );
    let e = tickwire::net::tls::load(&cert, &other_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cert.pem") && e.contains("other-key.pem") && e.contains("key"),
        "{e}"
    );
}

/// Runs `tickwire serve ARGS` and returns its exit status and stderr, or
/// kills it after a few seconds (it started) and returns `None`.
fn serve_briefly(args: &[&std::ffi::OsStr]) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-feed"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tickwire");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return Some((status, err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_tls_file_is_a_startup_error_naming_it() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, &pki.key_pem).unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let (status, err) = serve_briefly(&[
        "--tls-cert".as_ref(),
        missing.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ])
    .expect("the server refuses to start");
    assert!(!status.success());
    assert!(
        err.contains("--tls-cert") && err.contains(&*missing.to_string_lossy()),
        "{err}"
    );
    // Either flag alone is refused too.
    let (status, err) = serve_briefly(&["--tls-key".as_ref(), key.as_os_str()])
        .expect("the server refuses to start");
    assert!(!status.success());
    assert!(err.contains("--tls-cert"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_tls_flags_speaks_wss() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, addr_file) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("addr"),
    );
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tickwire");
    let addr = wait_for_addr(&addr_file);
    let result = tokio::time::timeout(WAIT * 2, async {
        let mut ws = Wss::connect(addr, &pki, "/v1/stream", None).await;
        ws.subscribe(&["*"]).await;
        // The bundled recording plays: a live tick arrives over wss.
        let v = ws.recv_json().await;
        assert!(
            ["trade", "quote"].contains(&v["type"].as_str().unwrap()),
            "{v}"
        );
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.expect("a tick over wss from the binary");
}

fn wait_for_addr(path: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Per-tick latency (`rx` to receipt) and burst delivery time, `ws://`
/// against `wss://` on the same machine. A measurement, not a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --release --test tls -- --ignored --nocapture measure"]
async fn measure_wss_against_ws() {
    let pki = pki();
    for tls in [false, true] {
        let mut c = if tls { tls_config(&pki) } else { config() };
        c.workers = 1;
        let h = start(c);
        let addr = h.addr();
        let paced = 2_000u64;
        let burst = 50_000u64;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u64>, Duration, u64)>(1);
        let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<Instant>(1);
        macro_rules! measure {
            ($sub:expr) => {{
                let mut sub = $sub;
                sub.subscribe(&["*"]).await;
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(paced as usize);
                    for _ in 0..paced {
                        let v = sub.recv_json().await;
                        let now = tickwire::model::tick::wall_clock_ns();
                        lat.push(now.saturating_sub(v["rx"].as_u64().unwrap()));
                    }
                    // Until it holds the last tick of every burst key (a
                    // client that falls behind gets coalesced, not all).
                    let started = go_rx.recv().await.unwrap();
                    let mut last: BTreeMap<String, u64> = BTreeMap::new();
                    let mut got = 0u64;
                    while last.len() < 100 || last.values().any(|&s| s < burst / 100) {
                        let v = sub.recv_json().await;
                        last.insert(
                            v["sym"].as_str().unwrap().into(),
                            v["seq"].as_u64().unwrap(),
                        );
                        got += 1;
                    }
                    tx.send((lat, started.elapsed(), got)).await.unwrap();
                });
            }};
        }
        if tls {
            measure!(Wss::connect(addr, &pki, "/v1/stream", None).await);
        } else {
            measure!(Wss::connect_plain(addr, "/v1/stream").await);
        }
        // On a TLS port the publisher is TLS too.
        if tls {
            let mut p = Wss::connect(addr, &pki, "/v1/publish", None).await;
            run_publisher(&mut p, paced, burst, &go_tx).await;
        } else {
            let mut p = Wss::connect_plain(addr, "/v1/publish").await;
            run_publisher(&mut p, paced, burst, &go_tx).await;
        }
        let (mut lat, burst_time, got) = rx.recv().await.unwrap();
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] / 1000;
        eprintln!(
            "{}: {paced} paced ticks rx->client p50 {} us, p99 {} us, max {} us; burst of {burst} ticks on 100 keys: newest of every key after {:.1} ms, {got} ticks delivered",
            if tls { "wss" } else { "ws " },
            pct(0.5),
            pct(0.99),
            lat.last().unwrap() / 1000,
            burst_time.as_secs_f64() * 1e3,
        );
        h.shutdown();
    }
}

async fn run_publisher<S: AsyncRead + AsyncWrite + Unpin>(
    publ: &mut Wss<S>,
    paced: u64,
    burst: u64,
    go: &tokio::sync::mpsc::Sender<Instant>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 1..=paced {
        tick.tick().await;
        publ.send_json(Value::Array(vec![trade("L", i, "1.5", "1")]))
            .await;
    }
    publ.sync().await;
    go.send(Instant::now()).await.unwrap();
    for chunk in 0..burst / 100 {
        let ticks = (0..100)
            .map(|k| trade(&format!("B{k:02}"), chunk, "2.5", "1"))
            .collect();
        publ.send_json(Value::Array(ticks)).await;
    }
    publ.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_record_speak_wss_with_a_ca_file() {
    use tickwire::model::decimal::Fixed;
    use tickwire::model::speed::Speed;
    use tickwire::model::tick::{Event, NewTick, Side};
    use tickwire::recordings::connect::ClientTls;
    use tickwire::recordings::format::{RecordingWriter, read_all};
    use tickwire::recordings::record::{RecordProgress, record_via};
    use tickwire::recordings::replay::client::{ReplayError, ReplayOptions, replay};

    let pki = pki();
    let h = start(tls_config(&pki));
    let port = h.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let tls = ClientTls {
        ca_file: Some(ca.clone()),
    };
    // A small recording to play.
    let src = dir.path().join("in.twr");
    let mut w = RecordingWriter::create(&src).unwrap();
    let ticks: Vec<NewTick> = (0..50u64)
        .map(|i| NewTick {
            sym: "TLS1".into(),
            ts: 1_700_000_000_000_000_000 + i,
            event: Event::Trade {
                px: Fixed(100_000_000_000 + i as i64),
                qty: Fixed(1_000_000_000),
                side: Side::Buy,
            },
            book: None,
        })
        .collect();
    for t in &ticks {
        w.write(t).unwrap();
    }
    w.finish().unwrap();

    // record over wss:// (the name in the certificate is localhost).
    let progress = Arc::new(RecordProgress::default());
    let out = dir.path().join("out.twr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rec = tokio::spawn({
        let (progress, out, tls) = (progress.clone(), out.clone(), tls.clone());
        async move {
            record_via(
                &format!("wss://localhost:{port}"),
                &tls,
                &["TLS1".into()],
                &out,
                async {
                    let _ = stop_rx.await;
                },
                progress,
            )
            .await
        }
    });
    eventually("record subscribed over wss", || {
        progress.subscribed.load(Ordering::Acquire) == 1
    })
    .await;
    // replay over wss://.
    let mut opts = ReplayOptions::new(
        vec![src.clone()],
        format!("wss://localhost:{port}/v1/publish"),
        Speed::Max,
    );
    opts.tls = tls;
    assert_eq!(
        replay(&opts, std::future::pending()).await.unwrap().sent,
        50
    );
    eventually("50 ticks recorded over wss", || {
        progress.ticks.load(Ordering::Relaxed) == 50
    })
    .await;
    stop_tx.send(()).unwrap();
    rec.await.unwrap().unwrap();
    assert_eq!(read_all(&out).unwrap(), ticks);

    // Without the CA the server's certificate is not trusted: said so.
    opts.tls = ClientTls::default();
    let e = replay(&opts, std::future::pending()).await.unwrap_err();
    assert!(matches!(e, ReplayError::Connect(_)), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // A --ca-file that is not a certificate is named.
    std::fs::write(&ca, "not a certificate").unwrap();
    opts.tls = ClientTls { ca_file: Some(ca) };
    let e = replay(&opts, std::future::pending()).await.unwrap_err();
    assert!(
        e.to_string().contains("ca.pem") && e.to_string().contains("no certificate"),
        "{e}"
    );
    h.shutdown();
}
