//! Book diffs that change nothing (every level already has its size: a
//! removal of a level the book does not have, a size sent again, no levels
//! at all), over real sockets: accepted without a reply, not sequenced, no
//! message to any depth, counted in `/metrics`; subscribers at depth 10 and
//! full see contiguous `seq`/`from`, and a client resuming later gets the
//! exact book (docs/PROTOCOL.md, "Publishing books").

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tickwire::model::book::{Book, BookSide};
use tickwire::model::decimal::Fixed;

const SYM: &str = "NOOP";

fn book(snap: bool, bids: Value, asks: Value) -> Value {
    json!({"type":"book","sym":SYM,"ts":1,"snap":snap,"bids":bids,"asks":asks})
}

/// A book message's (seq, from, snap, levels as (side, px, sz) text).
#[derive(Debug, PartialEq)]
struct Got {
    seq: u64,
    from: u64,
    snap: bool,
    levels: Vec<(BookSide, String, String)>,
    cs: u64,
}

fn got(v: &Value) -> Got {
    assert_eq!(v["type"], "book", "{v}");
    let side = |key: &str, s: BookSide| {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(move |l| (s, l[0].to_string(), l[1].to_string()))
            .collect::<Vec<_>>()
    };
    let mut levels = side("bids", BookSide::Bid);
    levels.extend(side("asks", BookSide::Ask));
    Got {
        seq: v["seq"].as_u64().unwrap(),
        from: v["from"].as_u64().unwrap(),
        snap: v["snap"] == true,
        levels,
        cs: v["cs"].as_u64().unwrap(),
    }
}

/// The next book message, skipping replies.
async fn next_book(ws: &mut RawWs) -> Got {
    got(&ws.recv_until("book").await.0)
}

/// Nothing more arrives for a while (the publisher has synced first, so
/// anything the server sends for what it was given is already queued).
async fn nothing_more(ws: &mut RawWs, who: &str) {
    let r = tokio::time::timeout(Duration::from_millis(300), ws.try_recv()).await;
    assert!(r.is_err(), "{who} got a message for no change: {r:?}");
}

async fn book_client(addr: SocketAddr, depth: Value) -> RawWs {
    let mut ws = subscriber(addr).await;
    ws.send_json(
        json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book","quote"],"depth":depth}),
    )
    .await;
    ws.recv_until("subscribed").await;
    ws
}

fn unchanged_total(m: &std::collections::HashMap<String, f64>) -> f64 {
    m.get("tickwire_book_unchanged_total")
        .copied()
        .unwrap_or(-1.0)
}

/// The checksum a client computes for `levels` (docs/PROTOCOL.md "Book
/// checksum", through the model's own book).
fn checksum_of(levels: &[(BookSide, i64, i64)]) -> u64 {
    let mut b = Book::new();
    for &(s, px, sz) in levels {
        b.set(
            s,
            Fixed::from_units(px).unwrap(),
            Fixed::from_units(sz).unwrap(),
        );
    }
    u64::from(b.checksum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_that_changes_nothing_is_accepted_but_not_sequenced() {
    let h = start(config());
    let addr = h.addr();
    let mut d10 = book_client(addr, json!(10)).await;
    let mut full = book_client(addr, json!("full")).await;
    let mut publ = publisher(addr).await;

    publ.publish(&[book(true, json!([[99, 1], [98, 2]]), json!([[101, 1]]))])
        .await;
    let before = scrape_metrics(addr).await;
    assert_eq!(unchanged_total(&before), 0.0);
    // Three diffs that change nothing, each accepted without an error
    // (`publish` fails on any `error` before its pong).
    publ.publish(&[
        book(false, json!([[97, 0]]), json!([])),
        book(false, json!([]), json!([[101, 1]])),
        book(false, json!([]), json!([])),
    ])
    .await;
    // A diff where one level changes and one does not: only the change is
    // sent, at the next seq.
    publ.publish(&[book(false, json!([[97, 0], [98, 5]]), json!([]))])
        .await;
    // The position a client holding seq 2 would resume from.
    let (epoch, offset) = {
        let mut ws = subscriber(addr).await;
        let r = ws.subscribe(1, &[SYM], Some(&["quote"]), false).await;
        (r["epoch"].clone(), r["offset"].clone())
    };
    // Another no-op (the level 97 is still absent), then a real change.
    publ.publish(&[
        book(false, json!([[97, 0]]), json!([[101, 1]])),
        book(false, json!([]), json!([[102, 3]])),
    ])
    .await;

    let cs2 = checksum_of(&[
        (BookSide::Bid, 99, 1),
        (BookSide::Bid, 98, 5),
        (BookSide::Ask, 101, 1),
    ]);
    let cs3 = checksum_of(&[
        (BookSide::Bid, 99, 1),
        (BookSide::Bid, 98, 5),
        (BookSide::Ask, 101, 1),
        (BookSide::Ask, 102, 3),
    ]);
    for (ws, who) in [(&mut d10, "depth 10"), (&mut full, "full depth")] {
        let snap = next_book(ws).await;
        assert!(snap.snap && snap.seq == 1, "{who}: {snap:?}");
        let quote = ws.recv_until("quote").await.0;
        assert_eq!(quote["seq"], 1, "{who}: {quote}");
        assert_eq!(
            next_book(ws).await,
            Got {
                seq: 2,
                from: 2,
                snap: false,
                levels: vec![(BookSide::Bid, "98".into(), "5".into())],
                cs: cs2,
            },
            "{who}"
        );
        assert_eq!(
            next_book(ws).await,
            Got {
                seq: 3,
                from: 3,
                snap: false,
                levels: vec![(BookSide::Ask, "102".into(), "3".into())],
                cs: cs3,
            },
            "{who}"
        );
        nothing_more(ws, who).await;
    }

    let after = scrape_metrics(addr).await;
    assert_eq!(unchanged_total(&after), 4.0, "four no-op diffs counted");
    // Sequenced since the first scrape: the two real diffs, no quote (the
    // top of book never moved) and nothing for the no-ops.
    let sequenced = |m: &std::collections::HashMap<String, f64>| {
        m.get("tickwire_ticks_in_total{source=\"publisher\"}")
            .copied()
            .unwrap()
    };
    assert_eq!(sequenced(&after) - sequenced(&before), 2.0);

    // A client that had everything up to seq 2 resumes from its position:
    // it gets exactly the book at seq 3 (no history entry for the no-ops).
    let mut resumed = subscriber(addr).await;
    resumed
        .send_json(
            json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book"],"depth":"full",
            "resume":{"epoch":epoch,"offset":offset}}),
        )
        .await;
    let reply = resumed.recv_json().await;
    assert_eq!(
        (&reply["type"], &reply["resumed"]["recovered"]),
        (&json!("subscribed"), &json!(true)),
        "{reply}"
    );
    let m = next_book(&mut resumed).await;
    assert_eq!((m.seq, m.cs), (3, cs3), "{m:?}");
    // A book key starts from its snapshot; a diff would have to continue it.
    assert!(m.snap || m.from <= 3, "{m:?}");
    nothing_more(&mut resumed, "the resumed client").await;

    // A snapshot equal to the book is still sequenced.
    publ.publish(&[book(
        true,
        json!([[99, 1], [98, 5]]),
        json!([[101, 1], [102, 3]]),
    )])
    .await;
    let s = next_book(&mut d10).await;
    assert!(s.snap && s.seq == 4 && s.cs == cs3, "{s:?}");
    drop((d10, full, resumed, publ));
    assert_no_leaks(&h).await;
}

/// A no-op diff is still checked: before any snapshot it is refused, as
/// any diff, and it does not count as unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_diff_before_any_snapshot_is_still_refused() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.send_json(book(false, json!([[97, 0]]), json!([])))
        .await;
    let e = publ.recv_json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_book")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("before any snapshot"),
        "{e}"
    );
    publ.publish(&[book(true, json!([[99, 1]]), json!([[101, 1]]))])
        .await;
    publ.send_json(book(false, json!([[97, -1]]), json!([])))
        .await;
    let e = publ.recv_json().await;
    assert_eq!(e["code"], "bad_field", "{e}");
    let m = scrape_metrics(addr).await;
    assert_eq!(unchanged_total(&m), 0.0);
}
