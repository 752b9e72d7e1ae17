//! Soak: 2,000 WebSocket clients, all connected at once, that each three
//! times connect, subscribe, churn their subscriptions and disconnect (half
//! with a close handshake, half by dropping TCP) while a publisher runs. Checked: every tick a client gets
//! is of a key it is subscribed to, and its `seq` only ever increases per
//! key on that connection; afterwards connections, subscriptions (by name
//! and `*`), queued bytes and pending ticks are back at zero.
//!
//! `#[ignore]`d: it holds ~4,000 sockets and runs for tens of seconds, which
//! would slow every `cargo test` and compete with the other test binaries
//! run in parallel. `.ci/run` runs it on its own:
//! `cargo test --test soak -- --ignored`. Size with `SOAK_CLIENTS=N`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tokio::sync::Barrier;

const SYMBOLS: usize = 200;
const ROUNDS: usize = 8;
/// Times each client connects, churns and disconnects.
const LIVES: usize = 3;

fn sym(i: usize) -> String {
    format!("S{i:03}")
}

/// Raises the soft open-file limit to the hard one (the test holds both
/// ends of every connection).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a properly initialised struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Per-connection checks over everything the client reads.
#[derive(Default)]
struct Checker {
    /// Symbols subscribed by name (reply received, no `unsubscribed` yet).
    named: HashSet<String>,
    star: bool,
    /// Symbols with an unsubscribe in flight: their ticks may still arrive.
    leaving: HashSet<String>,
    last_seq: HashMap<String, u64>,
    ticks: u64,
}

impl Checker {
    fn take(&mut self, v: &serde_json::Value) {
        match v["type"].as_str().unwrap() {
            "trade" => {
                let s = v["sym"].as_str().unwrap();
                assert!(
                    self.star || self.named.contains(s) || self.leaving.contains(s),
                    "tick of {s}, not subscribed: {v}"
                );
                let seq = v["seq"].as_u64().unwrap();
                let last = self.last_seq.entry(s.to_owned()).or_default();
                assert!(seq > *last, "{s}: seq {seq} after {last}");
                *last = seq;
                self.ticks += 1;
            }
            "subscribed" => {
                for s in v["symbols"].as_array().unwrap() {
                    match s.as_str().unwrap() {
                        "*" => self.star = true,
                        s => {
                            self.named.insert(s.to_owned());
                        }
                    }
                }
            }
            "unsubscribed" => {
                for s in v["symbols"].as_array().unwrap() {
                    self.leaving.remove(s.as_str().unwrap());
                }
            }
            "pong" => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
}

/// Reads and checks messages for `dur`.
async fn read_for(ws: &mut RawWs, ck: &mut Checker, dur: Duration) {
    let until = tokio::time::Instant::now() + dur;
    loop {
        match tokio::time::timeout_at(until, ws.try_recv()).await {
            Err(_) => return,
            Ok(Some(Msg::Text(t))) => ck.take(&serde_json::from_str(&t).unwrap()),
            Ok(Some(Msg::Ping(p))) => ws.send_frame(true, 10, &p).await,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads and checks messages until the reply of type `kind` with `id`.
async fn read_until(ws: &mut RawWs, ck: &mut Checker, kind: &str, id: i64) {
    loop {
        let v = ws.recv_json().await;
        ck.take(&v);
        if v["type"] == kind && v["id"] == id {
            return;
        }
    }
}

async fn client(
    n: usize,
    addr: std::net::SocketAddr,
    connected: Arc<Barrier>,
    total_ticks: Arc<AtomicU64>,
) {
    for life in 0..LIVES {
        // Only the first lives of all clients meet: everyone is connected then.
        let barrier = (life == 0).then_some(&connected);
        one_life(n + life * 7919, addr, barrier, &total_ticks).await;
    }
}

/// Connects, subscribes, churns, disconnects; checks every message.
async fn one_life(
    n: usize,
    addr: std::net::SocketAddr,
    connected: Option<&Arc<Barrier>>,
    total_ticks: &AtomicU64,
) {
    let mut ws = subscriber(addr).await;
    let mut ck = Checker::default();
    // Deterministic per-client choice of symbols; 1 in 50 also takes `*`.
    let mut next = n * 7;
    let mut pick = || {
        next = (next * 31 + 17) % SYMBOLS;
        sym(next)
    };
    let mut mine: Vec<String> = Vec::new();
    while mine.len() < 3 {
        let s = pick();
        if !mine.contains(&s) {
            mine.push(s);
        }
    }
    let mut symbols = mine.clone();
    if n.is_multiple_of(50) {
        symbols.push("*".into());
    }
    ws.send_json(serde_json::json!({"op":"subscribe","id":1,"symbols":symbols,"channels":["trade"],"snapshot":n.is_multiple_of(2)}))
        .await;
    read_until(&mut ws, &mut ck, "subscribed", 1).await;
    if let Some(b) = connected {
        b.wait().await;
    }
    for round in 0..ROUNDS {
        read_for(
            &mut ws,
            &mut ck,
            Duration::from_millis(150 + (n % 7) as u64 * 40),
        )
        .await;
        // Churn: drop the oldest symbol, take a new one.
        let old = mine.remove(0);
        ck.named.remove(&old);
        ck.leaving.insert(old.clone());
        let new = pick();
        let id = 10 + round as i64 * 2;
        ws.send_json(
            serde_json::json!({"op":"unsubscribe","id":id,"symbols":[old],"channels":["trade"]}),
        )
        .await;
        ws.send_json(serde_json::json!({"op":"subscribe","id":id + 1,"symbols":[new],"channels":["trade"],"snapshot":round % 2 == 0}))
            .await;
        read_until(&mut ws, &mut ck, "subscribed", id + 1).await;
        // The new name may repeat one still held: keep the list in step
        // with what the server knows.
        if !mine.contains(&new) {
            mine.push(new);
        }
        // A name left and retaken is subscribed again.
        for s in &mine {
            ck.leaving.remove(s);
            ck.named.insert(s.clone());
        }
    }
    total_ticks.fetch_add(ck.ticks, Ordering::Relaxed);
    if n.is_multiple_of(2) {
        ws.send_close(1000, "bye").await;
        loop {
            match ws.recv().await {
                Msg::Close(code, _) => {
                    assert_eq!(code, Some(1000));
                    break;
                }
                Msg::Text(t) => ck.take(&serde_json::from_str(&t).unwrap()),
                _ => {}
            }
        }
        ws.expect_eof().await;
    }
    // Odd clients just drop the TCP connection.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: ~4,000 sockets for tens of seconds; run by .ci/run with --ignored"]
async fn thousands_of_churning_clients_leave_nothing_behind() {
    raise_fd_limit();
    let clients: usize = std::env::var("SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut c = config();
    c.workers = 2;
    let h = start(c);
    let addr = h.addr();
    let started = std::time::Instant::now();

    // The publisher: batches of trades round-robin over every symbol, each
    // batch confirmed (ping/pong) before the next.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut p = publisher(addr).await;
            let mut i = 0usize;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<serde_json::Value> = (0..50)
                    .map(|_| {
                        i += 1;
                        trade(&sym(i % SYMBOLS), i as u64, "1.5", "10")
                    })
                    .collect();
                p.publish(&batch).await;
                sent += batch.len() as u64;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };

    let connected = Arc::new(Barrier::new(clients + 1));
    let total_ticks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for n in 0..clients {
        tasks.push(tokio::spawn(client(
            n,
            addr,
            connected.clone(),
            total_ticks.clone(),
        )));
        if n % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), connected.wait())
        .await
        .expect("every client connected and subscribed");
    // Everyone is connected and subscribed at once here.
    assert_eq!(
        h.stats().subscribers.load(Ordering::Relaxed),
        clients as i64
    );
    assert_eq!(h.connections(), (clients + 1, 1));
    let at_peak = started.elapsed();
    for t in tasks {
        t.await.expect("a client failed its checks");
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher_task.await.unwrap();

    // Back to baseline.
    let s = h.stats().clone();
    let gauges = || {
        [
            s.subscribers.load(Ordering::Relaxed),
            s.publishers.load(Ordering::Relaxed),
            s.named_subscriptions.load(Ordering::Relaxed),
            s.star_subscriptions.load(Ordering::Relaxed),
            s.queued_bytes.load(Ordering::Relaxed),
            s.pending_ticks.load(Ordering::Relaxed),
        ]
    };
    eventually("gauges back to zero", || gauges() == [0; 6]).await;
    eventually("connection permits given back", || {
        h.connections() == (0, 0)
    })
    .await;
    let received = total_ticks.load(Ordering::Relaxed);
    eprintln!(
        "soak: {clients} clients, peak after {at_peak:?}, {published} ticks published, {received} delivered, {:?} in all",
        started.elapsed()
    );
    assert!(published > 0 && received > clients as u64, "{received}");
    // The server still serves.
    let mut p = publisher(addr).await;
    let mut ws = subscriber(addr).await;
    ws.subscribe(1, &["AFTER"], None, false).await;
    p.publish(&[trade("AFTER", 1, "1", "1")]).await;
    assert_eq!(ws.recv_json().await["sym"], "AFTER");
    h.shutdown();
}
