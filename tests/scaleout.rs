//! Scale-out over NATS, end to end: a real `nats-server` (with JetStream),
//! one ingest node and two gateways as separate `tickwire serve` processes,
//! clients on real sockets, and nginx's stream module as the L4 load
//! balancer. The tests start and kill every process themselves.
//!
//! Needs `nats-server` (and `nginx` with its stream module for the load
//! balancer test) on PATH or in /usr/sbin. Without them a test says so and
//! passes, unless `TICKWIRE_REQUIRE_NATS=1` (set by `.ci/run`, which
//! installs them), where a missing server is a failure.
//!
//! The tests take one lock each: every one runs a handful of processes,
//! which on a 2-core machine is enough load without running them together.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_tickwire");
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Finds a server binary, or decides whether its absence fails the test.
fn find(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/local/sbin".into());
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("TICKWIRE_REQUIRE_NATS").as_deref() != Ok("1"),
            "{name} is required (TICKWIRE_REQUIRE_NATS=1) but not installed: apt-get install nats-server nginx libnginx-mod-stream"
        );
        eprintln!(
            "SKIPPED: {name} is not installed (apt-get install nats-server nginx libnginx-mod-stream)"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A nats-server with JetStream on a disk store that outlives restarts.
struct Nats {
    bin: PathBuf,
    /// More flags for nats-server (auth, TLS).
    extra: Vec<String>,
    dir: tempfile::TempDir,
    port: u16,
    monitor: u16,
    child: Option<Child>,
}

impl Nats {
    async fn start() -> Option<Nats> {
        Nats::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Option<Nats> {
        let bin = find("nats-server")?;
        let mut n = Nats {
            bin,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            monitor: free_port(),
            child: None,
        };
        n.spawn().await;
        Some(n)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string(), "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        wait_port(self.port, "nats-server").await;
        wait_port(self.monitor, "nats-server monitoring").await;
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// The monitoring endpoint's `/connz` with every subscription's detail.
    async fn connz(&self) -> Value {
        let body = nats_monitor_get(
            format!("127.0.0.1:{}", self.monitor).parse().unwrap(),
            "/connz?subs=detail",
        )
        .await;
        serde_json::from_str(&body).expect("connz is JSON")
    }

    /// One connection's subscriptions (subject → messages delivered), by
    /// the connection name tickwire gives itself.
    async fn subscriptions_of(&self, name: &str) -> HashMap<String, u64> {
        let connz = self.connz().await;
        let conn = connz["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no NATS connection named {name}: {connz}"));
        conn["subscriptions_list_detail"]
            .as_array()
            .map(|subs| {
                subs.iter()
                    .map(|s| {
                        (
                            s["subject"].as_str().unwrap().to_owned(),
                            s["msgs"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `tickwire serve` child process.
struct Node {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Node {
    async fn start(dir: &Path, name: &str, args: &[&str]) -> Node {
        let addr_file = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args(["--max-connections-per-ip", "10000", "--addr-file"])
            .arg(&addr_file)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tickwire");
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                break s.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Node { child, addr, log }
    }

    async fn ingest(dir: &Path, nats: &Nats, name: &str) -> Node {
        Node::start(
            dir,
            name,
            &["--no-feed", "--bus", &nats.url(), "--role", "ingest"],
        )
        .await
    }

    /// A gateway, once its feed is live (connected, heartbeat heard).
    async fn gateway(dir: &Path, nats: &Nats, name: &str) -> Node {
        let node = Node::gateway_starting(dir, nats, name).await;
        wait_metric(&node, "tickwire_feed_stale", |v| v == 0.0).await;
        node
    }

    async fn gateway_starting(dir: &Path, nats: &Nats, name: &str) -> Node {
        Node::start(
            dir,
            name,
            &[
                "--bus",
                &nats.url(),
                "--role",
                "gateway",
                "--stale-after",
                "1s",
            ],
        )
        .await
    }

    /// The NATS connection name the node uses.
    fn bus_name(&self, role: &str) -> String {
        format!("tickwire-{role}-{}", self.addr)
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// NATS, one ingest node and two live gateways, each in its own process.
struct Deployment {
    nats: Nats,
    /// Holds the nodes' logs and address files until the deployment is dropped.
    _dir: tempfile::TempDir,
    ingest: Node,
    gw1: Node,
    gw2: Node,
}

impl Deployment {
    async fn start() -> Option<Deployment> {
        let nats = Nats::start().await?;
        let dir = tempfile::tempdir().unwrap();
        let ingest = Node::ingest(dir.path(), &nats, "ingest").await;
        let gw1 = Node::gateway(dir.path(), &nats, "gw1").await;
        let gw2 = Node::gateway(dir.path(), &nats, "gw2").await;
        Some(Deployment {
            nats,
            _dir: dir,
            ingest,
            gw1,
            gw2,
        })
    }
}

/// Runs `tickwire serve --role ingest` with `args`, which must make it fail
/// to start; returns what it said on stderr.
fn ingest_refuses_to_start(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-feed",
            "--role",
            "ingest",
        ])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it started: {err}");
    err
}

/// `GET path` from nats-server's monitoring port, the body only. HTTP/1.0:
/// Go's server would answer HTTP/1.1 with a chunked body.
async fn nats_monitor_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("HTTP answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text)
}

/// One series of `/metrics`, written as exposed (`name{label="v"}`).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let m = scrape_metrics(addr).await;
    *m.get(name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", m.keys()))
}

async fn wait_metric(node: &Node, name: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = node.metric(name).await;
        if ok(v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {v} on {} never got where expected; log:\n{}",
            node.addr,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads JSON messages until a `status` with `feed == want` arrives.
async fn wait_status(ws: &mut RawWs, want: &str) -> Vec<Value> {
    let mut before = Vec::new();
    loop {
        let (v, b) = ws.recv_until("status").await;
        before.extend(b);
        if v["feed"] == want {
            return before;
        }
    }
}

fn is_tick(v: &Value) -> bool {
    v["type"] == "trade" || v["type"] == "quote"
}

/// (sym, type, seq, price-ish) of a tick, for comparing across nodes.
fn ident(v: &Value) -> (String, String, u64, String) {
    let px = if v["type"] == "trade" {
        v["px"].to_string()
    } else {
        v["bid"].to_string()
    };
    (
        v["sym"].as_str().unwrap().to_owned(),
        v["type"].as_str().unwrap().to_owned(),
        v["seq"].as_u64().unwrap(),
        px,
    )
}

async fn recv_ticks(ws: &mut RawWs, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = ws.recv_json().await;
        if is_tick(&v) {
            out.push(v);
        }
    }
    out
}

/// Per (sym, type): every `seq` strictly above the one before.
fn assert_in_order(ticks: &[Value], who: &str) {
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for t in ticks {
        let (sym, ty, seq, _) = ident(t);
        let prev = last.insert((sym.clone(), ty.clone()), seq).unwrap_or(0);
        assert!(
            seq > prev,
            "{who}: {sym} {ty} seq {seq} after {prev} (duplicate or reordered)"
        );
    }
}

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
    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ingest = Node::ingest(dir.path(), &nats, "ingest").await;
    let gw = Node::gateway(dir.path(), &nats, "gw").await;
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

/// nginx's stream module as an L4 load balancer in front of two gateways.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstreams: &[SocketAddr]) -> Option<Nginx> {
        Nginx::start_with(upstreams, "").await
    }

    /// nginx with more directives in its `server` block (e.g.
    /// `proxy_protocol on;`).
    async fn start_with(upstreams: &[SocketAddr], server_extra: &str) -> Option<Nginx> {
        let bin = find("nginx")?;
        let module = ["/usr/lib/nginx/modules/ngx_stream_module.so"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a} max_fails=1 fail_timeout=30s;\n"))
            .collect();
        let conf = format!(
            "{load}
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
stream {{
  upstream gateways {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_pass gateways;
    proxy_connect_timeout 1s;
    proxy_timeout 1h;
    {server_extra}
  }}
}}
",
            load = module.map_or(String::new(), |m| format!("load_module {m};")),
            dir = dir.path().display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_port(port, "nginx").await;
        Some(Nginx {
            child,
            port,
            _dir: dir,
        })
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateways_clients_move_through_the_load_balancer() {
    let _serial = SERIAL.lock().await;
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    // nats-server and the scratch directory live until the test ends.
    let Deployment {
        ingest, gw1, gw2, ..
    } = deployment;
    let Some(lb) = Nginx::start(&[gw1.addr, gw2.addr]).await else {
        return;
    };
    let mut gateways = [Some(gw1), Some(gw2)];

    let mut c = subscriber(lb.addr()).await;
    c.subscribe(1, &["LB"], Some(&["trade"]), true).await;
    let mut p = publisher(ingest.addr).await;
    let batch: Vec<Value> = (1..=20)
        .map(|i| trade("LB", i, &format!("{i}"), "1"))
        .collect();
    p.publish(&batch).await;
    let seen = recv_ticks(&mut c, 20).await;
    let had = seen.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(had, 20);

    // Which gateway is it on? Kill that one.
    let mut on = None;
    for (i, g) in gateways.iter().enumerate() {
        let g = g.as_ref().unwrap();
        if metric(g.addr, "tickwire_connections{kind=\"subscriber\"}").await == 1.0 {
            on = Some(i);
        }
    }
    let on = on.expect("the client is on one of the gateways");
    gateways[on] = None; // SIGKILL
    c.expect_eof().await;

    // Published while the client is away.
    p.publish(&[trade("LB", 21, "21", "1"), trade("LB", 22, "22", "1")])
        .await;

    // Reconnect through the same address: nginx sends it to the survivor,
    // whose snapshot is never older than what the client had.
    let mut c = subscriber(lb.addr()).await;
    c.subscribe(2, &["LB"], Some(&["trade"]), true).await;
    let snap = recv_ticks(&mut c, 1).await.remove(0);
    assert_eq!(snap["snap"], true);
    assert!(snap["seq"].as_u64().unwrap() >= had, "{snap}");
    assert_eq!(snap["seq"], 22);
    let survivor = gateways[1 - on].as_ref().unwrap();
    assert_eq!(
        metric(survivor.addr, "tickwire_connections{kind=\"subscriber\"}").await,
        1.0
    );
    p.publish(&[trade("LB", 23, "23", "1")]).await;
    assert_eq!(recv_ticks(&mut c, 1).await[0]["seq"], 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_publishers_and_bad_role_flags_are_explained() {
    let _serial = SERIAL.lock().await;
    let out = Command::new(BIN)
        .args(["serve", "--role", "gateway"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--role gateway needs --bus"), "{err}");

    // An ingest node must read the last seqs before it assigns any: with no
    // NATS it does not start, and says why.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let err = ingest_refuses_to_start(&["--bus", &dead, "--bus-connect-timeout", "500ms"]);
    assert!(err.contains("cannot reach NATS at"), "{err}");

    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = Node::gateway_starting(dir.path(), &nats, "gw").await;
    let (_, head) = connect_with(gw.addr, "/v1/publish", "", None).await;
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
}

/// A test CA and a certificate it signed for 127.0.0.1, as PEM files in
/// `dir`: (ca, cert, key).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_can_require_tls_and_a_password_which_is_never_logged() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let Some(nats) = Nats::start_with(&[
        "--user",
        "tw",
        "--pass",
        "s3cret",
        "--tls",
        "--tlscert",
        cert,
        "--tlskey",
        key,
    ])
    .await
    else {
        return;
    };
    let url = format!("tls://tw:s3cret@127.0.0.1:{}", nats.port);
    let ingest = Node::start(
        dir.path(),
        "ingest",
        &[
            "--no-feed",
            "--bus",
            &url,
            "--role",
            "ingest",
            "--bus-tls-ca",
            ca,
        ],
    )
    .await;
    let gw = Node::start(
        dir.path(),
        "gw",
        &["--bus", &url, "--role", "gateway", "--bus-tls-ca", ca],
    )
    .await;
    wait_metric(&gw, "tickwire_feed_stale", |v| v == 0.0).await;
    let mut c = subscriber(gw.addr).await;
    c.subscribe(1, &["SEC"], Some(&["trade"]), false).await;
    let mut p = publisher(ingest.addr).await;
    p.publish(&[trade("SEC", 1, "1", "1"), trade("SEC", 2, "2", "1")])
        .await;
    assert_eq!(recv_ticks(&mut c, 2).await[1]["seq"], 2);
    for log in [ingest.log(), gw.log()] {
        assert!(
            !log.contains("s3cret"),
            "a log shows the bus password:\n{log}"
        );
        assert!(log.contains("tls://***@127.0.0.1"), "{log}");
    }

    // A wrong password: the ingest node does not start, and says why
    // without showing the password it was given.
    let wrong = format!("tls://tw:wr0ng@127.0.0.1:{}", nats.port);
    let err = ingest_refuses_to_start(&[
        "--bus",
        &wrong,
        "--bus-tls-ca",
        ca,
        "--bus-connect-timeout",
        "2s",
    ]);
    assert!(
        err.contains("cannot reach NATS at tls://***@127.0.0.1"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert!(!err.contains("wr0ng"), "{err}");

    // A certificate the node cannot verify (no CA given): no connection.
    let err = ingest_refuses_to_start(&["--bus", &url, "--bus-connect-timeout", "2s"]);
    assert!(
        err.contains("cannot reach NATS at tls://***@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
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

/// A WebSocket upgrade to `/v1/stream` from source address `from` (any
/// 127/8 address: the loopback interface answers for all of them); returns
/// the socket, held open, and the response's status line.
async fn upgrade_from(from: &str, to: SocketAddr) -> (tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let status = read_head(&mut s).await;
    (s, status.lines().next().unwrap_or_default().to_owned())
}

/// Reads until the end of an HTTP response head (or EOF).
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    // A refusal's body follows its head: take what is there.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut tmp)).await {
        buf.extend_from_slice(&tmp[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Issue #15 item 4: behind nginx's stream module with `proxy_protocol on`,
/// the per-address limit and the logs use each client's own address; a v2
/// header works too; a header from an untrusted address, or none from a
/// trusted one, is refused with a 400 that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_with_proxy_protocol_limits_and_logs_use_the_real_client() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let log = dir.path().join("log");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--no-feed",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--max-connections-per-ip", "2"])
        .args(["--proxy-protocol-from", "127.0.0.1/32", "--addr-file"])
        .arg(&addr_file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut node = Node {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        log: log.clone(),
    };
    node.addr = wait_for_addr_file(&addr_file);
    let Some(lb) = Nginx::start_with(&[node.addr], "proxy_protocol on;").await else {
        return;
    };
    // Two clients from 127.0.0.2 fill that address's share; a third is
    // refused; 127.0.0.3 is someone else. Without the header all four
    // would be nginx (127.0.0.1), and the third and fourth refused.
    let (_a, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let (_b, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let (_c, s) = upgrade_from("127.0.0.2", lb.addr()).await;
    assert!(s.contains(" 503 "), "{s}");
    let (_d, s) = upgrade_from("127.0.0.3", lb.addr()).await;
    assert!(s.contains(" 101 "), "{s}");
    let deadline = Instant::now() + WAIT;
    while !node.log().contains("peer=127.0.0.3:") {
        assert!(
            Instant::now() < deadline,
            "no log line for 127.0.0.3: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // v2, straight from a trusted address (nginx sends v1 only).
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ("192.0.2.7:4000".parse::<SocketAddr>().unwrap(), node.addr),
    )
    .build()
    .unwrap();
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    s.write_all(&v2).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Trusted, but no header: refused, saying so.
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 400") && head.contains("no PROXY protocol header"),
        "{head}"
    );
    // A header from an address not trusted: refused, saying so.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(node.addr).await.unwrap();
    s.write_all(
        b"PROXY TCP4 198.51.100.1 127.0.0.1 5000 80\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 400") && head.contains("not in --proxy-protocol-from"),
        "{head}"
    );
}

/// The epoch a node reports in `hello`.
async fn hello_epoch(addr: SocketAddr) -> String {
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let hello = ws.recv_json().await;
    assert_eq!(hello["type"], "hello");
    hello["epoch"].as_str().unwrap().to_owned()
}

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
    let Some(mut nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ingest = Node::ingest(dir.path(), &nats, "ingest").await;
    let gw = Node::gateway(dir.path(), &nats, "gw").await;
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
    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _ingest = Node::ingest(dir.path(), &nats, "ingest").await;
    let gw = Node::gateway(dir.path(), &nats, "gw").await;
    // One SSE client first, so the last-value stream is known before the
    // pause (its lookup, like every read, runs off the gateway's loop).
    let mut warm = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    warm.write_all(b"GET /v1/sse?symbols=WARM&channels=trade HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(first_bytes(&mut warm, 12).await.starts_with("HTTP/1.1 200"));
    let pid = nats.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} nats-server");
    };
    signal("-STOP");
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
    signal("-CONT");
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
    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ingest = Node::ingest(dir.path(), &nats, "ingest").await;
    let gw = Node::gateway(dir.path(), &nats, "gw").await;
    let mut watcher = subscriber(gw.addr).await;
    let pid = nats.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} nats-server");
    };
    signal("-STOP");
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
    signal("-CONT");
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
