//! Server-Sent Events on /v1/sse (and the page at /), over real sockets with a hand-written
//! HTTP client: event format and ids, snapshots, heartbeats, 400s, resume
//! with Last-Event-ID, and a stalled client's bounded cost and eviction.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tickwire::server::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One SSE block: its `event`, `data`, `id` fields and comment lines.
#[derive(Debug, Default, Clone)]
struct Event {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<String>,
    comments: Vec<String>,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("data is JSON")
    }
}

struct Sse {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The stream's first event (`position`, or `resume` after a
    /// `Last-Event-ID`), read by `open`.
    first: Option<Event>,
    /// The `retry:` block the stream opened with, read by `open`.
    retry: Option<String>,
}

/// Sends `GET path`; returns the response head and the stream after it.
async fn open(addr: SocketAddr, path: &str, headers: &str, rcvbuf: Option<u32>) -> (String, Sse) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut sse = Sse {
        stream,
        buf: Vec::new(),
        first: None,
        retry: None,
    };
    let end = loop {
        if let Some(p) = sse.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        assert!(sse.fill().await, "EOF before the response head");
    };
    let head = String::from_utf8(sse.buf[..end].to_vec()).unwrap();
    sse.buf.drain(..end);
    if head.starts_with("HTTP/1.1 200") {
        // The stream opens with `retry: MS` alone, before any event.
        let retry = sse.next().await;
        assert!(
            retry.retry.is_some() && retry.event.is_none() && retry.data.is_none(),
            "{retry:?}"
        );
        sse.retry = retry.retry;
        let first = sse.next_event().await;
        let kind = first.event.clone().unwrap();
        assert!(kind == "position" || kind == "resume", "{first:?}");
        let v = first.json();
        assert_eq!(
            first.id.as_deref(),
            Some(format!("{}:{}", v["epoch"].as_str().unwrap(), v["offset"]).as_str()),
            "the first event carries the stream's position as its id"
        );
        sse.first = Some(first);
    }
    (head, sse)
}

impl Sse {
    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut tmp))
            .await
            .expect("data from the server in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }

    async fn next(&mut self) -> Event {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buf[..p].to_vec()).unwrap();
                self.buf.drain(..p + 2);
                let mut e = Event::default();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        e.comments.push(c.trim().to_string());
                    } else if let Some((k, v)) = line.split_once(": ") {
                        let v = Some(v.to_string());
                        match k {
                            "event" => e.event = v,
                            "data" => e.data = v,
                            "id" => e.id = v,
                            "retry" => e.retry = v,
                            other => panic!("unexpected field {other}"),
                        }
                    } else {
                        panic!("malformed line {line:?}");
                    }
                }
                return e;
            }
            assert!(self.fill().await, "stream ended");
        }
    }

    /// The next event that is not a comment.
    async fn next_event(&mut self) -> Event {
        loop {
            let e = self.next().await;
            if e.event.is_some() {
                return e;
            }
        }
    }

    async fn expect_end(&mut self) {
        let r = tokio::time::timeout(WAIT, async {
            let mut tmp = [0u8; 65536];
            loop {
                match self.stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "the server did not end the stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_tick_json_and_resumable_ids_after_a_snapshot() {
    // The offsets below count trades and quotes alone; built bars would
    // take offsets of their own (docs/PROTOCOL.md "Bars").
    let h = start(Config {
        bars: false,
        ..config()
    });
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[
        trade("AAPL", 1, "189.23", "100"),
        quote("AAPL", 2, "189.22", "189.24"),
        trade("MSFT", 3, "410.5", "7"),
    ])
    .await;

    let (head, mut sse) = open(addr, "/v1/sse?symbols=AAPL", "", None).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(lower.contains("cache-control: no-cache\r\n"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");

    // The stream's position first: the epoch, and the offset of the
    // newest tick (3), as the event id.
    let first = sse.first.take().unwrap();
    assert_eq!(first.event.as_deref(), Some("position"));
    let epoch = first.json()["epoch"].as_str().unwrap().to_string();
    assert_eq!(first.json()["offset"], 3);
    // Snapshots of both channels (default), flagged snap, without ids
    // (a snapshot is no position in the stream).
    let mut snaps = [sse.next_event().await, sse.next_event().await];
    snaps.sort_by_key(|e| e.event.clone());
    assert_eq!(snaps[0].event.as_deref(), Some("quote"));
    assert_eq!(snaps[0].id, None);
    assert_eq!(snaps[0].json()["snap"], true);
    assert_eq!(snaps[0].json()["bid"].to_string(), "189.22");
    assert_eq!(snaps[1].event.as_deref(), Some("trade"));
    assert_eq!(snaps[1].id, None);
    assert_eq!(snaps[1].json()["px"].to_string(), "189.23");

    // Live: exactly the JSON a WebSocket client gets, no snap flag; MSFT not.
    publ.publish(&[trade("MSFT", 4, "411", "1"), trade("AAPL", 5, "189.3", "2")])
        .await;
    let e = sse.next_event().await;
    assert_eq!(e.event.as_deref(), Some("trade"));
    assert_eq!(e.id, Some(format!("{epoch}:5")), "EPOCH:OFFSET");
    let v = e.json();
    assert_eq!(v["type"], "trade");
    assert_eq!(v["sym"], "AAPL");
    assert_eq!(v["seq"], 2);
    assert_eq!(v["ts"], 5);
    assert!(v.get("snap").is_none());
    assert!(v["rx"].as_u64().unwrap() > 0);
    assert_eq!(h.stats().subscribers.load(Ordering::Relaxed), 1);
    drop((sse, publ));
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_and_channel_filter() {
    let h = start(config());
    let addr = h.addr();
    let (head, mut sse) = open(addr, "/v1/sse?symbols=*&channels=quote", "", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut publ = publisher(addr).await;
    publ.publish(&[
        trade("NEW1", 1, "1", "1"),
        quote("NEW1", 2, "1", "2"),
        quote("NEW2", 3, "3", "4"),
    ])
    .await;
    let a = sse.next_event().await;
    let b = sse.next_event().await;
    let (a, b) = (a.json(), b.json());
    assert_eq!(
        (a["sym"].as_str(), a["seq"].as_u64()),
        (Some("NEW1"), Some(1))
    );
    assert_eq!(
        (b["sym"].as_str(), b["seq"].as_u64()),
        (Some("NEW2"), Some(1))
    );
    drop((sse, publ));
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_the_reason_before_any_stream() {
    let h = start(config());
    let addr = h.addr();
    for (path, words) in [
        ("/v1/sse?symbols=BAD%20ONE", "invalid symbol"),
        ("/v1/sse?symbols=AAPL&channels=bok", "unknown channel `bok`"),
        (
            "/v1/sse?symbols=*&channels=book",
            "the book channel needs named symbols",
        ),
        ("/v1/sse", "needs symbols"),
        (&format!("/v1/sse?symbols={}", "X".repeat(33)), "at most 32"),
    ] {
        let (head, mut sse) = open(addr, path, "", None).await;
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{path}: {head}"
        );
        assert!(head.contains("text/plain"), "{head}");
        let mut body = Vec::new();
        let _ = sse.stream.read_to_end(&mut body).await;
        sse.buf.extend_from_slice(&body);
        let body = String::from_utf8_lossy(&sse.buf);
        assert!(body.contains(words), "{path}: {body}");
    }
    assert_eq!(h.stats().subscribers.load(Ordering::Relaxed), 0);
}

/// An idle stream gets heartbeat comments and nothing else; a stream
/// whose heartbeat is an hour away gets its tick first. (No clock is read:
/// the period is the server's business, the order is what clients see.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_heartbeat_comments() {
    let mut c = config();
    c.sse_heartbeat = Duration::from_millis(150);
    let h = start(c);
    let (_, mut sse) = open(h.addr(), "/v1/sse?symbols=QUIET", "", None).await;
    for _ in 0..3 {
        let e = sse.next().await;
        assert_eq!(e.comments, ["heartbeat"], "{e:?}");
        assert!(e.event.is_none() && e.data.is_none());
    }
    h.shutdown();
    let mut c = config();
    c.sse_heartbeat = Duration::from_secs(3600);
    let h = start(c);
    let (_, mut sse) = open(h.addr(), "/v1/sse?symbols=QUIET", "", None).await;
    let mut publ = publisher(h.addr()).await;
    publ.publish(&[trade("QUIET", 1, "1", "1")]).await;
    let e = sse.next().await;
    assert!(e.comments.is_empty(), "no heartbeat before its time: {e:?}");
    assert_eq!(e.json()["sym"], "QUIET", "{e:?}");
    h.shutdown();
}

/// A proxy's absolute-form request line (`GET http://host/v1/sse?…`,
/// RFC 9112 §3.2.2) opens the stream like the origin form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_opens_the_stream() {
    let h = start(config());
    let a = h.addr();
    let (head, mut sse) = open(a, &format!("http://{a}/v1/sse?symbols=ABS"), "", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut publ = publisher(a).await;
    publ.publish(&[trade("ABS", 1, "1", "1")]).await;
    assert_eq!(sse.next_event().await.json()["sym"], "ABS");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_opens_with_a_retry_field_configurable_from_its_1s_default() {
    for (set, want) in [(None, "1000"), (Some(Duration::from_millis(250)), "250")] {
        let mut c = config();
        if let Some(d) = set {
            c.sse_retry = d;
        }
        let h = start(c);
        // `open` checks that the first block is `retry: MS` alone.
        let (_, sse) = open(h.addr(), "/v1/sse?symbols=QUIET", "", None).await;
        assert_eq!(sse.retry.as_deref(), Some(want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_every_key_or_says_per_key_why_not() {
    // The offsets below count trades and quotes alone; built bars would
    // take offsets of their own (docs/PROTOCOL.md "Bars").
    let h = start(Config {
        bars: false,
        ..config()
    });
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    for i in 1..=3 {
        publ.publish(&[trade("AAPL", i, "1", "1")]).await;
    }
    publ.publish(&[quote("AAPL", 9, "1", "2")]).await;
    let resume_of = |sse: &mut Sse| {
        let first = sse.first.take().unwrap();
        assert_eq!(
            first.event.as_deref(),
            Some("resume"),
            "its own type, not `status`"
        );
        first.json()
    };

    // An older `SYM:CHANNEL:SEQ` id: that key resumes from the history
    // (trades 2 and 3, no snapshot); the other key gets its snapshot.
    let (_, mut sse) = open(
        addr,
        "/v1/sse?symbols=AAPL",
        "Last-Event-ID: AAPL:trade:1\r\n",
        None,
    )
    .await;
    let r = resume_of(&mut sse);
    assert_eq!(r["last_event_id"], "AAPL:trade:1");
    let k = &r["resumed"]["keys"][0];
    assert_eq!(
        (k["sym"].as_str(), k["channel"].as_str()),
        (Some("AAPL"), Some("trade"))
    );
    assert_eq!(k["recovered"], true, "{r}");
    let epoch = r["epoch"].as_str().unwrap().to_string();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = sse.next_event().await;
        got.push((
            e.event.clone().unwrap(),
            e.json()["seq"].as_u64().unwrap(),
            e.json().get("snap").is_some(),
            e.id,
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("quote".to_string(), 1, true, None),
            ("trade".to_string(), 2, false, Some(format!("{epoch}:2"))),
            ("trade".to_string(), 3, false, Some(format!("{epoch}:3"))),
        ]
    );
    drop(sse);

    // `EPOCH:OFFSET`: every key of the stream resumes after offset 2.
    let (_, mut sse) = open(
        addr,
        "/v1/sse?symbols=AAPL",
        &format!("Last-Event-ID: {epoch}:2\r\n"),
        None,
    )
    .await;
    let r = resume_of(&mut sse);
    assert_eq!(r["resumed"]["recovered"], true, "{r}");
    let e = sse.next_event().await;
    assert_eq!(
        (e.event.as_deref(), e.id),
        (Some("trade"), Some(format!("{epoch}:3")))
    );
    let e = sse.next_event().await;
    assert_eq!(
        (e.event.as_deref(), e.id),
        (Some("quote"), Some(format!("{epoch}:4")))
    );
    drop(sse);

    // Another epoch, a seq ahead of ours, an offset ahead, or garbage: not
    // resumed, with the reason, and the snapshot as on a fresh stream.
    for (bad, reason) in [
        ("AAPL:trade:99", "future_seq"),
        ("00000000000000ab:2", "other_epoch"),
        (format!("{epoch}:99").leak() as &str, "future_offset"),
        ("nonsense", "unreadable_id"),
    ] {
        let (_, mut sse) = open(
            addr,
            "/v1/sse?symbols=AAPL&channels=trade",
            &format!("Last-Event-ID: {bad}\r\n"),
            None,
        )
        .await;
        let r = resume_of(&mut sse);
        let resumed = &r["resumed"];
        let why = resumed["reason"]
            .as_str()
            .or_else(|| resumed["keys"][0]["reason"].as_str());
        assert_eq!(why, Some(reason), "{bad}: {r}");
        let e = sse.next_event().await;
        assert_eq!(
            (e.json()["seq"].as_u64(), e.json()["snap"].as_bool()),
            (Some(3), Some(true)),
            "{bad}"
        );
    }
    publ.sync().await;
}

const KEYS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_client_costs_bounded_memory_and_is_evicted() {
    let mut c = config();
    c.client_buffer_bytes = 16 * 1024;
    c.socket_send_buffer = 4096;
    c.evict_after = Duration::from_millis(1500);
    c.close_timeout = Duration::from_millis(300);
    let h = start(c);
    let addr = h.addr();
    let (head, mut stalled) = open(addr, "/v1/sse?symbols=*", "", Some(4096)).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    eventually("subscribed", || {
        h.stats().subscribers.load(Ordering::Relaxed) == 1
    })
    .await;

    let mut publ = publisher(addr).await;
    let (mut max_pending, mut max_queued) = (0i64, 0i64);
    for r in 1..=100u64 {
        let round: Vec<Value> = (0..KEYS)
            .map(|k| trade(&format!("K{k:02}"), r, &format!("{r}.5"), "1"))
            .collect();
        publ.publish(&round).await;
        max_pending = max_pending.max(h.stats().pending_ticks.load(Ordering::Relaxed));
        max_queued = max_queued.max(h.stats().queued_bytes.load(Ordering::Relaxed));
    }
    let dropped = h.stats().ticks_dropped_stale.load(Ordering::Relaxed);
    assert!(
        dropped > 1_000,
        "stale ticks dropped, not buffered: {dropped}"
    );
    assert!(
        max_pending <= KEYS as i64,
        "pending {max_pending} > one per key"
    );
    assert!(
        max_queued <= 16 * 1024 + 4 * 1024,
        "queued bytes {max_queued} beyond the cap"
    );

    // It stays behind: evicted, and the connection ends.
    eventually("eviction", || {
        h.stats().clients_evicted.load(Ordering::Relaxed) == 1
    })
    .await;
    stalled.expect_end().await;
    drop((stalled, publ));
    assert_no_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_draining_client_gets_the_newest_value_of_every_key() {
    let mut c = config();
    c.client_buffer_bytes = 8 * 1024;
    c.socket_send_buffer = 4096;
    let h = start(c);
    let addr = h.addr();
    let (_, mut sse) = open(addr, "/v1/sse?symbols=*&channels=trade", "", Some(4096)).await;
    eventually("subscribed", || {
        h.stats().subscribers.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut publ = publisher(addr).await;
    let rounds = 60u64;
    for r in 1..=rounds {
        let round: Vec<Value> = (0..KEYS)
            .map(|k| trade(&format!("K{k:02}"), r, "1", "1"))
            .collect();
        publ.publish(&round).await;
    }
    let mut last = std::collections::BTreeMap::new();
    let mut got = 0;
    while last.len() < KEYS || last.values().any(|&s| s < rounds) {
        let v = sse.next_event().await.json();
        let seq = v["seq"].as_u64().unwrap();
        let prev = last
            .entry(v["sym"].as_str().unwrap().to_string())
            .or_insert(0);
        assert!(seq > *prev, "reordered or repeated: {v}");
        *prev = seq;
        got += 1;
    }
    assert!(got < rounds as usize * KEYS, "coalesced ({got})");
    drop((sse, publ));
    assert_no_leaks(&h).await;
}

/// Sends raw bytes; reads the whole answer until EOF.
async fn http_raw(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server ends the connection after one response")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_one_request_per_connection_so_sse_is_always_recognised() {
    let h = start(config());
    let a = h.addr();
    // Two pipelined requests: one answer, `Connection: close`, then EOF.
    let r = http_raw(
        a,
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/sse?symbols=A HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1").count(), 1, "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    // A 426 keeps its `Connection: Upgrade` and adds close.
    let r = http_raw(a, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        r.to_ascii_lowercase()
            .contains("connection: upgrade, close"),
        "{r}"
    );
    // The 101 of a WebSocket upgrade is untouched.
    let (_, head) = connect_with(a, "/v1/stream", "", None).await;
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("connection: upgrade") && !lower.contains("close"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticker_page_and_its_assets_are_served_from_the_binary() {
    let h = start(config());
    let a = h.addr();
    for (path, ctype, needle) in [
        ("/", "text/html", "<script src=\"/ticker.js\">"),
        (
            "/ticker.js",
            "text/javascript",
            "new EventSource(\"/v1/sse?ts=string\" + tokenParam",
        ),
        ("/ticker.css", "text/css", "@keyframes"),
        // Browsers ask for it on every load: an icon, not a 404.
        ("/favicon.ico", "image/svg+xml", "<svg"),
    ] {
        let r = http_raw(a, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
        assert!(r.contains(&format!("content-type: {ctype}")), "{path}: {r}");
        assert!(r.contains(needle), "{path}");
    }
    let r = http_raw(a, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_count_against_connection_limits_and_end_at_shutdown() {
    let mut c = config();
    c.max_connections_per_ip = 1;
    let h = start(c);
    let a = h.addr();
    let (head, mut first) = open(a, "/v1/sse?symbols=A", "", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = open(a, "/v1/sse?symbols=A", "", None).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 5"), "{head}");
    // Shutdown ends the stream (FIN) and the server stops.
    let stop = tokio::task::spawn_blocking(move || h.shutdown());
    first.expect_end().await;
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
}

/// With API keys, `/v1/sse` is guarded like `/v1/stream`: 401 without or
/// with a bad key, 403 for a publisher key or a named symbol outside the
/// key's entitlements, the key from the header or `?token=`, and `*`
/// filtered to the entitled symbols (snapshots included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_entitlements_guard_the_event_stream() {
    const KEYS: &str = r#"
[[subscriber]]
name = "desk"
key = "desk-key-0123456789abcdef"
symbols = ["AAPL", "BTC*"]

[[publisher]]
name = "feed"
key = "feed-key-0123456789abcdef"
"#;
    let mut c = config();
    c.auth = Some(std::sync::Arc::new(
        tickwire::access::auth::Keys::parse(KEYS).unwrap(),
    ));
    let h = start(c);
    let a = h.addr();

    let (head, _) = open(a, "/v1/sse?symbols=AAPL", "", None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    let (head, _) = open(
        a,
        "/v1/sse?symbols=AAPL&token=wrong-key-0123456789",
        "",
        None,
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 401") && head.contains("invalid_token"),
        "{head}"
    );
    let (head, _) = open(
        a,
        "/v1/sse?symbols=AAPL",
        "Authorization: Bearer feed-key-0123456789abcdef\r\n",
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, mut body) = open(
        a,
        "/v1/sse?symbols=AAPL,MSFT&token=desk-key-0123456789abcdef",
        "",
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut rest = String::new();
    let _ = body.stream.read_to_string(&mut rest).await;
    let text = String::from_utf8_lossy(&body.buf).to_string() + &rest;
    assert!(
        text.contains("MSFT") && !text.contains("AAPL,"),
        "names what is not allowed: {text}"
    );

    // Entitled: `*` gets AAPL and BTCUSDT, never MSFT, snapshots included.
    let (mut p, _) = connect_with(
        a,
        "/v1/publish",
        "Authorization: Bearer feed-key-0123456789abcdef\r\n",
        None,
    )
    .await;
    p.recv_json().await; // hello
    p.publish(&[trade("MSFT", 1, "1", "1"), trade("AAPL", 2, "2", "1")])
        .await;
    let (head, mut sse) = open(
        a,
        "/v1/sse?symbols=*&channels=trade&token=desk-key-0123456789abcdef",
        "",
        None,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let snap = sse.next_event().await;
    assert_eq!(
        (snap.json()["sym"].as_str(), snap.json()["snap"].as_bool()),
        (Some("AAPL"), Some(true))
    );
    p.publish(&[
        trade("MSFT", 3, "1", "1"),
        trade("BTCUSDT", 4, "9000", "1"),
        trade("AAPL", 5, "3", "1"),
    ])
    .await;
    let syms: Vec<String> = [sse.next_event().await, sse.next_event().await]
        .iter()
        .map(|e| e.json()["sym"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(syms, ["BTCUSDT", "AAPL"]);
    h.shutdown();
}
