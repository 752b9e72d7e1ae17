//! Issue #15 item 5: a slow consumer on a thin link, not just one that
//! stops reading. A subscriber in its own network namespace reaches the
//! server over a veth pair whose server side has a token-bucket qdisc
//! (`tc … tbf`, 256 kbit/s), subscribed to `*` under the bundled recording at
//! `--speed 10` (several times what the link carries). It must receive a
//! conflated but consistent stream (per key, `seq` only goes up), and if it
//! stays behind, `lagging` then close 4000; two clients beside it on the
//! host lose nothing.
//!
//! Needs root (namespaces, veth, qdiscs): without it the test says so and
//! passes, except in CI (`CI=true`), where it must run. The namespace, the
//! veth pair and the addresses are the test's own (named after its pid)
//! and removed when it ends, on failure too.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The link's rate: the bundled recording at `--speed 10` is about
/// 100 KB/s of JSON (0.8 Mbit/s), so a quarter of a megabit is well short.
const THIN_RATE: &str = "256kbit";

/// How long the clients listen.
const LISTEN: Duration = Duration::from_secs(12);

/// Runs `ip` or `tc` with `args`; the error says which command failed.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e} (apt-get install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace joined to the host by a veth pair, the host side shaped by
/// `tbf`. Removed on drop.
struct ThinLink {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
}

impl ThinLink {
    fn create(rate: &str) -> Result<ThinLink, String> {
        let pid = std::process::id();
        // Interface names are at most 15 bytes; a /30 per pid.
        let ns = format!("tw-thin-{pid}");
        let host_if = format!("twh{}", pid % 10_000_000);
        let ns_if = format!("twn{}", pid % 10_000_000);
        let (b, c) = ((pid / 64 % 250) as u8, (pid % 64 * 4) as u8);
        let host_ip = Ipv4Addr::new(10, 251, b, c + 1);
        let ns_ip = Ipv4Addr::new(10, 251, b, c + 2);
        let link = ThinLink {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_ip,
        };
        run("ip", &["netns", "add", &ns])?;
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", &ns])?;
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
        )?;
        run("ip", &["-n", &ns, "link", "set", &ns_if, "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        // What the server sends the namespace leaves through `host_if`.
        run(
            "tc",
            &[
                "qdisc", "add", "dev", &host_if, "root", "tbf", "rate", rate, "burst", "16kb",
                "latency", "100ms",
            ],
        )?;
        Ok(link)
    }

    fn ns_path(&self) -> std::path::PathBuf {
        format!("/var/run/netns/{}", self.ns).into()
    }
}

impl Drop for ThinLink {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = run("ip", &["netns", "del", &self.ns]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

/// The server process, killed on every path.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a client saw in [`LISTEN`].
#[derive(Default)]
struct Seen {
    /// Ticks, in arrival order.
    ticks: Vec<Value>,
    /// Whether a `lagging` notice came.
    lagging: bool,
    /// The close code, if the server closed the connection.
    closed: Option<Option<u16>>,
}

/// Subscribes to `*` and reads for [`LISTEN`] or until the server closes.
async fn listen(addr: SocketAddr) -> Seen {
    let mut ws = subscriber(addr).await;
    ws.send_text(r#"{"op":"subscribe","id":1,"symbols":["*"]}"#)
        .await;
    let mut seen = Seen::default();
    let until = tokio::time::Instant::now() + LISTEN;
    while let Ok(msg) = tokio::time::timeout_at(until, ws.try_recv()).await {
        match msg {
            Some(Msg::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("trade" | "quote") => seen.ticks.push(v),
                    Some("lagging") => seen.lagging = true,
                    _ => {}
                }
            }
            Some(Msg::Close(code, _)) => {
                seen.closed = Some(code);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    seen
}

/// Per key, the `seq`s in arrival order.
fn by_key(ticks: &[Value]) -> HashMap<(String, String), Vec<u64>> {
    let mut keys: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for t in ticks {
        let key = (
            t["sym"].as_str().unwrap().to_owned(),
            t["type"].as_str().unwrap().to_owned(),
        );
        keys.entry(key)
            .or_default()
            .push(t["seq"].as_u64().unwrap());
    }
    keys
}

#[test]
fn a_subscriber_on_a_thin_link_is_conflated_and_consistent_and_nobody_else_loses_anything() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !tickwire::sys::is_root() {
        assert!(
            !in_ci,
            "CI must run the thin-link test as root (network namespaces, veth, tc)"
        );
        eprintln!("SKIPPED: the thin-link test needs root (network namespaces, veth, tc qdisc)");
        return;
    }
    let link = ThinLink::create(THIN_RATE).unwrap_or_else(|e| panic!("cannot build the link: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/replay-data/us-equities-20131007-open30.twr.zst"
    );
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["serve", "--workers", "2", "--listen"])
            .arg(format!("{}:0", link.host_ip))
            .args(["--replay", recording, "--speed", "10", "--loop"])
            // A small queue, so stale values are replaced (conflated) well
            // before the client has been behind for `--evict-after`.
            .args(["--client-buffer-bytes", "16384"])
            .args(["--evict-after", "5s", "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = wait_for_addr_file(&addr_file);

    // The thin client: a thread of its own, moved into the namespace, so
    // its socket crosses the shaped veth.
    let ns = link.ns_path();
    let thin = std::thread::spawn(move || {
        tickwire::sys::enter_net_namespace(&ns).expect("entering the namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(listen(addr))
    });
    // Two clients beside it, on the host (local traffic never leaves
    // through the veth, so the qdisc does not touch it).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let near: Vec<Seen> = rt.block_on(async {
        let a = tokio::spawn(listen(addr));
        let b = tokio::spawn(listen(addr));
        vec![a.await.unwrap(), b.await.unwrap()]
    });
    let thin = thin.join().unwrap();

    for (i, seen) in near.iter().enumerate() {
        assert_eq!(seen.closed, None, "host client {i} was closed");
        assert!(!seen.lagging, "host client {i} fell behind");
        assert!(
            seen.ticks.len() > 1000,
            "host client {i}: {} ticks",
            seen.ticks.len()
        );
        // Lose nothing: after its first tick (a snapshot may be older), a
        // key's `seq` goes up by one each time.
        for (key, seqs) in by_key(&seen.ticks) {
            for w in seqs.windows(2) {
                assert_eq!(w[1], w[0] + 1, "host client {i}, {key:?}: {seqs:?}");
            }
        }
    }
    // Consistent: per key, `seq` only goes up (newest value, never older).
    let thin_keys = by_key(&thin.ticks);
    for (key, seqs) in &thin_keys {
        for w in seqs.windows(2) {
            assert!(w[1] > w[0], "thin client, {key:?} went back: {seqs:?}");
        }
    }
    // Conflated: it got fewer ticks than its neighbours, keys skipping the
    // values that went stale in its queue.
    let skipped = thin_keys
        .values()
        .any(|seqs| seqs.windows(2).any(|w| w[1] > w[0] + 1));
    assert!(
        thin.ticks.len() < near[0].ticks.len() && skipped,
        "the thin link was not thin: {} ticks vs {}",
        thin.ticks.len(),
        near[0].ticks.len()
    );
    // If it stayed behind for `--evict-after` anyway: told why, then 4000.
    if let Some(code) = thin.closed {
        assert_eq!(code, Some(4000));
        assert!(thin.lagging, "closed with 4000 without a `lagging` first");
    }
    eprintln!(
        "thin client: {} ticks, skipped={skipped}, lagging={}, closed={:?}; host clients: {} and {} ticks",
        thin.ticks.len(),
        thin.lagging,
        thin.closed,
        near[0].ticks.len(),
        near[1].ticks.len()
    );
    drop(link);
}
