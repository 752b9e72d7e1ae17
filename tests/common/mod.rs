//! Test harness: a server on 127.0.0.1:0 and a raw WebSocket client that
//! builds its frames by hand, so tests can send exactly the bytes they mean
//! (bad UTF-8, oversized headers, half frames) and see every server frame.
#![allow(dead_code)]

mod ledger;
mod process;
/// The scale-out harness (NATS, nodes, nginx), used by tests/scaleout_*.rs.
pub mod scaleout;

#[allow(unused_imports)]
pub use ledger::*;
#[allow(unused_imports)]
pub use process::*;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tickwire::server::config::{Config, FeedSource};
use tickwire::server::{self, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

/// A test config: loopback, ephemeral port, no built-in feed. Every test
/// client connects from 127.0.0.1, so the per-address limit is raised to the
/// total one (tests/limits.rs sets it where it is under test).
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        max_connections_per_ip: Config::default().max_connections,
        ..Config::default()
    }
}

pub fn start(config: Config) -> ServerHandle {
    server::start(config).expect("server starts")
}

/// Waits until `f` holds, polling; panics with `what` after `WAIT`.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Gauges that must return to zero once every client is gone.
pub async fn assert_no_leaks(h: &ServerHandle) {
    let s = h.stats().clone();
    let gauges = || {
        [
            s.subscribers.load(Ordering::Relaxed),
            s.publishers.load(Ordering::Relaxed),
            s.queued_bytes.load(Ordering::Relaxed),
            s.pending_ticks.load(Ordering::Relaxed),
            s.pending_book_levels.load(Ordering::Relaxed),
        ]
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while gauges() != [0; 5] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leak: [subscribers, publishers, queued_bytes, pending_ticks, pending_book_levels] = {:?}",
            gauges()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub protocol: Option<String>,
}

/// Performs the opening handshake; returns the client and the response head.
pub async fn connect_with(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
    rcvbuf: Option<usize>,
) -> (RawWs, String) {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .unwrap();
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n as u32).unwrap();
    }
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut tmp))
            .await
            .expect("handshake answer")
            .unwrap();
        assert!(
            n > 0,
            "server closed during handshake: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let protocol = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-protocol:")
        })
        .map(|l| l.split(':').nth(1).unwrap().trim().to_string());
    let rest = buf[head_end..].to_vec();
    (
        RawWs {
            stream,
            buf: rest,
            protocol,
        },
        head,
    )
}

/// Connects to `/v1/stream` and consumes the `hello`.
pub async fn subscriber(addr: SocketAddr) -> RawWs {
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let hello = ws.recv_json().await;
    assert_eq!(hello["type"], "hello");
    ws
}

/// Connects to `/v1/publish` and consumes the `hello`.
pub async fn publisher(addr: SocketAddr) -> RawWs {
    let (mut ws, head) = connect_with(addr, "/v1/publish", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.recv_json().await["type"], "hello");
    ws
}

pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 65535 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

impl RawWs {
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&encode_frame(fin, opcode, payload))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.send_frame(true, 1, s.as_bytes()).await;
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        self.send_frame(true, 8, &p).await;
    }

    /// Reads more bytes; `false` on EOF or reset.
    /// Reads raw bytes, unparsed, until `marker` appears in what was
    /// read: a reader that costs next to nothing while a server floods it.
    /// The frames stay buffered for `recv` afterwards.
    pub async fn read_raw_until(&mut self, marker: &[u8]) {
        let mut from = self.buf.len();
        while !self.buf[from.saturating_sub(marker.len())..]
            .windows(marker.len())
            .any(|w| w == marker)
        {
            from = self.buf.len();
            let more = tokio::time::timeout(WAIT, self.fill()).await;
            assert!(
                more.expect("bytes within the wait"),
                "EOF before the marker"
            );
        }
    }

    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// The next whole frame, or `None` at EOF.
    pub async fn try_recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 2 {
                let b0 = self.buf[0];
                let b1 = self.buf[1];
                assert_eq!(b0 & 0x80, 0x80, "server frames are unfragmented (FIN set)");
                assert_eq!(b1 & 0x80, 0, "server frames are never masked");
                let (len, off) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n @ 0..=125 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= off + len {
                    let payload: Vec<u8> = self.buf[off..off + len].to_vec();
                    self.buf.drain(..off + len);
                    return Some(match b0 & 0x0f {
                        1 => Msg::Text(String::from_utf8(payload).expect("server text is UTF-8")),
                        2 => Msg::Binary(payload),
                        8 => {
                            let code = (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            let reason =
                                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                                    .to_string();
                            Msg::Close(code, reason)
                        }
                        9 => Msg::Ping(payload),
                        10 => Msg::Pong(payload),
                        op => panic!("unexpected opcode {op}"),
                    });
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    pub async fn recv(&mut self) -> Msg {
        tokio::time::timeout(WAIT, self.try_recv())
            .await
            .expect("a frame within the wait")
            .expect("a frame, not EOF")
    }

    /// The next text frame as JSON.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Msg::Text(t) => serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("bad JSON from server ({e}): {t}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads JSON messages until one of `type` arrives; returns it and what came before.
    pub async fn recv_until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let v = self.recv_json().await;
            if v["type"] == kind {
                return (v, before);
            }
            before.push(v);
        }
    }

    /// Reads until the close frame; returns its code and the texts before it.
    pub async fn recv_close(&mut self) -> (Option<u16>, String, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            match self.recv().await {
                Msg::Close(code, reason) => return (code, reason, texts),
                Msg::Text(t) => texts.push(t),
                _ => {}
            }
        }
    }

    /// After a close frame: the server shuts the TCP stream down.
    pub async fn expect_eof(&mut self) {
        let r = tokio::time::timeout(WAIT, async {
            loop {
                if !self.fill().await {
                    return;
                }
            }
        })
        .await;
        assert!(r.is_ok(), "server did not close the TCP connection");
    }

    pub async fn subscribe(
        &mut self,
        id: i64,
        symbols: &[&str],
        channels: Option<&[&str]>,
        snapshot: bool,
    ) -> Value {
        let mut req =
            serde_json::json!({"op":"subscribe","id":id,"symbols":symbols,"snapshot":snapshot});
        if let Some(ch) = channels {
            req["channels"] = serde_json::json!(ch);
        }
        self.send_json(req).await;
        let (reply, _) = self.recv_until("subscribed").await;
        assert_eq!(reply["id"], id);
        reply
    }

    /// Publishes ticks and waits until the server has ingested them (ping/pong).
    pub async fn publish(&mut self, ticks: &[Value]) {
        self.send_json(Value::Array(ticks.to_vec())).await;
        self.sync().await;
    }

    /// Round trip: a pong means everything sent before was handled.
    pub async fn sync(&mut self) {
        self.send_text(r#"{"op":"ping","id":424242}"#).await;
        let (pong, before) = self.recv_until("pong").await;
        assert_eq!(pong["id"], 424242);
        assert!(
            before.iter().all(|v| v["type"] != "error"),
            "unexpected errors: {before:?}"
        );
    }
}

/// A server whose clients fall behind quickly: a `cap`-byte write buffer
/// per client and a 4 KiB socket send buffer, evicting clients behind for
/// longer than `evict_after`.
pub fn start_with_small_buffers(cap: usize, evict_after: Duration) -> ServerHandle {
    let mut c = config();
    c.client_buffer_bytes = cap;
    c.socket_send_buffer = 4096;
    c.evict_after = evict_after;
    start(c)
}

/// A client that will not read: a 4 KiB receive buffer, connected to
/// `/v1/stream` and past its `hello`. The caller subscribes it.
pub async fn stalled_client(addr: SocketAddr) -> RawWs {
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", Some(4096)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.recv_json().await; // hello
    ws
}

/// Reads an evicted slow client to its end: the last text is `lagging`
/// (behind at least `behind_ms`), then close 4000 "slow consumer". Returns
/// every text before the close (what was in flight, then the notice).
pub async fn expect_evicted(ws: &mut RawWs, behind_ms: u64) -> Vec<String> {
    let (code, reason, texts) = ws.recv_close().await;
    assert_eq!(code, Some(4000), "closed as a slow consumer");
    assert_eq!(reason, "slow consumer");
    let lagging: Value = serde_json::from_str(texts.last().expect("a lagging notice")).unwrap();
    assert_eq!(lagging["type"], "lagging");
    assert!(
        lagging["behind_ms"].as_u64().unwrap() >= behind_ms,
        "{lagging}"
    );
    texts
}

pub fn trade(sym: &str, ts: u64, px: &str, qty: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"type":"trade","sym":"{sym}","ts":{ts},"px":{px},"qty":{qty},"side":"B"}}"#
    ))
    .unwrap()
}

pub fn quote(sym: &str, ts: u64, bid: &str, ask: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"type":"quote","sym":"{sym}","ts":{ts},"bid":{bid},"bsz":100,"ask":{ask},"asz":200}}"#
    ))
    .unwrap()
}

/// Makes `cmd` start with a soft open-file limit of at most `soft`, as a
/// shell's default would be, so the server has to raise its own.
pub fn with_soft_fd_limit(cmd: &mut std::process::Command, soft: u64) {
    tickwire::sys::start_with_fd_limit(cmd, soft);
}

/// `GET path` on a connection of its own, read to EOF (tickwire ends every
/// plain HTTP response): the whole response, head and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect for HTTP");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("a whole response")
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// `GET /v1/symbols?ref=1`: the symbols with their reference data, parsed.
pub async fn symbols_with_ref(addr: SocketAddr) -> Value {
    let body = http_get(addr, "/v1/symbols?ref=1").await;
    let json = body.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Scrapes `/metrics` (checking it is a 200 in Prometheus text format):
/// `series → value`, a series written as exposed (`name{label="v"}`).
pub async fn scrape_metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let r = http_get(addr, "/metrics").await;
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

/// Waits (at most 20 s: a debug build under load starts slowly) for a
/// `tickwire serve --addr-file PATH` child to write its address there, and
/// returns it.
pub fn wait_for_addr_file(path: &std::path::Path) -> SocketAddr {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Written whole by the server, but read until it parses all the same.
        if let Some(addr) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not start: no address in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
