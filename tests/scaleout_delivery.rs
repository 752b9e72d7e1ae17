//! Scale-out over NATS: what gateways deliver. Two gateways give the
//! ingest node's ticks with its `seq`, and its bars; a gateway holds bus
//! subscriptions only for the keys its clients want; snapshots are the
//! same on every node.
//!
//! Each runs a real `nats-server` (with JetStream) and `tickwire serve`
//! processes; the harness (and when a missing nats-server fails a test
//! rather than skip it: `TICKWIRE_REQUIRE_NATS`) is in
//! `tests/common/scaleout.rs`. The tests take one lock each: every one runs
//! a handful of processes, which on a 2-core machine is enough load
//! without running them together.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::scaleout::*;
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_deliver_the_same_ticks_with_the_same_seq() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        ingest, gw1, gw2, ..
    } = deployment;

    let mut local = subscriber(ingest.addr).await;
    let mut c1 = subscriber(gw1.addr).await;
    let mut c2 = subscriber(gw2.addr).await;
    for c in [&mut local, &mut c1, &mut c2] {
        c.subscribe(1, &["AAA", "BB.B"], None, true).await;
    }
    // Two symbols × two channels: four subjects on each gateway.
    wait_metric(&gw1, "tickwire_bus_subjects", |v| v == 4.0).await;
    wait_metric(&gw2, "tickwire_bus_subjects", |v| v == 4.0).await;

    let mut publ = publisher(ingest.addr).await;
    let mut ticks = Vec::new();
    for i in 0..200u64 {
        let sym = if i % 3 == 0 { "BB.B" } else { "AAA" };
        let px = format!("{}.{:02}", 100 + i, i % 100);
        ticks.push(if i % 2 == 0 {
            trade(sym, 1_000 + i, &px, "5")
        } else {
            quote(sym, 1_000 + i, &px, "999")
        });
    }
    for chunk in ticks.chunks(50) {
        publ.publish(chunk).await;
    }

    let at_ingest = recv_ticks(&mut local, 200).await;
    let at_gw1 = recv_ticks(&mut c1, 200).await;
    let at_gw2 = recv_ticks(&mut c2, 200).await;
    // docs/PROTOCOL.md orders ticks per key only (a gateway takes each key on
    // its own bus subscription), so compare key by key.
    let per_key = |v: &[Value]| {
        let mut m: HashMap<(String, String), Vec<(u64, String)>> = HashMap::new();
        for (sym, ty, seq, px) in v.iter().map(ident) {
            m.entry((sym, ty)).or_default().push((seq, px));
        }
        m
    };
    assert_eq!(
        per_key(&at_gw1),
        per_key(&at_ingest),
        "gateway 1 differs from the ingest node"
    );
    assert_eq!(
        per_key(&at_gw2),
        per_key(&at_ingest),
        "gateway 2 differs from the ingest node"
    );
    let ids = |v: &[Value]| v.iter().map(ident).collect::<Vec<_>>();
    // seq is per key, from 1, without gaps.
    let mut next: HashMap<(String, String), u64> = HashMap::new();
    for (sym, ty, seq, _) in ids(&at_gw1) {
        let n = next.entry((sym, ty)).or_insert(1);
        assert_eq!(seq, *n);
        *n += 1;
    }
    assert_eq!(gw1.metric("tickwire_bus_seq_gaps_total").await, 0.0);
    assert_eq!(gw2.metric("tickwire_bus_duplicates_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_serve_the_ingest_nodes_bars_with_its_seq() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    let Deployment { ingest, gw1, .. } = deployment;
    let mut local = subscriber(ingest.addr).await;
    let mut remote = subscriber(gw1.addr).await;
    for c in [&mut local, &mut remote] {
        c.subscribe(1, &["BAR"], Some(&["bar_1s"]), true).await;
    }
    wait_metric(&gw1, "tickwire_bus_subjects", |v| v == 1.0).await;
    // Trades in three consecutive seconds of feed time: the first two bars
    // close when the next second's trade arrives.
    let mut publ = publisher(ingest.addr).await;
    let t0 = 1_700_000_000_000_000_000u64;
    for (i, px) in ["10", "11", "12"].iter().enumerate() {
        let ts = t0 + i as u64 * 1_000_000_000;
        publ.publish(&[trade("BAR", ts, px, "1"), trade("BAR", ts + 5, px, "2")])
            .await;
    }
    let at_ingest = closed_bars(&mut local).await;
    let at_gateway = closed_bars(&mut remote).await;
    assert_eq!(
        at_gateway, at_ingest,
        "the gateway's bars are the ingest node's"
    );
    assert_eq!(at_ingest[0].1, t0);
    assert_eq!(
        (&*at_ingest[1].2, &*at_ingest[1].3, at_ingest[1].4),
        ("11", "3", 2)
    );
    assert_eq!(gw1.metric("tickwire_bus_malformed_total").await, 0.0);
}

/// The first two closed bars a client gets: (seq, start, open, volume,
/// trades).
async fn closed_bars(ws: &mut RawWs) -> Vec<(u64, u64, String, String, u64)> {
    let mut got = Vec::new();
    while got.len() < 2 {
        let v = ws.recv_json().await;
        if v["type"] == "bar" && v["closed"] == true {
            got.push((
                v["seq"].as_u64().unwrap(),
                v["start"].as_u64().unwrap(),
                v["open"].to_string(),
                v["volume"].to_string(),
                v["trades"].as_u64().unwrap(),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_takes_from_the_bus_only_the_keys_its_clients_want() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        nats,
        ingest,
        gw1,
        gw2,
        ..
    } = deployment;

    let mut c1 = subscriber(gw1.addr).await;
    c1.subscribe(1, &["XX"], Some(&["trade"]), false).await;
    let mut c2 = subscriber(gw2.addr).await;
    c2.subscribe(1, &["YY"], Some(&["trade"]), false).await;
    wait_metric(&gw1, "tickwire_bus_subjects", |v| v == 1.0).await;
    wait_metric(&gw2, "tickwire_bus_subjects", |v| v == 1.0).await;

    let mut publ = publisher(ingest.addr).await;
    let mut batch = Vec::new();
    for i in 0..30u64 {
        batch.push(trade("XX", i + 1, "1.5", "1"));
        if i < 10 {
            batch.push(trade("YY", i + 1, "2.5", "1"));
        }
    }
    publ.publish(&batch).await;
    assert_eq!(recv_ticks(&mut c1, 30).await.len(), 30);
    assert_eq!(recv_ticks(&mut c2, 10).await.len(), 10);

    // What NATS itself says it delivered to each gateway's connection.
    let subs1 = nats.subscriptions_of(&gw1.bus_name("gateway")).await;
    let subs2 = nats.subscriptions_of(&gw2.bus_name("gateway")).await;
    assert_eq!(subs1.get("tickwire.trade.XX"), Some(&30), "{subs1:?}");
    assert_eq!(subs2.get("tickwire.trade.YY"), Some(&10), "{subs2:?}");
    assert!(
        !subs1.keys().any(|s| s.contains("YY")) && !subs2.keys().any(|s| s.contains("XX")),
        "a gateway is subscribed to a key none of its clients wants: {subs1:?} {subs2:?}"
    );
    assert_eq!(gw2.metric("tickwire_bus_received_total").await, 10.0);

    // The last local subscriber leaves: the bus subscription goes too.
    c2.send_json(serde_json::json!({"op":"unsubscribe","symbols":["YY"],"channels":["trade"]}))
        .await;
    c2.recv_until("unsubscribed").await;
    wait_metric(&gw2, "tickwire_bus_subjects", |v| v == 0.0).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let subs2 = nats.subscriptions_of(&gw2.bus_name("gateway")).await;
        if !subs2.keys().any(|s| s.starts_with("tickwire.trade.")) {
            break;
        }
        assert!(Instant::now() < deadline, "NATS still has {subs2:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `*` takes one wildcard subscription per channel instead.
    c2.subscribe(2, &["*"], Some(&["trade"]), false).await;
    wait_metric(&gw2, "tickwire_bus_subjects", |v| v == 1.0).await;
    let subs2 = nats.subscriptions_of(&gw2.bus_name("gateway")).await;
    assert!(subs2.contains_key("tickwire.trade.>"), "{subs2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_the_same_on_every_gateway() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        ingest, gw1, gw2, ..
    } = deployment;

    // Published while no gateway has a client: only JetStream has them.
    let mut publ = publisher(ingest.addr).await;
    let mut batch = Vec::new();
    for i in 0..20u64 {
        for sym in ["S1", "S2.X", "S3"] {
            batch.push(trade(sym, i + 1, &format!("{}.25", 10 + i), "3"));
        }
        batch.push(quote("S1", i + 1, &format!("{}.5", 9 + i), "99"));
    }
    publ.publish(&batch).await;

    let snapshot = |reply: Vec<Value>| {
        let mut v: Vec<_> = reply
            .iter()
            .filter(|t| t["snap"] == true)
            .map(ident)
            .collect();
        v.sort();
        v
    };
    let mut all = Vec::new();
    for node in [&ingest, &gw1, &gw2] {
        let mut c = subscriber(node.addr).await;
        c.subscribe(1, &["S1", "S2.X", "S3"], None, true).await;
        all.push(snapshot(recv_ticks(&mut c, 4).await));
    }
    assert_eq!(all[0].len(), 4, "{:?}", all[0]);
    assert!(all[0].iter().all(|(_, _, seq, _)| *seq == 20));
    assert_eq!(
        all[1], all[0],
        "gateway 1's snapshot differs from the ingest node's"
    );
    assert_eq!(
        all[2], all[0],
        "gateway 2's snapshot differs from the ingest node's"
    );

    // `*`: every key's last value, also read from JetStream.
    let mut stars = Vec::new();
    for node in [&gw1, &gw2] {
        let mut c = subscriber(node.addr).await;
        c.subscribe(2, &["*"], None, true).await;
        stars.push(snapshot(recv_ticks(&mut c, 4).await));
    }
    assert_eq!(stars[0], all[0]);
    assert_eq!(stars[1], all[0]);

    // A key already flowing live on a gateway is snapshotted from its cache:
    // no JetStream read, and still the newest value.
    let mut first = subscriber(gw1.addr).await;
    first.subscribe(3, &["S3"], Some(&["trade"]), false).await;
    publ.publish(&[trade("S3", 99, "77.5", "1")]).await;
    assert_eq!(recv_ticks(&mut first, 1).await[0]["seq"], 21);
    let reads = gw1.metric("tickwire_bus_last_value_reads_total").await;
    let mut second = subscriber(gw1.addr).await;
    second.subscribe(4, &["S3"], Some(&["trade"]), true).await;
    let snap = recv_ticks(&mut second, 1).await.remove(0);
    assert_eq!(
        (snap["seq"].as_u64(), snap["snap"].as_bool()),
        (Some(21), Some(true))
    );
    assert_eq!(
        gw1.metric("tickwire_bus_last_value_reads_total").await,
        reads
    );
}
