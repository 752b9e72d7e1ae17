//! The Binance endpoint's delivery path over real sockets: the hub frames
//! each event once and writes the shared frame into every subscriber's
//! queue, the session's replies share that queue, and a connection whose
//! queue fills gets its Close after everything queued before it.

mod binance_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::server::ServerHandle;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use binance_support::wire::*;
use binance_support::{WAIT, start, wait_streams, wait_streams_fall_to};

/// Publishes trades `from..to` of BTCUSDT (their `t` is their number, from
/// 1), priced by number so each payload differs.
async fn publish_trades(h: &ServerHandle, from: u64, to: u64) {
    let ticks: Vec<_> = (from..to)
        .map(|i| {
            let t = NewTick {
                sym: "BTCUSDT".into(),
                ts: 1_582_329_600_000_000_000 + i * 1_000,
                event: Event::Trade {
                    px: fx(&format!("{}.25", 9000 + i)),
                    qty: fx("0.5"),
                    side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
                },
                book: None,
            };
            h.ingest().admit(t).unwrap()
        })
        .collect();
    h.ingest().publish(&ticks).await;
}

/// The text frames a client reads until it has `n` trades, answering
/// nothing; requests' replies are kept too, in their place.
async fn read_texts(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    let mut trades = 0;
    while trades < n {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a well-formed frame");
        if let Message::Text(t) = m {
            if t.as_str().contains("\"e\":\"trade\"") {
                trades += 1;
            }
            texts.push(t.as_str().to_owned());
        }
    }
    texts
}

/// Twelve connections on one stream in the three encodings (raw ms, raw
/// µs, combined ms), one of them sending requests while the events flow:
/// every connection gets every trade once, in order, as whole frames; the
/// frames of one encoding are byte-identical across connections (one
/// shared frame), a combined event is exactly the raw payload wrapped, and
/// each reply arrives whole between events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_event_whole_in_order_and_identical() {
    const N: u64 = 3000; // under the default queue (8,192): nobody is dropped
    let h = start(|_| {});
    let paths = [
        "/ws/btcusdt@trade",
        "/ws/btcusdt@trade?timeUnit=MICROSECOND",
        "/stream?streams=btcusdt@trade",
    ];
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push((i % 3, connect(&h, paths[i % 3]).await));
    }
    wait_streams(&h, 12).await;
    // Client 0 asks LIST_SUBSCRIPTIONS three times while trades flow.
    let (_, mut asker) = clients.remove(0);
    let asking = tokio::spawn(async move {
        for id in 1..=3 {
            let req = json!({"method": "LIST_SUBSCRIPTIONS", "id": id});
            asker
                .send(Message::Text(req.to_string().into()))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        read_texts(&mut asker, N as usize).await
    });
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(enc, mut ws)| {
            tokio::spawn(async move { (enc, read_texts(&mut ws, N as usize).await) })
        })
        .collect();
    for from in (1..=N).step_by(100) {
        publish_trades(&h, from, from + 100).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut by_encoding: [Option<Vec<String>>; 3] = Default::default();
    let asked = asking.await.unwrap();
    let replies: Vec<&String> = asked.iter().filter(|t| t.contains("\"result\"")).collect();
    assert_eq!(replies.len(), 3, "each reply arrives whole");
    for (k, r) in replies.iter().enumerate() {
        let v: Value = serde_json::from_str(r).unwrap();
        assert_eq!(v, json!({"result": ["btcusdt@trade"], "id": k + 1}));
    }
    let asked_events: Vec<String> = asked
        .into_iter()
        .filter(|t| !t.contains("\"result\""))
        .collect();
    let mut all = vec![(0, asked_events)];
    for r in readers {
        all.push(r.await.unwrap());
    }
    for (enc, texts) in all {
        assert_eq!(texts.len(), N as usize, "only trades besides the replies");
        for (k, t) in texts.iter().enumerate() {
            let v: Value = serde_json::from_str(t).expect("whole JSON");
            let d = if enc == 2 { &v["data"] } else { &v };
            assert_eq!(d["t"].as_u64(), Some(k as u64 + 1), "every trade, in order");
            assert_eq!(d["p"], format!("{}.25000000", 9001 + k as u64));
        }
        match &by_encoding[enc] {
            None => by_encoding[enc] = Some(texts),
            Some(first) => assert!(first == &texts, "identical frames in one encoding"),
        }
    }
    let [Some(ms), Some(us), Some(combined)] = by_encoding else {
        unreachable!("every encoding had readers")
    };
    for ((raw, micros), wrapped) in ms.iter().zip(&us).zip(&combined) {
        assert_eq!(
            wrapped,
            &format!(r#"{{"stream":"btcusdt@trade","data":{raw}}}"#),
            "a combined event is the raw payload wrapped"
        );
        let (m, u): (Value, Value) = (
            serde_json::from_str(raw).unwrap(),
            serde_json::from_str(micros).unwrap(),
        );
        assert_eq!(m["E"].as_u64().unwrap(), u["E"].as_u64().unwrap() / 1000);
        assert_eq!(m["T"].as_u64().unwrap(), u["T"].as_u64().unwrap() / 1000);
    }
    h.shutdown();
}

/// A connection that stops reading is disconnected when its queue (1,024
/// here) fills, while another on the same stream loses nothing; when it
/// reads again it finds a gapless run of trades from the first, then the
/// Close 1008 "Client cannot keep up" (after what was queued, never in the
/// middle of a frame), then the end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_gets_its_queue_then_the_close_and_others_everything() {
    const N: u64 = 6000; // ~170 bytes each: more than the queue and buffers hold
    let h = start(|b| b.limits.queue_len = 1024);
    let mut fast = connect(&h, "/ws/btcusdt@trade").await;
    // The stalled client: a 4 KiB receive buffer, read by nothing for now.
    let stalled = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&h.binance_addr().unwrap().into()).unwrap();
        s.set_nonblocking(true).unwrap();
        TcpStream::from_std(s.into()).unwrap()
    };
    let url = format!("ws://{}/ws/btcusdt@trade", h.binance_addr().unwrap());
    let (mut stalled, _) = tokio_tungstenite::client_async(url, stalled)
        .await
        .expect("upgrades");
    wait_streams(&h, 2).await;
    // The publisher stays within 500 trades of the fast client.
    let read = Arc::new(AtomicU64::new(0));
    let read_by_fast = read.clone();
    let fast_reading = tokio::spawn(async move {
        for k in 1..=N {
            let d = next_json(&mut fast).await;
            assert_eq!(d["t"].as_u64(), Some(k), "every trade, in order");
            read_by_fast.store(k, Ordering::Relaxed);
        }
        fast // kept open: the count of streams below is the stalled one's
    });
    for from in (1..=N).step_by(100) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while read.load(Ordering::Relaxed) + 500 < from {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fast reader is stuck"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publish_trades(&h, from, from + 100).await;
    }
    let fast = tokio::time::timeout(WAIT, fast_reading)
        .await
        .expect("the fast client got everything in time")
        .unwrap();
    // The stalled client's streams are gone from the hub.
    wait_streams_fall_to(&h, 1).await;
    // Now it reads: trades 1..=k without a gap, then the Close.
    let mut last = 0;
    let close = loop {
        let m = tokio::time::timeout(WAIT, stalled.next())
            .await
            .expect("a frame in time")
            .expect("not ended before the Close")
            .expect("well-formed frames");
        match m {
            Message::Text(t) => {
                let d: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(d["t"].as_u64(), Some(last + 1), "no gap before the Close");
                last += 1;
            }
            Message::Close(c) => break c.expect("a close code"),
            _ => {}
        }
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "Client cannot keep up");
    assert!(
        (1024..N).contains(&last),
        "got its queue, not everything: {last}"
    );
    drop(fast);
    h.shutdown();
}
