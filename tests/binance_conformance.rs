//! The Binance endpoint on the wire, driven directly: the documented
//! request/response and error shapes, stream payloads, the URL forms,
//! REST, and bad input (unknown stream, malformed method, a JSON array,
//! more than 1,024 streams, more than 5 messages a second) getting
//! Binance's behaviour while other connections stay healthy.

mod binance_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickwire::model::book::{BookChange, BookSide, Level};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::pipeline::stats::Origin;
use tickwire::server::ServerHandle;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use binance_support::{WAIT, start, wait_streams};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(h: &ServerHandle, path: &str) -> Ws {
    let url = format!("ws://{}{path}", h.binance_addr().unwrap());
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connects")
        .0
}

/// The next text message as JSON (pings are answered by the library).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

async fn request(ws: &mut Ws, req: Value) -> Value {
    ws.send(Message::Text(req.to_string().into()))
        .await
        .unwrap();
    next_json(ws).await
}

async fn send_raw(ws: &mut Ws, text: &str) -> Value {
    ws.send(Message::Text(text.into())).await.unwrap();
    next_json(ws).await
}

fn fx(s: &str) -> Fixed {
    s.parse().unwrap()
}

/// A payload's decimal string, checked to have Binance's 8 fraction digits.
fn dec(v: &Value) -> Fixed {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string: {v}"));
    assert!(
        s.split_once('.').is_some_and(|(_, f)| f.len() >= 8),
        "8 decimals: {s}"
    );
    fx(s)
}

async fn trade(h: &ServerHandle, sym: &str, px: &str, qty: &str, side: Side) {
    let t = NewTick {
        sym: sym.into(),
        ts: 1_582_329_600_123_456_789,
        event: Event::Trade {
            px: fx(px),
            qty: fx(qty),
            side,
        },
        book: None,
    };
    let a = h.ingest().admit(t).unwrap();
    h.ingest().publish(&[a]).await;
}

async fn book(h: &ServerHandle, sym: &str, change: BookChange) {
    let b = h.ingest().admit_book(sym, 1, change).unwrap();
    h.ingest()
        .publish_book(&b, Origin::Publisher)
        .await
        .unwrap();
}

fn level(side: BookSide, px: &str, sz: &str) -> Level {
    Level {
        side,
        px: fx(px),
        sz: fx(sz),
    }
}

async fn http_get(h: &ServerHandle, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(h.binance_addr().unwrap()).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_combined_streams_carry_binance_payloads() {
    let h = start(|_| {});
    let mut raw = connect(&h, "/ws/btcusdt@trade").await;
    let mut comb = connect(
        &h,
        "/stream?streams=btcusdt@aggTrade/btcusdt@trade&timeUnit=MICROSECOND",
    )
    .await;
    wait_streams(&h, 3).await;
    trade(&h, "BTC/USDT", "9662.05", "0.004", Side::Sell).await;
    let t = next_json(&mut raw).await;
    assert_eq!(t["e"], "trade");
    assert_eq!(t["s"], "BTCUSDT");
    assert_eq!((dec(&t["p"]), dec(&t["q"])), (fx("9662.05"), fx("0.004")));
    assert_eq!(t["T"], 1_582_329_600_123u64);
    assert_eq!((t["m"].clone(), t["M"].clone()), (json!(true), json!(true)));
    assert_eq!(t["t"], 1);
    assert!(
        t["E"].as_u64().unwrap() > 1_600_000_000_000
            && t["E"].as_u64().unwrap() < 10_000_000_000_000
    );
    // Combined: wrapped, in µs, one event per stream.
    let mut got = [next_json(&mut comb).await, next_json(&mut comb).await];
    got.sort_by_key(|v| v["stream"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["stream"], "btcusdt@aggTrade");
    assert_eq!(got[0]["data"]["e"], "aggTrade");
    assert_eq!(got[0]["data"]["a"], 1);
    assert_eq!(got[0]["data"]["T"], 1_582_329_600_123_456u64);
    assert_eq!(got[1]["stream"], "btcusdt@trade");
    assert_eq!(got[1]["data"]["p"], "9662.05000000");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_requests_get_documented_replies() {
    let h = start(|b| b.limits.messages_per_sec = 1000);
    let mut ws = connect(&h, "/ws").await;
    let r = request(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}),
    )
    .await;
    assert_eq!(r, json!({"result":null,"id":1}));
    let r = request(
        &mut ws,
        json!({"method":"LIST_SUBSCRIPTIONS","id":"list-1"}),
    )
    .await;
    assert_eq!(
        r,
        json!({"result":["btcusdt@trade","btcusdt@bookTicker"],"id":"list-1"})
    );
    let r = request(
        &mut ws,
        json!({"method":"GET_PROPERTY","params":["combined"],"id":null}),
    )
    .await;
    assert_eq!(r, json!({"result":false,"id":null}));
    let r = request(
        &mut ws,
        json!({"method":"SET_PROPERTY","params":["combined",true],"id":5}),
    )
    .await;
    assert_eq!(r, json!({"result":null,"id":5}));
    let r = request(
        &mut ws,
        json!({"method":"GET_PROPERTY","params":["combined"],"id":6}),
    )
    .await;
    assert_eq!(r, json!({"result":true,"id":6}));
    let r = request(
        &mut ws,
        json!({"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}),
    )
    .await;
    assert_eq!(r, json!({"result":null,"id":7}));
    wait_streams(&h, 1).await;
    trade(&h, "BTCUSDT", "1.5", "2", Side::Buy).await;
    let t = next_json(&mut ws).await;
    assert_eq!(t["stream"], "btcusdt@trade");
    assert_eq!(t["data"]["m"], false);

    // Errors, as Binance documents them.
    let e = request(&mut ws, json!({"method":"SUBSCRIB","params":[],"id":8})).await;
    assert_eq!(e["error"]["code"], 2);
    assert_eq!(e["id"], 8);
    assert!(
        e["error"]["msg"].as_str().unwrap().starts_with(
            "Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`"
        ),
        "{e}"
    );
    let e = request(&mut ws, json!({"params":[],"id":9})).await;
    assert_eq!(
        e["error"],
        json!({"code":2,"msg":"Invalid request: missing field `method`"})
    );
    let e = request(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcusdt@trade"]}),
    )
    .await;
    assert_eq!(
        e["error"],
        json!({"code":2,"msg":"Invalid request: request ID must be an unsigned integer"})
    );
    let e = request(
        &mut ws,
        json!({"method":"SET_PROPERTY","params":["combined","yes"],"id":10}),
    )
    .await;
    assert_eq!(
        e,
        json!({"error":{"code":1,"msg":"Invalid value type: expected Boolean"},"id":10})
    );
    let e = request(
        &mut ws,
        json!({"method":"SET_PROPERTY","params":["speed",true],"id":11}),
    )
    .await;
    assert_eq!(
        e,
        json!({"error":{"code":0,"msg":"Unknown property"},"id":11})
    );
    let e = request(
        &mut ws,
        json!({"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":12}),
    )
    .await;
    assert_eq!(e["error"]["msg"], "Invalid request: too many parameters");
    let e = send_raw(&mut ws, "{\"method\":").await;
    assert_eq!(e["error"]["code"], 3);
    assert!(
        e["error"]["msg"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON: "),
        "{e}"
    );
    let e = send_raw(
        &mut ws,
        r#"[{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}]"#,
    )
    .await;
    assert_eq!(e["error"]["code"], 2);
    let e = request(
        &mut ws,
        json!({"method":"SUBSCRIBE","params":["btcusdt@nonsense"],"id":13}),
    )
    .await;
    assert_eq!(
        e,
        json!({"error":{"code":2,"msg":"Invalid request: invalid stream name `btcusdt@nonsense`"},"id":13})
    );
    // Too many streams: refused whole; what was there stays.
    let many: Vec<String> = (0..1024).map(|i| format!("s{i}@trade")).collect();
    let e = request(&mut ws, json!({"method":"SUBSCRIBE","params":many,"id":14})).await;
    assert_eq!(e["error"]["code"], 2, "{e}");
    assert!(
        e["error"]["msg"]
            .as_str()
            .unwrap()
            .contains("at most 1024 streams"),
        "{e}"
    );
    let r = request(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":15})).await;
    assert_eq!(r["result"], json!(["btcusdt@trade"]));
    // Still streaming after all that.
    trade(&h, "BTCUSDT", "1.6", "3", Side::Sell).await;
    assert_eq!(dec(&next_json(&mut ws).await["data"]["p"]), fx("1.6"));
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_five_messages_a_second_disconnect_only_that_client() {
    let h = start(|_| {});
    let mut calm = connect(&h, "/ws/btcusdt@trade").await;
    let mut noisy = connect(&h, "/ws").await;
    wait_streams(&h, 1).await;
    for i in 0..6 {
        let req = json!({"method":"LIST_SUBSCRIPTIONS","id":i}).to_string();
        if noisy.send(Message::Text(req.into())).await.is_err() {
            break;
        }
    }
    let mut replies = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, noisy.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Text(_))) => replies += 1,
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(replies, 5);
    let f = close.expect("a close code");
    assert_eq!(u16::from(f.code), 1008);
    assert_eq!(f.reason.as_str(), "Too many messages");
    trade(&h, "BTCUSDT", "2", "1", Side::Buy).await;
    assert_eq!(dec(&next_json(&mut calm).await["p"]), fx("2"));
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_rest() {
    let h = start(|b| b.limits.max_streams = 3);
    // A path segment naming no stream is accepted and carries nothing,
    // as on Binance (ccxt connects to `/ws/0`).
    let mut ws = connect(&h, "/ws/0").await;
    let r = request(&mut ws, json!({"method":"LIST_SUBSCRIPTIONS","id":1})).await;
    assert_eq!(r, json!({"result":[],"id":1}));
    let (s, e) = http_get(&h, "/stream?streams=a@trade/b@trade/c@trade/d@trade").await;
    assert_eq!(s, 400);
    assert!(
        e["msg"].as_str().unwrap().contains("at most 3 streams"),
        "{e}"
    );
    let (s, e) = http_get(&h, "/ws/btcusdt@trade?timeUnit=DAYS").await;
    assert_eq!((s, e["code"].clone()), (400, json!(2)));
    assert_eq!(http_get(&h, "/api/v3/ping").await, (200, json!({})));
    let (s, t) = http_get(&h, "/api/v3/time").await;
    assert_eq!(s, 200);
    assert!(t["serverTime"].as_u64().unwrap() > 1_600_000_000_000);
    trade(&h, "BTC/USDT", "1", "1", Side::Buy).await;
    let (_, info) = http_get(&h, "/api/v3/exchangeInfo").await;
    let sym = &info["symbols"][0];
    assert_eq!(
        (
            sym["symbol"].as_str(),
            sym["baseAsset"].as_str(),
            sym["quoteAsset"].as_str()
        ),
        (Some("BTCUSDT"), Some("BTC"), Some("USDT"))
    );
    assert_eq!(sym["status"], "TRADING");
    assert_eq!(
        http_get(&h, "/api/v3/depth?symbol=NOPE").await,
        (400, json!({"code":-1121,"msg":"Invalid symbol."}))
    );
    assert_eq!(
        http_get(&h, "/api/v3/depth?symbol=BTCUSDT&limit=0").await.0,
        400
    );
    h.shutdown();
}

/// Binance's local-book procedure over `@depth` and `/api/v3/depth`
/// (buffer events, take the snapshot, drop `u` <= lastUpdateId, apply the
/// rest checking `U` = previous `u` + 1) ends equal to tickwire's book;
/// `@depth5` shows its top five and `@bookTicker` its top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_diffs_line_up_with_the_rest_snapshot() {
    use BookSide::{Ask, Bid};
    let h = start(|_| {});
    let snapshot: Vec<Level> = (1..=8)
        .flat_map(|i| {
            [
                level(Bid, &format!("{}", 100 - i), "1"),
                level(Ask, &format!("{}", 100 + i), "2"),
            ]
        })
        .collect();
    book(&h, "ESM4", BookChange::Snapshot(snapshot)).await;
    let mut ws = connect(
        &h,
        "/stream?streams=esm4@depth@100ms/esm4@depth5/esm4@bookTicker",
    )
    .await;
    wait_streams(&h, 3).await;
    book(&h, "ESM4", BookChange::Diff(vec![level(Bid, "99", "5")])).await;
    let (_, snap) = http_get(&h, "/api/v3/depth?symbol=ESM4&limit=1000").await;
    book(
        &h,
        "ESM4",
        BookChange::Diff(vec![level(Ask, "101", "0"), level(Bid, "99.5", "7")]),
    )
    .await;
    // A full replacement: levels that vanish come as size 0.
    book(
        &h,
        "ESM4",
        BookChange::Snapshot(vec![
            level(Bid, "98", "3"),
            level(Ask, "103", "4"),
            level(Ask, "104", "1"),
        ]),
    )
    .await;
    book(&h, "ESM4", BookChange::Diff(vec![level(Bid, "97", "9")])).await;
    let (seq, want) = h.ingest().book_state("ESM4").unwrap();

    let mut local = std::collections::BTreeMap::new();
    let mut last = snap["lastUpdateId"].as_u64().unwrap();
    for (side, key) in [(Bid, "bids"), (Ask, "asks")] {
        for l in snap[key].as_array().unwrap() {
            local.insert((side, dec(&l[0])), dec(&l[1]));
        }
    }
    let (mut top5, mut ticker) = (Value::Null, Value::Null);
    while last < seq || top5["lastUpdateId"].as_u64() != Some(seq) {
        let m = next_json(&mut ws).await;
        let data = &m["data"];
        match m["stream"].as_str().unwrap() {
            "esm4@depth5" => top5 = data.clone(),
            "esm4@bookTicker" => ticker = data.clone(),
            "esm4@depth@100ms" => {
                assert_eq!(data["e"], "depthUpdate");
                let (first, u) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
                if u <= last {
                    continue;
                }
                assert_eq!(first, last + 1, "an unbroken U/u chain: {m}");
                for (side, key) in [(Bid, "b"), (Ask, "a")] {
                    for l in data[key].as_array().unwrap() {
                        let (px, sz) = (dec(&l[0]), dec(&l[1]));
                        if sz == Fixed::ZERO {
                            local.remove(&(side, px));
                        } else {
                            local.insert((side, px), sz);
                        }
                    }
                }
                last = u;
            }
            other => panic!("unexpected stream {other}"),
        }
    }
    let want: std::collections::BTreeMap<_, _> =
        want.iter().map(|l| ((l.side, l.px), l.sz)).collect();
    assert_eq!(local, want);
    assert_eq!(
        top5["bids"],
        json!([["98.00000000", "3.00000000"], ["97.00000000", "9.00000000"]])
    );
    assert_eq!(
        top5["asks"],
        json!([
            ["103.00000000", "4.00000000"],
            ["104.00000000", "1.00000000"]
        ])
    );
    // The book's top after the last update that moved it.
    while ticker["b"] != "98.00000000" {
        ticker = next_json(&mut ws).await["data"].clone();
    }
    assert_eq!(
        [dec(&ticker["B"]), dec(&ticker["a"]), dec(&ticker["A"])],
        [fx("3"), fx("103"), fx("4")]
    );
    h.shutdown();
}

/// Upgrades `/ws` by hand, never writes again, and returns every byte the
/// server sends until it closes the connection.
async fn silent_client(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("the server closes a silent client")
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_closes_a_client_that_never_pongs() {
    let h = start(|b| {
        b.limits.ping_interval = Duration::from_millis(100);
        b.limits.pong_timeout = Duration::from_millis(300);
    });
    // A client whose library answers pings stays connected.
    let mut polite = connect(&h, "/ws/btcusdt@trade").await;
    // A raw socket that never answers its pings.
    let silent = tokio::spawn(silent_client(h.binance_addr().unwrap()));
    let mut pings = 0;
    // `polite` keeps reading (so its library keeps answering) meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !silent.is_finished() || pings < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pings or no close"
        );
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_millis(50), polite.next()).await
        {
            pings += 1;
        }
    }
    assert!(pings >= 2, "pings every interval: {pings}");
    let bytes = silent.await.unwrap();
    // The server's last frame: a close (0x88) with 1008 and the reason.
    let reason = b"Pong timeout";
    let at = bytes
        .windows(reason.len())
        .position(|w| w == reason)
        .expect("a close frame saying why");
    assert_eq!(
        &bytes[at - 4..at],
        &[0x88, 2 + reason.len() as u8, 0x03, 0xF0]
    );
    trade(&h, "BTCUSDT", "3", "1", Side::Buy).await;
    assert_eq!(dec(&next_json(&mut polite).await["p"]), fx("3"));
    h.shutdown();
}

/// A client that stops reading is disconnected once its queue is full
/// (never conflated: a skipped depth diff would break its book); a client
/// that keeps reading gets every diff, an unbroken `U`/`u` chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_disconnected_and_others_lose_nothing() {
    use BookSide::{Ask, Bid};
    // The queue must hold a ring batch (1,024): the hub queues a whole
    // batch before the sessions on its thread run.
    let h = start(|b| b.limits.queue_len = 1024);
    let px = |i: usize| format!("{}", 1000 + i);
    let snapshot: Vec<Level> = (0..1000)
        .map(|i| level(Bid, &px(i), "1"))
        .chain((0..1000).map(|i| level(Ask, &px(2000 + i), "1")))
        .collect();
    book(&h, "ESM4", BookChange::Snapshot(snapshot)).await;
    let mut reader = connect(&h, "/ws/esm4@depth").await;
    // Upgraded by hand with a small receive buffer, then never read.
    let stalled = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&h.binance_addr().unwrap().into()).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(s.into()).unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(
            b"GET /ws/esm4@depth HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        s
    };
    wait_streams(&h, 2).await;
    // 1,600 diffs of 100 levels (~4 KB each): more events than the queue
    // (1,024) and the socket buffers hold.
    const N: u64 = 1600;
    // The reader keeps up: it reads each 100 diffs after they are published.
    let mut last = 1; // the snapshot's seq
    for n in 0..N {
        let sz = format!("{}", 2 + n % 7);
        book(
            &h,
            "ESM4",
            BookChange::Diff((0..100).map(|i| level(Bid, &px(i), &sz)).collect()),
        )
        .await;
        if n % 100 == 99 {
            while last < n + 2 {
                let d = next_json(&mut reader).await;
                assert_eq!(d["U"].as_u64(), Some(last + 1), "an unbroken chain");
                last = d["u"].as_u64().unwrap();
                assert_eq!(d["b"].as_array().unwrap().len(), 100);
            }
        }
    }
    // The hub dropped the stalled client (and its stream) when its queue filled.
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.binance_streams() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client is still held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stalled);
    h.shutdown();
}

/// Binance connections count against the server's connection limits: one
/// over `--max-connections-per-ip` is refused with 503, and its place comes
/// back when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_connections_count_against_the_connection_limits() {
    let h = binance_support::start_per_ip(1);
    let first = connect(&h, "/ws/btcusdt@trade").await;
    let url = format!("ws://{}/ws/btcusdt@trade", h.binance_addr().unwrap());
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // REST is not a connection held open: still answered.
    assert_eq!(http_get(&h, "/api/v3/ping").await, (200, json!({})));
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.connections().0 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place comes back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect(&h, "/ws").await;
    let r = request(&mut again, json!({"method":"LIST_SUBSCRIPTIONS","id":1})).await;
    assert_eq!(r["result"], json!([]));
    h.shutdown();
}
