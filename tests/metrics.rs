//! `/metrics` over HTTP after a known workload: every figure checked
//! against what the test did.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;
use tickwire::server::ServerHandle;
use tickwire::server::config::FeedSource;

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("no series {k} in {:?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_known_workload() {
    let h = start(config());
    let addr = h.addr();
    let m = scrape_metrics(addr).await;
    assert_eq!(
        get(&m, r#"tickwire_ticks_in_total{source="publisher"}"#),
        0.0
    );
    assert_eq!(get(&m, r#"tickwire_connections{kind="subscriber"}"#), 0.0);

    let mut publ = publisher(addr).await;
    let mut js = subscriber(addr).await;
    js.subscribe(1, &["AAPL"], None, false).await;
    let (mut bin, _) = connect_with(
        addr,
        "/v1/stream",
        "Sec-WebSocket-Protocol: tickwire.bin.v1\r\n",
        None,
    )
    .await;
    assert_eq!(bin.recv_json().await["protocol"], "tickwire.bin.v1");
    bin.subscribe(1, &["*"], Some(&["trade"]), false).await;
    // One refused control message, one refused tick.
    js.send_text(r#"{"op":"nope","id":5}"#).await;
    assert_eq!(js.recv_json().await["code"], "unknown_op");
    publ.send_text(r#"{"type":"trade","sym":"AAPL","ts":1,"px":"x","qty":1}"#)
        .await;
    assert_eq!(publ.recv_json().await["type"], "error");

    let mut ticks = Vec::new();
    for i in 0..5 {
        ticks.push(trade("AAPL", 10 + i, "1.25", "3"));
    }
    for i in 0..3 {
        ticks.push(quote("AAPL", 20 + i, "1", "2"));
    }
    publ.publish(&ticks).await;
    for _ in 0..8 {
        assert_ne!(js.recv_json().await["type"], "error");
    }
    let mut records = 0;
    let mut announcements = 0;
    while records < 5 {
        match bin.recv().await {
            Msg::Binary(p) => records += p.len() / 64,
            Msg::Text(t) => {
                assert!(t.contains(r#""type":"symbol""#), "{t}");
                announcements += 1;
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!((records, announcements), (5, 1));

    // The client can read a frame before the server's write() has returned
    // and the gauge has been brought down: let the writes finish.
    let stats = h.stats().clone();
    eventually("queued bytes written", || {
        stats
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    // The bar clock's updates for AAPL (nobody's subscription) may reach
    // the ring just before the scrape, ahead of the worker on a loaded
    // machine (12 of them once, in a `cargo test --workspace`): let it
    // read them.
    let mut m = scrape_metrics(addr).await;
    for _ in 0..200 {
        if get(&m, "tickwire_ring_occupancy") == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        m = scrape_metrics(addr).await;
    }
    let expect = [
        (r#"tickwire_connections{kind="subscriber"}"#, 2.0),
        (r#"tickwire_connections{kind="publisher"}"#, 1.0),
        ("tickwire_connections_opened_total", 3.0),
        ("tickwire_connections_admitted", 3.0),
        (r#"tickwire_subscriptions{type="named"}"#, 2.0),
        (r#"tickwire_subscriptions{type="star"}"#, 1.0),
        (r#"tickwire_ticks_in_total{source="publisher"}"#, 8.0),
        (r#"tickwire_ticks_in_total{source="recorded"}"#, 0.0),
        (r#"tickwire_ticks_out_total{encoding="json"}"#, 8.0),
        (r#"tickwire_ticks_out_total{encoding="binary"}"#, 5.0),
        (r#"tickwire_frames_out_total{encoding="json"}"#, 8.0),
        ("tickwire_ticks_dropped_stale_total", 0.0),
        ("tickwire_clients_evicted_total", 0.0),
        // Nobody fell behind: no catch-up started, paused or fell out.
        ("tickwire_catchup_started_total", 0.0),
        ("tickwire_catchup_gaps_total", 0.0),
        ("tickwire_catchup_pauses_total", 0.0),
        ("tickwire_ring_occupancy", 0.0),
        (
            "tickwire_ring_capacity",
            tickwire::server::config::Config::default()
                .ring_capacity
                .next_power_of_two() as f64,
        ),
        ("tickwire_ring_full_total", 0.0),
        ("tickwire_publish_errors_total", 1.0),
        // `error` replies: the bad control message and the bad tick.
        ("tickwire_request_errors_total", 2.0),
        ("tickwire_queued_bytes", 0.0),
        ("tickwire_pending_ticks", 0.0),
    ];
    for (k, v) in expect {
        assert_eq!(get(&m, k), v, "{k}");
    }
    let bin_frames = get(&m, r#"tickwire_frames_out_total{encoding="binary"}"#);
    assert!((1.0..=5.0).contains(&bin_frames), "{bin_frames}");
    // hello + subscribed + symbol + pong-free: at least the 5 records.
    assert!(get(&m, r#"tickwire_bytes_out_total{encoding="binary"}"#) > 5.0 * 64.0);
    assert!(get(&m, r#"tickwire_bytes_out_total{encoding="json"}"#) > 8.0 * 100.0);
    assert!(get(&m, "tickwire_socket_writes_total") >= 3.0);
    for h in [
        "tickwire_ingest_to_encode_seconds",
        "tickwire_encode_to_write_seconds",
    ] {
        let count = get(&m, &format!("{h}_count"));
        assert!(count >= 1.0, "{h}: {count}");
        assert_eq!(get(&m, &format!("{h}_bucket{{le=\"+Inf\"}}")), count);
        let sum = get(&m, &format!("{h}_sum"));
        assert!(sum >= 0.0 && sum / count < 1.0, "{h}: mean {}", sum / count);
    }
    // Every tick written was live, within a second: 8 ticks to the JSON
    // client reached it in at most 8 writes, 5 to the binary one in at most 5.
    assert!(get(&m, "tickwire_encode_to_write_seconds_count") <= 13.0);

    // Unsubscribing and leaving bring the gauges back.
    js.send_json(json!({"op":"unsubscribe","id":2,"symbols":["AAPL"],"channels":["quote"]}))
        .await;
    js.recv_until("unsubscribed").await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, r#"tickwire_subscriptions{type="named"}"#), 1.0);
    drop((js, bin, publ));
    assert_no_leaks(&h).await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, r#"tickwire_subscriptions{type="named"}"#), 0.0);
    assert_eq!(get(&m, r#"tickwire_subscriptions{type="star"}"#), 0.0);
    assert_eq!(get(&m, r#"tickwire_connections{kind="subscriber"}"#), 0.0);
    eventually("admission places given back", || h.connections() == (0, 0)).await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, "tickwire_connections_admitted"), 0.0);
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_ticks_are_counted_apart_from_published_ones() {
    let h = start(tickwire::server::config::Config {
        feed: FeedSource::Embedded {
            speed: tickwire::model::speed::Speed::Factor(1.0),
        },
        ..config()
    });
    let addr = h.addr();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = scrape_metrics(addr).await;
        let recorded = get(&m, r#"tickwire_ticks_in_total{source="recorded"}"#);
        assert_eq!(
            get(&m, r#"tickwire_ticks_in_total{source="publisher"}"#),
            0.0
        );
        if recorded > 0.0 {
            assert!(get(&m, "tickwire_ingest_to_encode_seconds_count") >= 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recorded ticks");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.shutdown();
}

/// Deliveries per write: a publisher frame's ticks reach a subscriber in
/// one write (the frame enters the ring as one batch, and the worker
/// delivers the whole batch before it flushes), a lone tick gets a write of
/// its own at once, and snapshots are not counted as deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_per_write_follow_the_batches() {
    let h = start(config());
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    // A last value to snapshot: not a live delivery.
    publ.publish(&[trade("AAPL", 1, "1", "1")]).await;
    let mut sub = subscriber(addr).await;
    sub.subscribe(1, &["AAPL"], None, true).await;
    assert_eq!(sub.recv_json().await["snap"], true);

    let ticks: Vec<_> = (0..50).map(|i| trade("AAPL", 10 + i, "1.5", "2")).collect();
    publ.publish(&ticks).await;
    for i in 0..50 {
        assert_eq!(sub.recv_json().await["ts"], 10 + i);
    }
    let stats = h.stats().clone();
    let written = || {
        stats
            .tick_deliveries
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually("the 50 ticks counted", || written() == 50).await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, "tickwire_tick_deliveries_total"), 50.0);
    assert_eq!(get(&m, "tickwire_tick_writes_total"), 1.0);
    assert_eq!(get(&m, "tickwire_deliveries_per_write"), 50.0);

    // A lone tick is not held back for company: it has its own write.
    publ.publish(&[trade("AAPL", 99, "1", "1")]).await;
    assert_eq!(sub.recv_json().await["ts"], 99);
    eventually("the lone tick counted", || written() == 51).await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, "tickwire_tick_writes_total"), 2.0);
    assert_eq!(get(&m, "tickwire_deliveries_per_write"), 25.5);

    // At this load the coalescing window never opened: nothing waited.
    for i in 0..20 {
        publ.publish(&[trade("AAPL", 100 + i, "1", "1")]).await;
        assert_eq!(sub.recv_json().await["ts"], 100 + i);
    }
    eventually("the lone ticks counted", || written() == 71).await;
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, "tickwire_tick_writes_total"), 22.0);
    assert_eq!(get(&m, "tickwire_coalesce_opened_total"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_holds_total"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_held_seconds_total"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_open_workers"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_window_seconds"), 0.0);
    h.shutdown();
}

/// A worker kept busy by a flood of ticks to many clients opens its
/// coalescing window: passes wait (counted), every tick still reaches every
/// client once and in order; when the flood stops the window closes. The
/// opening threshold is set low (5% of a core in CPU time) so that
/// the flood crosses it however fast or loaded the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_opens_its_coalescing_window_and_loses_nothing() {
    const CLIENTS: usize = 50;
    const SYMBOLS: [&str; 5] = ["C0", "C1", "C2", "C3", "C4"];
    let mut c = config();
    c.workers = 1;
    c.coalesce.busy = 0.05;
    c.coalesce.paying_busy = 0.05;
    // A bound above a debug build's pass, so that the window can grow past
    // it and passes wait.
    c.coalesce.max_window = std::time::Duration::from_millis(20);
    // No client may fall behind into coalescing or eviction: the test
    // counts every tick.
    c.client_buffer_bytes = 16 << 20;
    c.evict_after = std::time::Duration::from_secs(120);
    c.idle_timeout = std::time::Duration::ZERO;
    let h = start(c);
    let addr = h.addr();
    let stats = h.stats().clone();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let mut sub = subscriber(addr).await;
        sub.subscribe(1, &SYMBOLS, None, false).await;
        sub.subscribe(2, &["END"], None, false).await;
        // Reads raw bytes (cheap: the server, not this reader, is to be
        // the busy side) up to the end marker, then checks that each
        // symbol's ticks came one by one, in order.
        readers.push(tokio::spawn(async move {
            sub.read_raw_until(b"\"END\"").await;
            let mut next = [1u64; SYMBOLS.len()];
            loop {
                let t = sub.recv_json().await;
                if t["sym"] == "END" {
                    return next;
                }
                let i = SYMBOLS.iter().position(|s| t["sym"] == *s).unwrap();
                assert_eq!(t["ts"], next[i], "{t}");
                next[i] += 1;
            }
        }));
    }
    let mut publ = publisher(addr).await;
    // Frames of one tick per symbol, back to back, until some passes have
    // waited (bounded).
    let mut frames = 0u64;
    while frames < 3_000 && load(&stats.coalesce_holds) < 10 {
        frames += 1;
        let ticks: Vec<_> = SYMBOLS.iter().map(|s| trade(s, frames, "1", "1")).collect();
        publ.send_json(serde_json::Value::Array(ticks)).await;
        if frames.is_multiple_of(20) {
            publ.sync().await;
        }
    }
    publ.publish(&[trade("END", 1, "1", "1")]).await;
    for r in readers {
        assert_eq!(r.await.unwrap(), [frames + 1; SYMBOLS.len()]);
    }
    let m = scrape_metrics(addr).await;
    assert!(get(&m, "tickwire_coalesce_opened_total") >= 1.0, "{m:?}");
    assert!(get(&m, "tickwire_coalesce_holds_total") >= 10.0, "{m:?}");
    assert!(get(&m, "tickwire_coalesce_held_seconds_total") > 0.0);
    assert_eq!(get(&m, "tickwire_ticks_dropped_stale_total"), 0.0);

    // The flood is over: lone ticks, each read before the next, make the
    // worker's passes a small share of its time, and the window closes.
    let mut sub = subscriber(addr).await;
    sub.subscribe(1, &["Z"], None, false).await;
    let mut ts = 0;
    while stats
        .coalesce_open
        .load(std::sync::atomic::Ordering::Relaxed)
        != 0
    {
        ts += 1;
        assert!(ts < 200, "the window stayed open at light load");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        publ.publish(&[trade("Z", ts, "1", "1")]).await;
        assert_eq!(sub.recv_json().await["ts"], ts);
    }
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, "tickwire_coalesce_window_seconds"), 0.0);
    h.shutdown();
}

/// The gate on the clients' tick rate (`--coalesce-min-yield`), without
/// timing: two servers get the same lone ticks, each in its own measuring
/// period, with the share at which a window opens where holding pays set
/// so low that any pass reaches it, and `--coalesce-busy` at a whole core,
/// which lone ticks never reach. Where any rate pays (`min_yield` 1) the
/// worker says so and its window opens; where none can (10⁶ ticks per
/// write), it stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_opens_below_busy_only_where_holding_pays() {
    let server = |min_yield: f64| {
        let mut c = config();
        c.workers = 1;
        c.coalesce.busy = 1.0;
        c.coalesce.paying_busy = 1e-6;
        c.coalesce.min_yield = min_yield;
        c.idle_timeout = std::time::Duration::ZERO;
        assert_eq!(c.coalesce.validate(), Ok(()));
        start(c)
    };
    let (pays, never) = (server(1.0), server(1e6));
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for h in [&pays, &never] {
        let mut sub = subscriber(h.addr()).await;
        sub.subscribe(1, &["P"], None, false).await;
        subs.push(sub);
        pubs.push(publisher(h.addr()).await);
    }
    let opened = |h: &ServerHandle| {
        h.stats()
            .coalesce_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut ts = 0;
    while opened(&pays) == 0 {
        ts += 1;
        assert!(ts < 100, "the window never opened where any rate pays");
        // Longer than a measuring period (50 ms): each tick's pass ends one.
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        for (p, s) in pubs.iter_mut().zip(&mut subs) {
            p.publish(&[trade("P", ts, "1", "1")]).await;
            assert_eq!(s.recv_json().await["ts"], ts);
        }
    }
    let m = scrape_metrics(pays.addr()).await;
    assert_eq!(get(&m, "tickwire_coalesce_paying_workers"), 1.0);
    assert!(get(&m, "tickwire_coalesce_opened_total") >= 1.0);
    let m = scrape_metrics(never.addr()).await;
    assert_eq!(get(&m, "tickwire_coalesce_paying_workers"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_opened_total"), 0.0);
    assert_eq!(get(&m, "tickwire_coalesce_open_workers"), 0.0);
    pays.shutdown();
    never.shutdown();
}

/// An SSE stream counts in the subscriber series beside WebSocket ones,
/// and the series' HELP says so (it said "WebSocket" only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_count_as_subscribers_and_the_help_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(config());
    let addr = h.addr();
    let _ws = subscriber(addr).await;
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /v1/sse?symbols=A HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    sse.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let m = scrape_metrics(addr).await;
    assert_eq!(get(&m, r#"tickwire_connections{kind="subscriber"}"#), 2.0);
    assert_eq!(get(&m, "tickwire_connections_opened_total"), 2.0);
    let text = http_get(addr, "/metrics").await;
    for series in [
        "tickwire_connections ",
        "tickwire_connections_opened_total ",
        "tickwire_frames_out_total ",
        "tickwire_upgrades_refused_total ",
    ] {
        let help = text
            .lines()
            .find(|l| l.starts_with(&format!("# HELP {series}")))
            .unwrap_or_else(|| panic!("no HELP for {series}"));
        assert!(help.contains("SSE"), "{help}");
    }
    h.shutdown();
}
