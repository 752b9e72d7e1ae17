//! Slow consumers: they never delay anyone else, cost bounded memory, get
//! the newest value of every key when they drain, and are evicted with 4000
//! when they stay behind. A full ingest ring pushes back on publishers.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::Value;

const KEYS: usize = 50;

fn round(r: u64) -> Value {
    Value::Array(
        (0..KEYS)
            .map(|k| trade(&format!("K{k:02}"), r, &format!("{r}.5"), "1"))
            .collect(),
    )
}

/// Reads a fast client in a task; tells the publisher after each round.
fn fast_reader(
    mut ws: RawWs,
    rounds: u64,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::Receiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for i in 1..=rounds * KEYS as u64 {
            let v = ws.recv_json().await;
            let seq = last
                .entry(v["sym"].as_str().unwrap().to_string())
                .or_insert(0);
            assert_eq!(
                v["seq"].as_u64().unwrap(),
                *seq + 1,
                "fast client saw a gap"
            );
            *seq += 1;
            if i % KEYS as u64 == 0 {
                tx.send(()).await.unwrap();
            }
        }
    });
    (task, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_costs_bounded_memory_and_gets_the_newest_values() {
    let h = start_with_small_buffers(16 * 1024, Duration::from_secs(60));
    let addr = h.addr();

    // The stalled client: tiny receive buffer, subscribed to everything, never reads.
    let mut stalled = stalled_client(addr).await;
    stalled.subscribe(1, &["*"], None, false).await;

    let mut fast = subscriber(addr).await;
    fast.subscribe(1, &["*"], None, false).await;
    let rounds = 200u64;
    let (reader, mut progress) = fast_reader(fast, rounds);

    let mut publ = publisher(addr).await;
    let (mut max_pending, mut max_queued) = (0i64, 0i64);
    for r in 1..=rounds {
        publ.send_json(round(r)).await;
        // The fast client keeps receiving every round while the other is stalled.
        tokio::time::timeout(WAIT, progress.recv())
            .await
            .expect("fast client delayed")
            .unwrap();
        max_pending = max_pending.max(h.stats().pending_ticks.load(Ordering::Relaxed));
        max_queued = max_queued.max(h.stats().queued_bytes.load(Ordering::Relaxed));
    }
    reader.await.unwrap();
    let dropped = h.stats().ticks_dropped_stale.load(Ordering::Relaxed);
    // 10,000 ticks went by; the stalled client holds at most one per key
    // plus its byte cap (plus the fast client's one round in flight).
    assert!(
        dropped > 5_000,
        "stale ticks were dropped, not buffered: {dropped}"
    );
    assert!(
        max_pending <= KEYS as i64,
        "pending slots {max_pending} > one per key"
    );
    assert!(
        max_queued <= 16 * 1024 + 12 * 1024,
        "queued bytes {max_queued} beyond the cap"
    );

    // It resumes: it reads until it holds the newest value of every key,
    // with seq increasing per key (gaps allowed, no reordering).
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut got = 0;
    while last.len() < KEYS || last.values().any(|&s| s < rounds) {
        let v = stalled.recv_json().await;
        let seq = v["seq"].as_u64().unwrap();
        let prev = last
            .entry(v["sym"].as_str().unwrap().to_string())
            .or_insert(0);
        assert!(seq > *prev, "reordered or repeated: {v}");
        *prev = seq;
        got += 1;
    }
    assert!(
        got < rounds as usize * KEYS,
        "the stalled client did not get every tick ({got})"
    );
    assert_eq!(h.stats().clients_evicted.load(Ordering::Relaxed), 0);
    drop((stalled, publ));
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_too_long_gets_lagging_then_4000() {
    let h = start_with_small_buffers(8 * 1024, Duration::from_millis(300));
    let addr = h.addr();
    let mut stalled = stalled_client(addr).await;
    stalled.subscribe(1, &["*"], None, false).await;
    let mut fast = subscriber(addr).await;
    fast.subscribe(1, &["*"], None, false).await;
    let rounds = 40u64;
    let (reader, mut progress) = fast_reader(fast, rounds);
    let mut publ = publisher(addr).await;
    for r in 1..=rounds {
        publ.send_json(round(r)).await;
        progress.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    reader.await.unwrap();
    // Reading now: whatever was in flight, then `lagging`, then close 4000.
    expect_evicted(&mut stalled, 300).await;
    stalled.expect_eof().await;
    assert_eq!(h.stats().clients_evicted.load(Ordering::Relaxed), 1);
    drop(publ);
    assert_no_leaks(&h).await;
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_pushes_back_on_the_publisher_and_loses_nothing() {
    let mut c = config();
    c.ring_capacity = 8;
    let h = start(c);
    let mut sub = subscriber(h.addr()).await;
    sub.subscribe(1, &["R"], None, false).await;
    let n = 4000u64;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let reader = tokio::spawn(async move {
        for expect in 1..=n {
            let v = sub.recv_json().await;
            assert_eq!(v["seq"].as_u64(), Some(expect));
            if expect % 200 == 0 {
                tx.send(()).await.unwrap();
            }
        }
    });
    let mut publ = publisher(h.addr()).await;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(200) {
        publ.send_json(Value::Array(
            chunk.iter().map(|i| trade("R", *i, "1", "1")).collect(),
        ))
        .await;
        rx.recv().await.unwrap();
    }
    reader.await.unwrap();
    assert!(
        h.stats().ring_full.load(Ordering::Relaxed) > 0,
        "the ring filled up"
    );
    assert_eq!(h.stats().ticks_in.load(Ordering::Relaxed), n);
    h.shutdown();
}
