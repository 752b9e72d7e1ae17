//! The Binance endpoint's depth streams on the wire: Binance's local-book
//! procedure over `/api/v3/depth` and `@depth` ends equal to tickwire's
//! book, and a client that cannot keep up is disconnected rather than
//! sent a book with holes.

mod binance_support;

use std::time::Duration;

use serde_json::{Value, json};
use tickwire::model::book::{BookChange, BookSide, Level};
use tickwire::model::decimal::Fixed;
use tokio::net::TcpStream;

use binance_support::wire::*;
use binance_support::{WAIT, start, wait_streams};

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
