//! Scale-out over NATS: faults. NATS restarted mid-stream (a gap at
//! worst), the ingest node killed (clients stay, told stale; a new one
//! continues `seq`), an ingest node stopping without NATS, and NATS paused
//! (SIGSTOP): SSE heads before status broadcasts, the stale check going on
//! while JetStream does not answer.
//!
//! Each runs a real `nats-server` (with JetStream) and `tickwire serve`
//! processes; the harness (and when a missing nats-server fails a test
//! rather than skip it: `TICKWIRE_REQUIRE_NATS`) is in
//! `tests/common/scaleout.rs`. The tests take one lock each: every one runs
//! a handful of processes, which on a 2-core machine is enough load
//! without running them together.

mod common;

use std::time::{Duration, Instant};

use common::scaleout::*;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_stream_is_a_gap_at_worst() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        mut nats,
        ingest,
        gw1,
        gw2,
        ..
    } = deployment;
    let mut clients = Vec::new();
    for gw in [&gw1, &gw2] {
        let mut c = subscriber(gw.addr).await;
        c.subscribe(1, &["RR"], Some(&["trade"]), false).await;
        clients.push(c);
    }
    wait_metric(&gw1, "tickwire_bus_subjects", |v| v == 1.0).await;
    wait_metric(&gw2, "tickwire_bus_subjects", |v| v == 1.0).await;

    // A publisher that never stops while NATS goes away and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        let addr = ingest.addr;
        tokio::spawn(async move {
            let mut p = publisher(addr).await;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                p.publish(&[trade("RR", i, &format!("{i}"), "1")]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    let mut got: Vec<Vec<Value>> = vec![Vec::new(), Vec::new()];
    for (c, g) in clients.iter_mut().zip(&mut got) {
        g.extend(recv_ticks(c, 20).await);
    }
    nats.stop();
    // No heartbeat: both gateways tell their clients the feed is stale, and
    // keep them connected.
    for (c, g) in clients.iter_mut().zip(&mut got) {
        let before = wait_status(c, "stale").await;
        g.extend(before.into_iter().filter(is_tick));
    }
    nats.spawn().await;
    for (c, g) in clients.iter_mut().zip(&mut got) {
        let before = wait_status(c, "live").await;
        g.extend(before.into_iter().filter(is_tick));
        // Ticks flow again.
        g.extend(recv_ticks(c, 20).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publishing.await.unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_in_order(g, &format!("client on gateway {}", i + 1));
        assert!(g.last().unwrap()["seq"].as_u64().unwrap() <= published);
    }
    for node in [&gw1, &gw2, &ingest] {
        wait_metric(node, "tickwire_bus_reconnects_total", |v| v >= 1.0).await;
        wait_metric(node, "tickwire_bus_connected", |v| v == 1.0).await;
    }
    assert_eq!(gw1.metric("tickwire_feed_stale").await, 0.0);
    assert!(gw1.log().contains("reconnected to the NATS bus"));
    assert!(gw1.log().contains("feed is stale"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_ingest_node_dies_gateways_keep_clients_and_seq_continues() {
    let _serial = SERIAL.lock().await;
    let Some(OneGateway {
        nats,
        dir,
        ingest,
        gw,
    }) = OneGateway::start().await
    else {
        return;
    };
    let mut c = subscriber(gw.addr).await;
    c.subscribe(1, &["KK"], Some(&["trade"]), false).await;
    wait_metric(&gw, "tickwire_bus_subjects", |v| v == 1.0).await;
    let mut p = publisher(ingest.addr).await;
    let batch: Vec<Value> = (1..=10).map(|i| trade("KK", i, "7", "1")).collect();
    p.publish(&batch).await;
    let first = recv_ticks(&mut c, 10).await;
    assert_eq!(first.last().unwrap()["seq"], 10);

    // An SSE client on the same gateway.
    let mut sse = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    sse.write_all(b"GET /v1/sse?symbols=KK&channels=trade HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    drop(p);
    drop(ingest); // SIGKILL
    let ticks = wait_status(&mut c, "stale").await;
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !text.contains("event: status\ndata: {\"type\":\"status\",\"feed\":\"stale\"") {
        assert!(Instant::now() < deadline, "no stale status on SSE: {text}");
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, sse.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "SSE stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(ticks.iter().all(|v| !is_tick(v)));
    // Still connected and answering.
    c.send_text(r#"{"op":"ping","id":5}"#).await;
    c.recv_until("pong").await;
    assert_eq!(gw.metric("tickwire_feed_stale").await, 1.0);
    // A client that connects now hears it too, right after `hello`.
    let mut late = subscriber(gw.addr).await;
    let status = late.recv_json().await;
    assert_eq!(
        (status["type"].as_str(), status["feed"].as_str()),
        (Some("status"), Some("stale"))
    );

    // A new ingest node continues every key's seq from the bus's last
    // values, and so keeps their epoch: the gateway's stays what it was.
    let epoch = hello_epoch(gw.addr).await;
    let ingest2 = Node::ingest(dir.path(), &nats, "ingest2").await;
    wait_status(&mut c, "live").await;
    assert_eq!(hello_epoch(ingest2.addr).await, epoch);
    assert_eq!(hello_epoch(gw.addr).await, epoch);
    let mut p = publisher(ingest2.addr).await;
    let batch: Vec<Value> = (11..=15).map(|i| trade("KK", i, "8", "1")).collect();
    p.publish(&batch).await;
    let next = recv_ticks(&mut c, 5).await;
    let seqs: Vec<u64> = next.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [11, 12, 13, 14, 15]);
}

/// Issue #15 item 3: an ingest node told to stop just after its NATS server
/// went away (a publisher having used it) exits within its shutdown
/// deadline, saying what it abandoned, and its reconnect errors are logged
/// at a bounded rate meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_node_stops_within_its_deadline_when_nats_is_gone() {
    let _serial = SERIAL.lock().await;
    let Some(mut nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Node::ingest(dir.path(), &nats, "ingest").await;
    let mut p = publisher(ingest.addr).await;
    for i in 1..=20u64 {
        p.publish(&[trade("ST", i, "1", "1")]).await;
    }
    wait_metric(&ingest, "tickwire_bus_published_total", |v| v >= 20.0).await;
    nats.stop();
    wait_metric(&ingest, "tickwire_bus_connected", |v| v == 0.0).await;
    // Ticks keep coming while NATS is down; then a few seconds of failed
    // reconnects, long enough for an unbounded log to show.
    for i in 21..=40u64 {
        p.publish(&[trade("ST", i, "1", "1")]).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    tickwire::sys::kill(ingest.child.id(), tickwire::sys::Signal::Terminate).unwrap();
    // Bounded: the node's own deadline is 5 s; 30 s is only the test's
    // backstop against hanging forever (the bug).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = ingest.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the ingest node did not stop; its log:\n{}",
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = ingest.log();
    assert!(log.contains("shutting down"), "{log}");
    // Either every thread finished (flush abandoned, said so) or the
    // deadline named what it left behind.
    assert!(
        (status.success() && log.contains("ticks not yet sent to the bus are abandoned"))
            || log.contains("shutdown deadline passed"),
        "{status:?}\n{log}"
    );
    let errors = log
        .lines()
        .filter(|l| l.contains("NATS client error"))
        .count();
    assert!(errors <= 3, "{errors} NATS error lines in ~4 s:\n{log}");
}

/// Reads a raw HTTP response's first `n` bytes (or fewer if it ends).
async fn first_bytes(s: &mut tokio::net::TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < n {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => got.extend_from_slice(&buf[..k]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The fix of commit 0a6edd3 ("SSE head"): on a gateway, an SSE client's
/// response head is queued as the client is registered, before `subscribe`
/// waits for the bus (its snapshot request, up to 2 s). Before it, a
/// `status` broadcast meanwhile (the feed going stale) reached a client in
/// that wait ahead of `HTTP/1.1 200`: its first bytes were `event: status`.
/// nats-server is paused (SIGSTOP): the connection stays up, so requests
/// wait instead of failing at once, and the heartbeat stops, so the
/// gateway declares the feed stale within `--stale-after` (1 s). SSE
/// clients opened one after the other from the pause until the stale
/// broadcast are in their bus wait when it goes out: each must start with
/// the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sse_client_gets_its_response_head_before_a_status_broadcast() {
    let _serial = SERIAL.lock().await;
    let Some(OneGateway {
        nats,
        dir: _dir,
        ingest: _ingest,
        gw,
    }) = OneGateway::start().await
    else {
        return;
    };
    // One SSE client first, so the last-value stream is known before the
    // pause (its lookup, like every read, runs off the gateway's loop).
    let mut warm = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    warm.write_all(b"GET /v1/sse?symbols=WARM&channels=trade HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(first_bytes(&mut warm, 12).await.starts_with("HTTP/1.1 200"));
    nats.pause();
    let mut streams = Vec::new();
    let mut stale_at = None;
    // Bounded: stale within about a second; five clients more after it.
    for i in 0..100 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let req = format!("GET /v1/sse?symbols=HD{i}&channels=trade HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        streams.push(s);
        if stale_at.is_none() && gw.metric("tickwire_feed_stale").await == 1.0 {
            stale_at = Some(i);
        }
        if stale_at.is_some_and(|at| i >= at + 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heads: Vec<String> =
        futures_util::future::join_all(streams.iter_mut().map(|s| first_bytes(s, 12))).await;
    nats.resume();
    assert!(stale_at.is_some(), "the gateway never went stale");
    for (i, head) in heads.iter().enumerate() {
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "SSE client {i} (stale seen at client {stale_at:?}) began with {head:?}"
        );
    }
}

/// nats-server paused (SIGSTOP) before the gateway's first last-value
/// lookup: its JetStream requests then wait for their timeout. While
/// clients keep subscribing (each subscribe asks for snapshots, so for the
/// lookup), the gateway's loop must still check the heartbeat: a client
/// is told the feed is stale (the ingest node's heartbeat stops reaching
/// it, `--stale-after` 1 s), and live again once NATS resumes, and ticks
/// then flow. Before the lookups left the loop, each one held it for the
/// JetStream timeout, subscribes queued behind it, and no stale status
/// came while they kept coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_nats_does_not_hold_the_gateways_stale_check() {
    let _serial = SERIAL.lock().await;
    let Some(OneGateway {
        nats,
        dir: _dir,
        ingest,
        gw,
    }) = OneGateway::start().await
    else {
        return;
    };
    let mut watcher = subscriber(gw.addr).await;
    nats.pause();
    // SSE clients, one every 100 ms (at most 150), each subscribing to a
    // symbol of its own with its snapshot, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let subscribing = {
        let (stop, addr) = (stop.clone(), gw.addr);
        tokio::spawn(async move {
            let mut streams = Vec::new();
            for i in 0..150 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let req = format!(
                    "GET /v1/sse?symbols=PAUSED{i}&channels=trade HTTP/1.1\r\nHost: x\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.unwrap();
                streams.push(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            streams.len()
        })
    };
    wait_status(&mut watcher, "stale").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = subscribing.await.unwrap();
    assert!(opened > 0);
    nats.resume();
    wait_status(&mut watcher, "live").await;
    // Ticks flow again, snapshot lookups included.
    let mut c = subscriber(gw.addr).await;
    c.subscribe(1, &["RESUMED"], Some(&["trade"]), true).await;
    let mut p = publisher(ingest.addr).await;
    p.publish(&[trade("RESUMED", 1, "1.5", "2")]).await;
    let got = recv_ticks(&mut c, 1).await;
    assert_eq!(
        (&got[0]["sym"], &got[0]["seq"]),
        (&"RESUMED".into(), &1.into())
    );
    assert!(gw.log().contains("feed is stale"));
}
