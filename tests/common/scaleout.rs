//! The scale-out harness (tests/scaleout_*.rs): a real `nats-server` (with
//! JetStream), `tickwire serve` processes as ingest nodes and gateways, and
//! nginx's stream module as the L4 load balancer, all started and killed by
//! the tests themselves; and the checks they share.
//!
//! Needs `nats-server` (and `nginx` with its stream module for the load
//! balancer tests) on PATH or in /usr/sbin. Without them a test says so and
//! passes, unless `TICKWIRE_REQUIRE_NATS=1` (set by `.ci/run`, which
//! installs them), where a missing server is a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_tickwire");

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Finds a server binary, or decides whether its absence fails the test.
pub fn find(name: &str) -> Option<PathBuf> {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A nats-server with JetStream on a disk store that outlives restarts.
pub struct Nats {
    pub bin: PathBuf,
    /// More flags for nats-server (auth, TLS).
    pub extra: Vec<String>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub monitor: u16,
    pub child: Option<Child>,
}

impl Nats {
    pub async fn start() -> Option<Nats> {
        Nats::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Option<Nats> {
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

    pub async fn spawn(&mut self) {
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

    /// Pauses (SIGSTOP) nats-server: its connections stay up, so requests
    /// wait instead of failing at once, and nothing is delivered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes (SIGCONT) a paused nats-server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} nats-server");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// The monitoring endpoint's `/connz` with every subscription's detail.
    pub async fn connz(&self) -> Value {
        let body = nats_monitor_get(
            format!("127.0.0.1:{}", self.monitor).parse().unwrap(),
            "/connz?subs=detail",
        )
        .await;
        serde_json::from_str(&body).expect("connz is JSON")
    }

    /// One connection's subscriptions (subject → messages delivered), by
    /// the connection name tickwire gives itself.
    pub async fn subscriptions_of(&self, name: &str) -> HashMap<String, u64> {
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
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Node {
    pub async fn start(dir: &Path, name: &str, args: &[&str]) -> Node {
        let addr_file = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let log = dir.join(format!("{name}.log"));
        // Every test client is 127.0.0.1: the per-address limit is raised
        // unless the test sets it.
        let per_ip: &[&str] = if args.contains(&"--max-connections-per-ip") {
            &[]
        } else {
            &["--max-connections-per-ip", "10000"]
        };
        let child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args(per_ip)
            .arg("--addr-file")
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

    pub async fn ingest(dir: &Path, nats: &Nats, name: &str) -> Node {
        Node::start(
            dir,
            name,
            &["--no-feed", "--bus", &nats.url(), "--role", "ingest"],
        )
        .await
    }

    /// A gateway, once its feed is live (connected, heartbeat heard).
    pub async fn gateway(dir: &Path, nats: &Nats, name: &str) -> Node {
        let node = Node::gateway_starting(dir, nats, name).await;
        wait_metric(&node, "tickwire_feed_stale", |v| v == 0.0).await;
        node
    }

    pub async fn gateway_starting(dir: &Path, nats: &Nats, name: &str) -> Node {
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
    pub fn bus_name(&self, role: &str) -> String {
        format!("tickwire-{role}-{}", self.addr)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// NATS, one ingest node and two live gateways, each in its own process.
pub struct Deployment {
    pub nats: Nats,
    /// Holds the nodes' logs and address files until the deployment is dropped.
    pub _dir: tempfile::TempDir,
    pub ingest: Node,
    pub gw1: Node,
    pub gw2: Node,
}

impl Deployment {
    pub async fn start() -> Option<Deployment> {
        let OneGateway {
            nats,
            dir,
            ingest,
            gw: gw1,
        } = OneGateway::start().await?;
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

/// NATS, one ingest node and one live gateway, each in its own process.
pub struct OneGateway {
    pub nats: Nats,
    /// Holds the nodes' logs and address files (and more nodes' of the test).
    pub dir: tempfile::TempDir,
    pub ingest: Node,
    pub gw: Node,
}

impl OneGateway {
    pub async fn start() -> Option<OneGateway> {
        let nats = Nats::start().await?;
        let dir = tempfile::tempdir().unwrap();
        let ingest = Node::ingest(dir.path(), &nats, "ingest").await;
        let gw = Node::gateway(dir.path(), &nats, "gw").await;
        Some(OneGateway {
            nats,
            dir,
            ingest,
            gw,
        })
    }
}

/// Runs `tickwire serve --role ingest` with `args`, which must make it fail
/// to start; returns what it said on stderr.
pub fn ingest_refuses_to_start(args: &[&str]) -> String {
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
pub async fn nats_monitor_get(addr: SocketAddr, path: &str) -> String {
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
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let m = scrape_metrics(addr).await;
    *m.get(name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", m.keys()))
}

pub async fn wait_metric(node: &Node, name: &str, ok: impl Fn(f64) -> bool) {
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
pub async fn wait_status(ws: &mut RawWs, want: &str) -> Vec<Value> {
    let mut before = Vec::new();
    loop {
        let (v, b) = ws.recv_until("status").await;
        before.extend(b);
        if v["feed"] == want {
            return before;
        }
    }
}

pub fn is_tick(v: &Value) -> bool {
    v["type"] == "trade" || v["type"] == "quote"
}

/// (sym, type, seq, price-ish) of a tick, for comparing across nodes.
pub fn ident(v: &Value) -> (String, String, u64, String) {
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

pub async fn recv_ticks(ws: &mut RawWs, n: usize) -> Vec<Value> {
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
pub fn assert_in_order(ticks: &[Value], who: &str) {
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

/// nginx's stream module as an L4 load balancer in front of two gateways.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    pub _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(upstreams: &[SocketAddr]) -> Option<Nginx> {
        Nginx::start_with(upstreams, "").await
    }

    /// nginx with more directives in its `server` block (e.g.
    /// `proxy_protocol on;`).
    pub async fn start_with(upstreams: &[SocketAddr], server_extra: &str) -> Option<Nginx> {
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

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The epoch a node reports in `hello`.
pub async fn hello_epoch(addr: SocketAddr) -> String {
    let (mut ws, head) = connect_with(addr, "/v1/stream", "", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let hello = ws.recv_json().await;
    assert_eq!(hello["type"], "hello");
    hello["epoch"].as_str().unwrap().to_owned()
}
