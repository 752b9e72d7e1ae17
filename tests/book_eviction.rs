//! A stalled book subscriber past its byte cap for longer than
//! `evict_after` gets `lagging` then close 4000, as tick subscribers do,
//! while a fast book subscriber beside it stays consistent: its book, rebuilt
//! from snapshot + diffs over a real socket, equals the server's top 10 at
//! every `seq` it reports, and every checksum matches.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tickwire::model::book::{Book, BookSide};
use tickwire::model::decimal::Fixed;

const SYM: &str = "BK";
const DEPTH: usize = 10;

fn px(n: i64) -> String {
    n.to_string()
}

/// One publish message and the server book it leaves.
fn publish_msg(snap: bool, levels: &[(BookSide, i64, i64)], ts: u64) -> Value {
    let side = |s: BookSide| -> Vec<Value> {
        levels
            .iter()
            .filter(|l| l.0 == s)
            .map(|l| json!([px(l.1), px(l.2)]))
            .collect()
    };
    json!({"type":"book","sym":SYM,"ts":ts,"snap":snap,"bids":side(BookSide::Bid),"asks":side(BookSide::Ask)})
}

/// A client's copy of the book, checked against the server's at each seq.
struct Copy {
    who: &'static str,
    book: Book,
    seq: u64,
    /// Messages applied, for the caller's bound.
    messages: u64,
}

impl Copy {
    /// Applies one `book` message; panics on any inconsistency.
    fn apply(&mut self, v: &Value, refs: &[Book]) {
        let who = self.who;
        let seq = v["seq"].as_u64().unwrap();
        if v["snap"] == true {
            self.book = Book::new();
        } else {
            let from = v["from"].as_u64().unwrap();
            assert!(
                self.seq > 0 && from <= self.seq + 1 && seq > self.seq,
                "{who}: diff {from}..{seq} does not continue from {}",
                self.seq
            );
        }
        for (key, side) in [("bids", BookSide::Bid), ("asks", BookSide::Ask)] {
            for l in v[key].as_array().unwrap() {
                let f = |x: &Value| Fixed::parse(&x.to_string().replace('"', "")).unwrap();
                self.book.set(side, f(&l[0]), f(&l[1]));
            }
        }
        self.seq = seq;
        self.messages += 1;
        let want = refs[seq as usize].window(DEPTH);
        assert_eq!(
            self.book.window(usize::MAX),
            want,
            "{who}: book differs at seq {seq}"
        );
        assert_eq!(
            v["cs"].as_u64().unwrap() as u32,
            self.book.checksum(),
            "{who}: checksum at seq {seq}"
        );
    }
}

/// Deterministic updates: an opening 40-level snapshot, then diffs that
/// resize, remove and re-add levels near the top (never crossing: bids
/// below 1000, asks above), each round ending at the best bid so every
/// depth-10 client sees it. `refs[seq]` is the server's book after `seq`.
fn stream(rounds: usize, per_round: usize) -> (Vec<Vec<Value>>, Vec<Book>, Vec<u64>) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut book = Book::new();
    let mut refs = vec![Book::new()];
    let mut batches = Vec::new();
    let mut round_end = Vec::new();
    let snap: Vec<(BookSide, i64, i64)> = (0..40)
        .flat_map(|i| {
            [
                (BookSide::Bid, 999 - i, 10 + i),
                (BookSide::Ask, 1001 + i, 10 + i),
            ]
        })
        .collect();
    for l in &snap {
        book.set(l.0, Fixed(l.1 * 1_000_000_000), Fixed(l.2 * 1_000_000_000));
    }
    refs.push(book.clone());
    batches.push(vec![publish_msg(true, &snap, 1)]);
    let mut ts = 2;
    for _ in 0..rounds {
        let mut batch = Vec::new();
        for k in 0..per_round {
            let mut levels = Vec::new();
            for _ in 0..3 {
                let side = if next(2) == 0 {
                    BookSide::Bid
                } else {
                    BookSide::Ask
                };
                let p = match side {
                    BookSide::Bid => 999 - next(14) as i64,
                    BookSide::Ask => 1001 + next(14) as i64,
                };
                if levels
                    .iter()
                    .any(|l: &(BookSide, i64, i64)| l.0 == side && l.1 == p)
                {
                    continue;
                }
                let sz = if next(4) == 0 { 0 } else { 1 + next(99) as i64 };
                levels.push((side, p, sz));
            }
            if k == per_round - 1 {
                levels.retain(|l| !(l.0 == BookSide::Bid && l.1 == 999));
                levels.push((BookSide::Bid, 999, 1 + ts as i64 % 50));
            }
            for l in &levels {
                book.set(l.0, Fixed(l.1 * 1_000_000_000), Fixed(l.2 * 1_000_000_000));
            }
            refs.push(book.clone());
            batch.push(publish_msg(false, &levels, ts));
            ts += 1;
        }
        round_end.push(refs.len() as u64 - 1);
        batches.push(batch);
    }
    (batches, refs, round_end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_book_client_is_evicted_while_a_fast_one_stays_consistent() {
    let h = start_with_small_buffers(8 * 1024, Duration::from_millis(300));
    let addr = h.addr();
    let (batches, refs, round_end) = stream(40, 20);
    let refs = Arc::new(refs);

    let mut publ = publisher(addr).await;
    publ.publish(&batches[0]).await;
    let sub = json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book"],"depth":DEPTH});
    let mut stalled = stalled_client(addr).await;
    stalled.send_json(sub.clone()).await;
    stalled.recv_until("subscribed").await;
    let mut fast = subscriber(addr).await;
    fast.send_json(sub).await;
    fast.recv_until("subscribed").await;

    // The fast client: every message checked; reports each seq reached.
    let (tx, mut reached) = tokio::sync::watch::channel(0u64);
    let fast_refs = refs.clone();
    let reader = tokio::spawn(async move {
        let mut copy = Copy {
            who: "fast",
            book: Book::new(),
            seq: 0,
            messages: 0,
        };
        let last = fast_refs.len() as u64 - 1;
        while copy.seq < last {
            let v = fast.recv_json().await;
            assert_eq!(v["type"], "book", "{v}");
            copy.apply(&v, &fast_refs);
            tx.send(copy.seq).unwrap();
        }
        copy.messages
    });

    let mut max_levels = 0i64;
    for (batch, &end) in batches[1..].iter().zip(&round_end) {
        publ.send_json(Value::Array(batch.clone())).await;
        tokio::time::timeout(WAIT, reached.wait_for(|&s| s >= end))
            .await
            .expect("the fast book client was delayed")
            .unwrap();
        max_levels = max_levels.max(h.stats().pending_book_levels.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The stalled client's merged diff: at most one entry per price level
    // (80 exist: 40 per side), however many updates went by.
    assert!(
        max_levels > 0 && max_levels <= 80,
        "pending book levels {max_levels}"
    );
    let checked = reader.await.unwrap();
    assert!(checked > 40, "the fast client checked {checked} messages");

    // The stalled client: what was in flight is consistent, then
    // `lagging`, then close 4000.
    let texts = expect_evicted(&mut stalled, 300).await;
    let mut copy = Copy {
        who: "stalled",
        book: Book::new(),
        seq: 0,
        messages: 0,
    };
    let books: Vec<Value> = texts
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap())
        .filter(|v| v["type"] == "book")
        .collect();
    assert!(
        !books.is_empty(),
        "the stalled client got its snapshot first"
    );
    for v in &books {
        copy.apply(v, &refs);
    }
    assert!(
        copy.seq < refs.len() as u64 - 1,
        "the stalled client was evicted before it caught up"
    );
    stalled.expect_eof().await;
    assert_eq!(h.stats().clients_evicted.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats().pending_book_levels.load(Ordering::Relaxed), 0);
    drop(publ);
    assert_no_leaks(&h).await;
    h.shutdown();
}

/// A stalled book client that goes away before it is evicted (here the
/// eviction is an hour off) takes its merged levels with it: the
/// `tickwire_pending_book_levels` gauge returns to zero, as the pending
/// ticks and queued bytes do. (It used to keep the levels of every such
/// client: a server that had seen stalled book clients disconnect
/// reported levels held by nobody.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_book_client_that_disconnects_leaves_no_pending_levels() {
    let h = start_with_small_buffers(8 * 1024, Duration::from_secs(3600));
    let addr = h.addr();
    let (batches, _refs, _round_end) = stream(40, 20);
    let mut publ = publisher(addr).await;
    publ.publish(&batches[0]).await;
    let sub = json!({"op":"subscribe","id":1,"symbols":[SYM],"channels":["book"],"depth":DEPTH});
    let mut stalled = stalled_client(addr).await;
    stalled.send_json(sub).await;
    stalled.recv_until("subscribed").await;
    for batch in &batches[1..] {
        publ.send_json(Value::Array(batch.clone())).await;
    }
    // Past its byte cap, its changes merge per level.
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.stats().pending_book_levels.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client never held merged levels"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stalled);
    drop(publ);
    assert_no_leaks(&h).await;
    h.shutdown();
}
