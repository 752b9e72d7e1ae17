//! Scale-out resume and epochs: a client resumes on another gateway and
//! loses nothing; an ingest node without last values starts a new epoch
//! and gateways follow.
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
async fn a_client_resumes_on_another_gateway_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    let Deployment {
        ingest, gw1, gw2, ..
    } = deployment;
    let Some(lb) = Nginx::start(&[gw1.addr, gw2.addr]).await else {
        return;
    };
    // One epoch for the deployment: the ingest node's, on every gateway.
    let epoch = hello_epoch(ingest.addr).await;
    assert_eq!(hello_epoch(gw1.addr).await, epoch);
    assert_eq!(hello_epoch(gw2.addr).await, epoch);

    // Each gateway carries the keys (another client of its own wants
    // them), so each holds their history.
    let syms = ["RA", "RB.X"];
    let mut holders = Vec::new();
    for g in [&gw1, &gw2] {
        let mut h = subscriber(g.addr).await;
        h.subscribe(1, &syms, None, false).await;
        wait_metric(g, "tickwire_bus_subjects", |v| v == 4.0).await;
        holders.push(h);
    }
    let mut p = publisher(ingest.addr).await;
    let tick = |i: u64| {
        let sym = syms[(i % 2) as usize];
        if i.is_multiple_of(3) {
            quote(sym, 10_000 + i, &format!("{i}.5"), "9")
        } else {
            trade(sym, 10_000 + i, &format!("{i}"), "1")
        }
    };
    let mut c = subscriber(lb.addr()).await;
    let reply = c.subscribe(1, &syms, None, false).await;
    assert_eq!(reply["epoch"], epoch.as_str());
    p.publish(&(1..=40).map(tick).collect::<Vec<_>>()).await;
    let mut got = recv_ticks(&mut c, 40).await;
    for h in &mut holders {
        recv_ticks(h, 40).await;
    }

    // Leave: the gateway the client is on dies.
    let mut gateways = [Some(gw1), Some(gw2)];
    let on = {
        let mut on = None;
        for (i, g) in gateways.iter().enumerate() {
            let g = g.as_ref().unwrap();
            if metric(g.addr, "tickwire_connections{kind=\"subscriber\"}").await == 2.0 {
                on = Some(i);
            }
        }
        on.expect("the client is on one of the gateways")
    };
    gateways[on] = None; // SIGKILL
    c.expect_eof().await;
    let survivor = gateways[1 - on].take().unwrap();
    let mut holder = holders.swap_remove(1 - on);

    // Published while the client is away; the survivor has them.
    p.publish(&(41..=100).map(tick).collect::<Vec<_>>()).await;
    recv_ticks(&mut holder, 60).await;

    // Resume through the load balancer (on the survivor) from the last
    // `seq` of each key it had.
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for (sym, ty, seq, _) in got.iter().map(ident) {
        last.insert((sym, ty), seq);
    }
    let mut positions = serde_json::json!({"trade":{},"quote":{}});
    for ((sym, ty), seq) in &last {
        positions[ty][sym] = seq.to_owned().into();
    }
    let mut c = subscriber(lb.addr()).await;
    c.send_json(
        serde_json::json!({"op":"subscribe","id":2,"symbols":syms,"snapshot":false,
        "resume":{"epoch":epoch,"seq":positions}}),
    )
    .await;
    let (reply, before) = c.recv_until("subscribed").await;
    assert!(before.iter().all(|v| !is_tick(v)), "{before:?}");
    assert_eq!(reply["epoch"], epoch.as_str(), "{reply}");
    assert_eq!(reply["resumed"]["keys"].as_array().unwrap().len(), 4);
    for k in reply["resumed"]["keys"].as_array().unwrap() {
        assert_eq!(k["recovered"], true, "{k}");
    }
    // Another client resumes on the survivor by time instead: everything
    // since the `rx` of the last tick it had on the gateway that died.
    let before: Vec<Value> = got.clone();
    let since = before
        .iter()
        .map(|v| v["rx"].as_u64().unwrap())
        .max()
        .unwrap();
    let mut by_ts = subscriber(survivor.addr).await;
    by_ts
        .send_json(
            serde_json::json!({"op":"subscribe","id":3,"symbols":syms,"snapshot":false,
            "resume":{"epoch":epoch,"ts":since}}),
        )
        .await;
    let (reply, _) = by_ts.recv_until("subscribed").await;
    assert_eq!(reply["resumed"]["recovered"], true, "{reply}");
    // Then live ticks, with no seam.
    p.publish(&(101..=110).map(tick).collect::<Vec<_>>()).await;
    // What it had, then what came since: each key's seq 1, 2, … once
    // (ticks at `since` itself it already had are the only overlap).
    let mut merged = before;
    while merged.len() < 110 {
        let v = recv_ticks(&mut by_ts, 1).await.remove(0);
        let (sym, ty, seq, _) = ident(&v);
        if seq > last[&(sym, ty)] {
            merged.push(v);
        }
    }
    let mut next: HashMap<(String, String), u64> = HashMap::new();
    for (sym, ty, seq, _) in merged.iter().map(ident) {
        let n = next.entry((sym.clone(), ty.clone())).or_insert(1);
        assert_eq!(seq, *n, "resumed by ts: {sym} {ty}");
        *n += 1;
    }
    assert_eq!(merged.len(), 110);
    let rest = recv_ticks(&mut c, 70).await;
    assert!(
        rest.iter().all(|v| v["snap"] != true),
        "no snapshot on a resume"
    );
    got.extend(rest);
    // Every tick published, exactly once, each key's seq 1, 2, … with no gap.
    let mut next: HashMap<(String, String), u64> = HashMap::new();
    for (sym, ty, seq, _) in got.iter().map(ident) {
        let n = next.entry((sym.clone(), ty.clone())).or_insert(1);
        assert_eq!(seq, *n, "{sym} {ty}");
        *n += 1;
    }
    assert_eq!(got.len(), 110);
    // And nothing more.
    p.sync().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.recv_json())
            .await
            .is_err(),
        "a tick delivered twice"
    );
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_node_without_last_values_starts_a_new_epoch_gateways_follow() {
    let _serial = SERIAL.lock().await;
    let Some(OneGateway {
        mut nats,
        dir,
        ingest,
        gw,
    }) = OneGateway::start().await
    else {
        return;
    };
    let old = hello_epoch(ingest.addr).await;
    assert_eq!(hello_epoch(gw.addr).await, old);
    let mut c = subscriber(gw.addr).await;
    c.subscribe(1, &["NE"], Some(&["trade"]), false).await;
    wait_metric(&gw, "tickwire_bus_subjects", |v| v == 1.0).await;
    let mut p = publisher(ingest.addr).await;
    p.publish(
        &(1..=5)
            .map(|i| trade("NE", i, "7", "1"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(recv_ticks(&mut c, 5).await[4]["seq"], 5);

    // The ingest node dies and NATS restarts with its store lost: the next
    // ingest node cannot continue `seq`, so it starts an epoch.
    drop(p);
    drop(ingest);
    nats.stop();
    std::fs::remove_dir_all(nats.dir.path().join("store")).unwrap();
    nats.spawn().await;
    let ingest2 = Node::ingest(dir.path(), &nats, "ingest2").await;
    let new = hello_epoch(ingest2.addr).await;
    assert_ne!(new, old);
    let deadline = Instant::now() + WAIT;
    while hello_epoch(gw.addr).await != new {
        assert!(Instant::now() < deadline, "the gateway kept epoch {old}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new numbering's ticks reach the gateway's clients (not dropped
    // as repeats of the old numbering's seq 1..5); a client connected
    // through the change is closed (1012) at its first tick, to resume.
    wait_metric(&gw, "tickwire_bus_subjects", |v| v == 1.0).await;
    let mut p = publisher(ingest2.addr).await;
    p.publish(&[trade("NE", 6, "8", "1")]).await;
    let (code, reason, _) = c.recv_close().await;
    assert_eq!(code, Some(1012), "{reason}");
    assert!(reason.contains("epoch"), "{reason}");
    let mut c = subscriber(gw.addr).await;
    c.subscribe(3, &["NE"], Some(&["trade"]), false).await;
    p.publish(
        &(7..=8)
            .map(|i| trade("NE", i, "8", "1"))
            .collect::<Vec<_>>(),
    )
    .await;
    let seqs: Vec<u64> = recv_ticks(&mut c, 2)
        .await
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    // A position from the old epoch resumes nothing here.
    let mut r = subscriber(gw.addr).await;
    r.send_json(
        serde_json::json!({"op":"subscribe","id":2,"symbols":["NE"],"channels":["trade"],
        "resume":{"epoch":old,"seq":{"trade":{"NE":5}}}}),
    )
    .await;
    let (reply, _) = r.recv_until("subscribed").await;
    assert_eq!(reply["epoch"], new.as_str());
    assert_eq!(
        reply["resumed"]["keys"][0]["reason"], "other_epoch",
        "{reply}"
    );
}
