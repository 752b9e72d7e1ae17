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
use binance_support::{WAIT, start, wait_streams, wait_streams_fall_to};

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

/// Updates published within one window reach `@depth`, `@depth@100ms` and
/// `@depth5` merged: one event whose `U`..`u` spans them, each price level
/// once with its newest size (a removal kept as `"0.00000000"`), not one
/// event per update. (A window boundary may fall among the updates, so up
/// to two events are allowed; the spacing of events is a timing and is not
/// asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_within_a_window_arrive_merged_per_level() {
    use BookSide::{Ask, Bid};
    let h = start(|_| {});
    book(
        &h,
        "ESM4",
        BookChange::Snapshot(vec![level(Bid, "99", "1"), level(Ask, "101", "1")]),
    )
    .await;
    let (first_seq, _) = h.ingest().book_state("ESM4").unwrap();
    let mut ws = connect(
        &h,
        "/stream?streams=esm4@depth/esm4@depth@100ms/esm4@depth5@100ms",
    )
    .await;
    wait_streams(&h, 3).await;
    // Five updates, published back to back: bid 99 set three times then
    // removed, bid 98 added, ask 101 resized, one update with no level
    // (accepted, but it changes nothing, so it takes no update id).
    let updates = [
        vec![level(Bid, "99", "2")],
        vec![level(Bid, "99", "3"), level(Bid, "98", "4")],
        vec![level(Ask, "101", "5")],
        vec![level(Bid, "99", "0")],
        vec![],
    ];
    for u in updates {
        book(&h, "ESM4", BookChange::Diff(u)).await;
    }
    let (seq, want) = h.ingest().book_state("ESM4").unwrap();
    assert_eq!(seq, first_seq + 4);

    // Per stream: the events after the snapshot's, and the top-5 windows.
    let mut diffs: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let mut windows = Vec::new();
    let done = |d: &std::collections::HashMap<String, Vec<Value>>, w: &Vec<Value>| {
        ["esm4@depth", "esm4@depth@100ms"].iter().all(|s| {
            d.get(*s)
                .and_then(|v| v.last())
                .is_some_and(|e| e["u"].as_u64() == Some(seq))
        }) && w
            .last()
            .is_some_and(|w: &Value| w["lastUpdateId"].as_u64() == Some(seq))
    };
    while !done(&diffs, &windows) {
        let m = next_json(&mut ws).await;
        let stream = m["stream"].as_str().unwrap().to_owned();
        let data = m["data"].clone();
        if stream == "esm4@depth5@100ms" {
            windows.push(data);
        } else if data["u"].as_u64().unwrap() > first_seq {
            diffs.entry(stream).or_default().push(data);
        }
    }
    for (stream, events) in &diffs {
        assert!(
            events.len() <= 2,
            "{stream}: 4 updates merged, not {events:?}"
        );
        let mut next = events[0]["U"].as_u64().unwrap();
        assert!(
            next <= first_seq + 1,
            "{stream}: the first covers update {}",
            first_seq + 1
        );
        let mut local = std::collections::BTreeMap::new();
        local.insert((Ask, fx("101")), fx("1"));
        local.insert((Bid, fx("99")), fx("1"));
        for e in events {
            assert_eq!(e["U"].as_u64(), Some(next), "{stream}: an unbroken chain");
            next = e["u"].as_u64().unwrap() + 1;
            for (side, key) in [(Bid, "b"), (Ask, "a")] {
                let levels = e[key].as_array().unwrap();
                let mut prices: Vec<_> = levels.iter().map(|l| dec(&l[0])).collect();
                prices.dedup();
                assert_eq!(
                    prices.len(),
                    levels.len(),
                    "{stream}: a level once per event: {e}"
                );
                for l in levels {
                    let (px, sz) = (dec(&l[0]), dec(&l[1]));
                    if sz == Fixed::ZERO {
                        local.remove(&(side, px));
                    } else {
                        local.insert((side, px), sz);
                    }
                }
            }
        }
        let want: std::collections::BTreeMap<_, _> =
            want.iter().map(|l| ((l.side, l.px), l.sz)).collect();
        assert_eq!(local, want, "{stream}");
        // The event that ends the chain holds bid 99's newest size: removed.
        let last_99 = events
            .iter()
            .rev()
            .find_map(|e| {
                e["b"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l[0] == "99.00000000")
                    .cloned()
            })
            .expect("bid 99 in an event");
        assert_eq!(last_99[1], "0.00000000", "{stream}: the removal is kept");
        // Most of the five updates share an event.
        assert!(
            events
                .iter()
                .any(|e| e["u"].as_u64().unwrap() - e["U"].as_u64().unwrap() >= 2),
            "{stream}: {events:?}"
        );
    }
    // The window after the updates, sent at most once per window with a
    // change (the subscribe snapshot, then at most two).
    assert!(windows.len() <= 3, "{windows:?}");
    assert_eq!(
        windows.last().unwrap()["bids"],
        json!([["98.00000000", "4.00000000"]])
    );
    assert_eq!(
        windows.last().unwrap()["asks"],
        json!([["101.00000000", "5.00000000"]])
    );
    h.shutdown();
}

/// A client that stops reading is disconnected once its queue is full
/// (never conflated: a skipped depth diff would break its book); a client
/// that keeps reading gets every trade and every diff, an unbroken `U`/`u`
/// chain. Trades fill the queue: depth events come at most 10 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_disconnected_and_others_lose_nothing() {
    use BookSide::{Ask, Bid};
    use tickwire::model::tick::{Event, NewTick, Side};
    // The queue must hold a ring batch (1,024): the hub queues a whole
    // batch before the sessions on its thread run.
    let h = start(|b| b.limits.queue_len = 1024);
    let px = |i: usize| format!("{}", 1000 + i);
    let snapshot: Vec<Level> = (0..100)
        .map(|i| level(Bid, &px(i), "1"))
        .chain((0..100).map(|i| level(Ask, &px(2000 + i), "1")))
        .collect();
    book(&h, "ESM4", BookChange::Snapshot(snapshot)).await;
    const STREAMS: &str = "/ws/esm4@depth@100ms/esm4@trade";
    let reader = connect(&h, STREAMS).await;
    // Upgraded by hand with a small receive buffer, then never read.
    let stalled = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&h.binance_addr().unwrap().into()).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(s.into()).unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(
            format!(
                "GET {STREAMS} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s
    };
    wait_streams(&h, 4).await;
    // 8,000 trades (~170 bytes each on the wire): more events than the
    // stalled client's queue (1,024) and socket buffers hold; a book diff
    // of 100 levels after each 100 trades.
    const TRADES: u64 = 8000;
    let first_seq = h.ingest().book_state("ESM4").unwrap().0;
    // Trades the reader has read: the publisher stays within 500 of it, so
    // the reader (unlike the stalled client) keeps up.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let read_by_reader = read.clone();
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        let (mut trades, mut last_u) = (0u64, first_seq);
        while trades < TRADES || last_u < first_seq + TRADES / 100 {
            let d = next_json(&mut reader).await;
            if d["e"] == "trade" {
                trades += 1;
                assert_eq!(d["t"].as_u64(), Some(trades), "every trade, in order");
                read_by_reader.store(trades, std::sync::atomic::Ordering::Relaxed);
            } else if d["u"].as_u64().unwrap() > first_seq {
                // The first may also cover the snapshot (Binance's step 5).
                let first = d["U"].as_u64().unwrap();
                if last_u == first_seq {
                    assert!(first <= last_u + 1, "{d}");
                } else {
                    assert_eq!(first, last_u + 1, "an unbroken chain");
                }
                last_u = d["u"].as_u64().unwrap();
            }
        }
        reader
    });
    for n in 0..TRADES / 100 {
        let deadline = tokio::time::Instant::now() + WAIT;
        while read.load(std::sync::atomic::Ordering::Relaxed) + 500 < n * 100 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reader is stuck"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ticks: Vec<_> = (0..100)
            .map(|_| {
                let t = NewTick {
                    sym: "ESM4".into(),
                    ts: 1_582_329_600_123_456_789,
                    event: Event::Trade {
                        px: fx("5234.25"),
                        qty: fx("3"),
                        side: Side::Buy,
                    },
                    book: None,
                };
                h.ingest().admit(t).unwrap()
            })
            .collect();
        h.ingest().publish(&ticks).await;
        let sz = format!("{}", 2 + n % 7);
        book(
            &h,
            "ESM4",
            BookChange::Diff((0..100).map(|i| level(Bid, &px(i), &sz)).collect()),
        )
        .await;
    }
    let reader = tokio::time::timeout(WAIT, reading)
        .await
        .expect("the reader got everything in time")
        .unwrap();
    // The hub dropped the stalled client (and its streams) when its queue filled.
    wait_streams_fall_to(&h, 2).await;
    drop((stalled, reader));
    h.shutdown();
}
