//! API keys and entitlements over real sockets: 401 without or with a bad
//! key (before the upgrade), 403 for a key on the wrong endpoint, the key
//! from the header or the query, `unauthorized` for symbols outside a key's
//! entitlements while the rest are subscribed, `*` filtered to entitled
//! symbols, and a key's own connection limit (503).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tickwire::access::auth::Keys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DESK: &str = "desk-key-0123456789abcdef";
const ALL: &str = "all-key-0123456789abcdef";
const FEED: &str = "feed-key-0123456789abcdef";

const KEYS: &str = r#"
[[subscriber]]
name = "desk"
key = "desk-key-0123456789abcdef"
symbols = ["AAPL", "BTC*"]
max_connections = 2

[[subscriber]]
name = "all"
key = "all-key-0123456789abcdef"
symbols = ["*"]

[[publisher]]
name = "feed"
key = "feed-key-0123456789abcdef"
"#;

fn start_with_keys() -> tickwire::server::ServerHandle {
    let mut c = config();
    c.auth = Some(Arc::new(Keys::parse(KEYS).unwrap()));
    start(c)
}

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n")
}

/// An upgrade request's whole answer (head and body) as text.
async fn answer(addr: SocketAddr, target: &str, headers: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn sub_with(addr: SocketAddr, target: &str, headers: &str) -> RawWs {
    let (mut ws, head) = connect_with(addr, target, headers, None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.recv_json().await["type"], "hello");
    ws
}

async fn publisher_with_key(addr: SocketAddr) -> RawWs {
    let (mut ws, head) = connect_with(addr, "/v1/publish", &bearer(FEED), None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.recv_json().await["type"], "hello");
    ws
}

/// Symbols of the ticks received up to and including the one with `ts`
/// (published last: one publisher's ticks reach a client in order).
async fn ticks_until_ts(ws: &mut RawWs, ts: u64) -> Vec<String> {
    let mut syms = Vec::new();
    loop {
        let v = ws.recv_json().await;
        assert!(v["type"] == "trade" || v["type"] == "quote", "{v}");
        syms.push(v["sym"].as_str().unwrap().to_owned());
        if v["ts"] == ts {
            return syms;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_a_bad_key_gets_401_before_the_upgrade() {
    let h = start_with_keys();
    for path in ["/v1/stream", "/v1/publish"] {
        let r = answer(h.addr(), path, "").await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(
            r.contains("www-authenticate: Bearer realm=\"tickwire\""),
            "{r}"
        );
        assert!(r.contains("an API key is required"), "{r}");

        let r = answer(h.addr(), path, &bearer("wrong-key-0123456789abcdef")).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(r.contains("error=\"invalid_token\""), "{r}");
        assert!(r.contains("not valid"), "{r}");
        assert!(!r.contains("wrong-key"), "the key is never echoed: {r}");

        let r = answer(h.addr(), &format!("{path}?token=nope"), "").await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        // A prefix of a real key is no key.
        let r = answer(h.addr(), path, &bearer(&DESK[..10])).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    }
    // Other endpoints are not behind keys.
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_the_wrong_endpoint_gets_403() {
    let h = start_with_keys();
    let r = answer(h.addr(), "/v1/publish", &bearer(DESK)).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("not publish"), "{r}");
    let r = answer(h.addr(), &format!("/v1/publish?token={ALL}"), "").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = answer(h.addr(), "/v1/stream", &bearer(FEED)).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("not subscribe"), "{r}");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_works_from_the_header_or_the_query() {
    let h = start_with_keys();
    let mut p = publisher_with_key(h.addr()).await;
    let mut by_header = sub_with(h.addr(), "/v1/stream", &bearer(ALL)).await;
    let mut by_query = sub_with(h.addr(), &format!("/v1/stream?x=1&token={ALL}"), "").await;
    // Lower-case scheme, as some clients send it.
    let mut lower = sub_with(
        h.addr(),
        "/v1/stream",
        &format!("authorization: bearer {ALL}\r\n"),
    )
    .await;
    for ws in [&mut by_header, &mut by_query, &mut lower] {
        ws.subscribe(1, &["MSFT"], None, false).await;
    }
    p.publish(&[trade("MSFT", 1, "1", "1")]).await;
    for ws in [&mut by_header, &mut by_query, &mut lower] {
        assert_eq!(ticks_until_ts(ws, 1).await, ["MSFT"]);
    }
    drop((p, by_header, by_query, lower));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unentitled_symbols_are_refused_and_the_rest_subscribed() {
    let h = start_with_keys();
    let mut p = publisher_with_key(h.addr()).await;
    let mut ws = sub_with(h.addr(), "/v1/stream", &bearer(DESK)).await;
    ws.send_json(serde_json::json!({"op":"subscribe","id":5,"symbols":["MSFT","AAPL","BTCUSD","ETHUSD"],"snapshot":false}))
        .await;
    let ok = ws.recv_json().await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    assert_eq!(ok["id"], 5);
    assert_eq!(ok["symbols"], serde_json::json!(["AAPL", "BTCUSD"]));
    let e = ws.recv_json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_i64()),
        (Some("error"), Some("unauthorized"), Some(5)),
        "{e}"
    );
    assert_eq!(e["symbols"], serde_json::json!(["MSFT", "ETHUSD"]));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("MSFT, ETHUSD"), "{msg}");
    assert!(
        msg.contains("other symbols of the request were subscribed"),
        "{msg}"
    );

    // Only unentitled symbols: nothing subscribed, one error.
    ws.send_json(serde_json::json!({"op":"subscribe","id":6,"symbols":["MSFT"]}))
        .await;
    let e = ws.recv_json().await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("nothing was subscribed"),
        "{e}"
    );

    p.publish(&[
        trade("MSFT", 1, "1", "1"),
        trade("AAPL", 2, "1", "1"),
        trade("ETHUSD", 3, "1", "1"),
        trade("BTCUSD", 4, "1", "1"),
    ])
    .await;
    assert_eq!(ticks_until_ts(&mut ws, 4).await, ["AAPL", "BTCUSD"]);
    drop((p, ws));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_delivers_only_entitled_symbols_with_snapshots_too() {
    let h = start_with_keys();
    let mut p = publisher_with_key(h.addr()).await;
    // Symbols seen before the subscribe: the snapshot is filtered, and so
    // is the `ids` map of the reply.
    p.publish(&[trade("MSFT", 1, "1", "1"), trade("BTCUSD", 2, "1", "1")])
        .await;
    let mut desk = sub_with(h.addr(), "/v1/stream", &bearer(DESK)).await;
    let mut all = sub_with(h.addr(), "/v1/stream", &bearer(ALL)).await;
    let reply = desk.subscribe(1, &["*"], None, true).await;
    let ids = reply["ids"].as_object().unwrap();
    assert!(
        ids.contains_key("BTCUSD") && !ids.contains_key("MSFT"),
        "{reply}"
    );
    all.subscribe(1, &["*"], None, false).await;
    assert_eq!(ticks_until_ts(&mut desk, 2).await, ["BTCUSD"]);

    let mut sent = Vec::new();
    for (i, sym) in ["MSFT", "AAPL", "ETHUSD", "BTCUSD", "BTCEUR", "AAPLX"]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        sent.push(trade(sym, 10 + i as u64, "1", "1"));
    }
    sent.push(trade("AAPL", 1000, "1", "1"));
    p.publish(&sent).await;
    let got = ticks_until_ts(&mut desk, 1000).await;
    let mut want: Vec<&str> = ["MSFT", "AAPL", "ETHUSD", "BTCUSD", "BTCEUR", "AAPLX"]
        .iter()
        .cycle()
        .take(60)
        .filter(|s| ["AAPL", "BTCUSD", "BTCEUR"].contains(s))
        .copied()
        .collect();
    want.push("AAPL");
    assert_eq!(got, want);
    assert_eq!(ticks_until_ts(&mut all, 1000).await.len(), 61);

    // Unsubscribing `*` and subscribing again decides afresh, same answer.
    desk.send_text(r#"{"op":"unsubscribe","id":2,"symbols":["*"]}"#)
        .await;
    desk.recv_until("unsubscribed").await;
    desk.subscribe(3, &["*"], Some(&["trade"]), false).await;
    p.publish(&[trade("ETHUSD", 100, "1", "1"), trade("AAPL", 101, "1", "1")])
        .await;
    assert_eq!(ticks_until_ts(&mut desk, 101).await, ["AAPL"]);
    // The `symbols` op lists only entitled symbols.
    desk.send_text(r#"{"op":"symbols","id":9}"#).await;
    let (list, _) = desk.recv_until("symbols").await;
    let mut names: Vec<&str> = list["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["AAPL", "BTCEUR", "BTCUSD"]);
    drop((p, desk, all));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_connection_limit_gets_503_and_places_come_back() {
    let h = start_with_keys();
    let a = sub_with(h.addr(), "/v1/stream", &bearer(DESK)).await;
    let _b = sub_with(h.addr(), &format!("/v1/stream?token={DESK}"), "").await;
    let r = answer(h.addr(), "/v1/stream", &bearer(DESK)).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("key `desk` already has 2"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 5"), "{r}");
    // Other keys are not affected.
    let _c = sub_with(h.addr(), "/v1/stream", &bearer(ALL)).await;
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        let r = answer(h.addr(), "/v1/stream", &bearer(DESK)).await;
        if r.starts_with("HTTP/1.1 101") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the closed connection's place never came back");
    // Refusals are counted by reason (one 401 and one 403 here, too).
    let _ = answer(h.addr(), "/v1/stream", "").await;
    let _ = answer(h.addr(), "/v1/publish", &bearer(DESK)).await;
    let m = http_get(h.addr(), "/metrics").await;
    for line in [
        r#"tickwire_upgrades_refused_total{reason="unauthorized"} 1"#,
        r#"tickwire_upgrades_refused_total{reason="forbidden"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    let limit = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"tickwire_upgrades_refused_total{reason="limit"} "#))
        .unwrap();
    assert!(limit.parse::<u64>().unwrap() >= 1, "{m}");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_server_is_open() {
    let h = start(config());
    let mut p = publisher(h.addr()).await;
    let mut ws = subscriber(h.addr()).await;
    // A stray token is ignored on an open server.
    let _other = sub_with(h.addr(), "/v1/stream?token=whatever", "").await;
    ws.subscribe(1, &["*"], None, false).await;
    p.publish(&[trade("ANY", 1, "1", "1")]).await;
    let got: Vec<Value> = vec![ws.recv_json().await];
    assert_eq!(got[0]["sym"], "ANY");
    h.shutdown();
}

/// The binary: `serve` with `args`, stderr captured; returns the child and
/// the bound address once it is listening.
fn spawn_serve(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, SocketAddr) {
    let addr_file = dir.join("addr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--log-format", "json", "--addr-file"])
        .arg(&addr_file)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tickwire");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file) {
            return (child, s.trim().parse().unwrap());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the server and returns everything it logged.
fn stop(child: std::process::Child) -> String {
    tickwire::sys::kill(child.id(), tickwire::sys::Signal::Terminate).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_config_loads_keys_and_logs_names_never_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keys.toml");
    std::fs::write(&cfg, KEYS).unwrap();
    let (child, addr) = spawn_serve(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()],
    );
    let r = answer(addr, "/v1/stream", "").await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = answer(addr, "/v1/stream", &bearer("wrong-key-0123456789abcdef")).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let mut ws = sub_with(addr, "/v1/stream", &bearer(DESK)).await;
    ws.subscribe(1, &["AAPL"], None, false).await;
    ws.send_close(1000, "").await;
    ws.recv_close().await;
    drop(ws);
    let log = stop(child);
    assert!(log.contains("authentication on"), "{log}");
    assert!(log.contains(r#""key":"desk""#), "{log}");
    for secret in [DESK, ALL, FEED, "wrong-key-0123456789abcdef"] {
        assert!(!log.contains(secret), "a key was logged: {log}");
    }
}

#[test]
fn serve_without_keys_says_so_and_warns_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = spawn_serve(dir.path(), &["--listen", "127.0.0.1:0"]);
    let log = stop(child);
    assert!(log.contains("authentication off"), "{log}");
    assert!(!log.contains(r#""level":"WARN""#), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let (child, _) = spawn_serve(dir.path(), &["--listen", "0.0.0.0:0"]);
    let log = stop(child);
    assert!(log.contains("authentication off"), "{log}");
    assert!(
        log.contains(r#""level":"WARN""#) && log.contains("beyond loopback without API keys"),
        "{log}"
    );
}

#[test]
fn serve_refuses_a_bad_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[subscriber]]\nname = \"x\"\nkey = \"short\"\nsymbols = [\"*\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("at least 16"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--config", "/nonexistent/keys.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_star_clients_get_only_entitled_records_and_announcements() {
    let h = start_with_keys();
    let mut p = publisher_with_key(h.addr()).await;
    let headers = format!(
        "{}Sec-WebSocket-Protocol: tickwire.bin.v1\r\n",
        bearer(DESK)
    );
    let mut ws = sub_with(h.addr(), "/v1/stream", &headers).await;
    assert_eq!(ws.protocol.as_deref(), Some("tickwire.bin.v1"));
    ws.subscribe(1, &["*"], None, false).await;
    let mut ts = 0;
    for _ in 0..3 {
        ts += 2;
        p.publish(&[trade("MSFT", ts - 1, "1", "1"), trade("AAPL", ts, "1", "1")])
            .await;
    }
    // One announcement (AAPL's id), then its three records; never MSFT.
    let mut aapl = None;
    let mut records = Vec::new();
    while records.len() < 3 {
        match ws.recv().await {
            Msg::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["sym"].as_str()),
                    (Some("symbol"), Some("AAPL")),
                    "{v}"
                );
                assert!(aapl.is_none(), "announced twice: {v}");
                aapl = Some(v["id"].as_u64().unwrap() as u32);
            }
            Msg::Binary(b) => {
                assert_eq!(b.len() % 64, 0);
                records.extend(b.chunks(64).map(|r| {
                    let id = u32::from_le_bytes(r[4..8].try_into().unwrap());
                    let ts = u64::from_le_bytes(r[16..24].try_into().unwrap());
                    (id, ts)
                }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let aapl = aapl.expect("AAPL announced");
    assert_eq!(records, [(aapl, 2), (aapl, 4), (aapl, 6)]);
    h.shutdown();
}
