//! The Binance endpoint on the wire, driven directly: the documented
//! request/response and error shapes, stream payloads, the URL forms,
//! REST, and bad input (unknown stream, malformed method, a JSON array,
//! more than 1,024 streams, more than 5 messages a second) getting
//! Binance's behaviour while other connections stay healthy. Depth and
//! slow clients: tests/binance_depth.rs.

mod binance_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tickwire::model::tick::Side;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use binance_support::wire::*;
use binance_support::{WAIT, start, wait_streams};

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

/// A trade of `sym` at feed time `ts` (ns), published.
async fn trade_at(h: &tickwire::server::ServerHandle, ts: u64, px: &str, qty: &str, side: Side) {
    let t = tickwire::model::tick::NewTick {
        sym: "BTCUSDT".into(),
        ts,
        event: tickwire::model::tick::Event::Trade {
            px: fx(px),
            qty: fx(qty),
            side,
        },
        book: None,
    };
    let a = h.ingest().admit(t).unwrap();
    h.ingest().publish(&[a]).await;
}

/// `@kline_<interval>` streams (1s, 1m, 1h, 1d; others are invalid names)
/// carry Binance's kline payload built from tickwire's bars, and
/// `/api/v3/klines` (and `uiKlines`) return the kept bars as Binance's
/// rows, with its errors for bad parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kline_streams_and_rest_klines() {
    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_040 * S; // a minute's start
    let h = start(|b| b.limits.messages_per_sec = 1000);
    let mut raw = connect(&h, "/ws/btcusdt@kline_1m").await;
    let mut us = connect(&h, "/stream?streams=btcusdt@kline_1h&timeUnit=MICROSECOND").await;
    let r = request(
        &mut raw,
        json!({"method":"SUBSCRIBE","params":["btcusdt@kline_5m"],"id":1}),
    )
    .await;
    assert_eq!(
        r,
        json!({"error":{"code":2,"msg":"Invalid request: invalid stream name `btcusdt@kline_5m`"},"id":1})
    );
    wait_streams(&h, 2).await;
    trade_at(&h, T0 + S, "100.5", "2", Side::Buy).await;
    trade_at(&h, T0 + 2 * S, "99", "1", Side::Sell).await;
    // The first trade's kline at once, the second's within a second.
    let k = loop {
        let v = next_json(&mut raw).await;
        assert_eq!(v["e"], "kline", "{v}");
        if v["k"]["n"] == 2 {
            break v;
        }
    };
    assert_eq!(k["s"], "BTCUSDT");
    assert!(k["E"].as_u64().unwrap() > 1_600_000_000_000, "{k}");
    let mut body = k["k"].clone();
    assert_eq!(
        body,
        json!({"t":1_700_000_040_000u64,"T":1_700_000_099_999u64,"s":"BTCUSDT","i":"1m",
               "f":1,"L":2,"o":"100.50000000","c":"99.00000000","h":"100.50000000","l":"99.00000000",
               "v":"3.00000000","n":2,"x":false,"q":"300.00000000","V":"2.00000000","Q":"201.00000000","B":"0"})
    );
    let h1 = loop {
        let v = next_json(&mut us).await;
        assert_eq!(v["stream"], "btcusdt@kline_1h", "{v}");
        if v["data"]["k"]["n"] == 2 {
            break v["data"].clone();
        }
    };
    assert_eq!(
        (&h1["k"]["i"], &h1["k"]["t"], &h1["k"]["T"]),
        (
            &json!("1h"),
            &json!(1_699_999_200_000_000u64),
            &json!(1_700_002_799_999_999u64)
        ),
        "{h1}"
    );
    // A trade in the next minute closes the bar.
    trade_at(&h, T0 + 61 * S, "101", "1", Side::Buy).await;
    let closed = next_json(&mut raw).await;
    body["x"] = json!(true);
    assert_eq!(closed["k"], body);
    let open = next_json(&mut raw).await;
    assert_eq!(
        (&open["k"]["t"], &open["k"]["n"], &open["k"]["x"]),
        (&json!(1_700_000_100_000u64), &json!(1), &json!(false))
    );

    // REST: the closed bar, then the open one.
    let (s, rows) = http_get(&h, "/api/v3/klines?symbol=BTCUSDT&interval=1m").await;
    assert_eq!(s, 200, "{rows}");
    assert_eq!(
        rows,
        json!([
            [
                1_700_000_040_000u64,
                "100.50000000",
                "100.50000000",
                "99.00000000",
                "99.00000000",
                "3.00000000",
                1_700_000_099_999u64,
                "300.00000000",
                2,
                "2.00000000",
                "201.00000000",
                "0"
            ],
            [
                1_700_000_100_000u64,
                "101.00000000",
                "101.00000000",
                "101.00000000",
                "101.00000000",
                "1.00000000",
                1_700_000_159_999u64,
                "101.00000000",
                1,
                "1.00000000",
                "101.00000000",
                "0"
            ]
        ])
    );
    let first = |q: &str| {
        let q = q.to_owned();
        let h = &h;
        async move {
            let (s, v) =
                http_get(h, &format!("/api/v3/klines?symbol=btcusdt&interval=1m{q}")).await;
            assert_eq!(s, 200, "{v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(first("&limit=1").await, [json!(1_700_000_100_000u64)]);
    assert_eq!(
        first("&startTime=1700000040000&limit=1").await,
        [json!(1_700_000_040_000u64)]
    );
    assert_eq!(
        first("&endTime=1700000099999").await,
        [json!(1_700_000_040_000u64)]
    );
    assert!(first("&startTime=1700000100001").await.is_empty());
    let (s, ui) = http_get(&h, "/api/v3/uiKlines?symbol=BTCUSDT&interval=1m").await;
    assert_eq!((s, ui), (200, rows));
    let (_, us_rows) = http_get_with(
        &h,
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=1700000040000000&limit=1",
        "X-MBX-TIME-UNIT: MICROSECOND\r\n",
    )
    .await;
    assert_eq!(
        (&us_rows[0][0], &us_rows[0][6]),
        (
            &json!(1_700_000_040_000_000u64),
            &json!(1_700_000_099_999_999u64)
        )
    );

    // Binance's errors.
    let mandatory = |p: &str| json!({"code":-1102,"msg":format!("Mandatory parameter '{p}' was not sent, was empty/null, or malformed.")});
    for (q, want) in [
        ("interval=1m", mandatory("symbol")),
        ("symbol=BTCUSDT", mandatory("interval")),
        (
            "symbol=BTCUSDT&interval=5m",
            json!({"code":-1120,"msg":"Invalid interval."}),
        ),
        (
            "symbol=NOPE&interval=1m",
            json!({"code":-1121,"msg":"Invalid symbol."}),
        ),
        (
            "symbol=BTCUSDT&interval=1m&startTime=2&endTime=1",
            json!({"code":-1023,"msg":"Start time is greater than end time."}),
        ),
    ] {
        assert_eq!(
            http_get(&h, &format!("/api/v3/klines?{q}")).await,
            (400, want),
            "{q}"
        );
    }
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "startTime=x",
        "endTime=-1",
    ] {
        let (s, e) = http_get(
            &h,
            &format!("/api/v3/klines?symbol=BTCUSDT&interval=1m&{q}"),
        )
        .await;
        assert_eq!((s, &e["code"]), (400, &json!(-1100)), "{q}: {e}");
    }
    // The stream still works after all that.
    trade_at(&h, T0 + 62 * S, "102", "1", Side::Buy).await;
    let next = next_json(&mut raw).await;
    assert_eq!(next["k"]["t"], 1_700_000_100_000u64, "{next}");
    h.shutdown();
}
