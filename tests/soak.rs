//! Soak: `SOAK_CLIENTS` (default 10,000) WebSocket clients held at once by
//! the real `tickwire serve` binary in its own process (started with a soft
//! open-file limit of 1,024, which it must raise itself), while a publisher
//! runs. The server's descriptor table holds only its ends of the
//! connections; this test process holds the clients' ends (each under the
//! machine's hard limit of 20,000).
//!
//! Two identical rounds, each:
//! 1. ramp: every client connects (from 127.0.0.2 to 127.0.0.51, so no source
//!    address runs short of ephemeral ports; 200 each, under a per-address
//!    limit set to 416), subscribes to three symbols (1 in 500 also to
//!    `*`), half with snapshots, and waits; 256 handshakes in flight at most;
//! 2. hold: the server's own `/metrics` must show all of them connected and
//!    exactly their subscriptions, and keep showing all of them for
//!    `SOAK_HOLD_SECS` (default 3), during which every client must receive
//!    ticks;
//! 3. churn: each client unsubscribes its oldest symbol and subscribes a new
//!    one three times (a third of them also take `*` and leave it), then
//!    leaves: half by close handshake (1000 back, then EOF), a quarter by
//!    dropping TCP (FIN) and a quarter by reset (RST); then reconnects
//!    (handshakes bounded as in the ramp), churns again and leaves another
//!    way;
//! 4. drain: the publisher stops; the server's connection, subscription,
//!    queued-byte and pending-tick gauges must all return to zero, and its
//!    open descriptors to where they started.
//!
//! Every tick a client reads is checked: of a key it is subscribed to (or
//! one whose unsubscribe is in flight), and `seq` strictly increasing per key
//! on that connection: never reordered, never repeated (except the one
//! `snap` tick a new subscription to a key left earlier may re-send, as
//! docs/PROTOCOL.md specifies).
//!
//! RSS (VmRSS of the server process, settled: the lowest of ten samples over
//! 2 s). The server runs with `MIMALLOC_PURGE_DELAY=0`, so freed pages go
//! back at once rather than when a thread next allocates, and with a
//! 1,024-tick ring, full after the first round. Checked:
//! - after each round RSS is within a quarter of round 1's growth at peak
//!   of the baseline (what stays is high-water capacity: the client slab,
//!   hash maps; 7-18% measured);
//! - the leak check: the first round is the warm-up, and the second,
//!   identical one must end no higher than the first, within `max(8 MiB,
//!   5% of round 1's growth at peak)`, about 9 MiB at 10,000 clients: a leak
//!   of ~500 bytes per connection (20,000 connection lives a round) trips
//!   it. Checked by leaking 1 KiB per connection on purpose: RSS after the
//!   rounds went 55.9 → 74.6 MiB and the test failed.
//!
//! Each check was seen to fail against a server broken on purpose: a
//! per-connection state never freed (queued bytes not back at zero), 1 KiB
//! leaked per connection (RSS), the per-key `seq` guard removed (`seq 1
//! after 1`), an unsubscribe that left the index entry (`tick of S133, not
//! subscribed`).
//!
//! `#[ignore]`d: it holds 10,000 sockets for one to two minutes. `.ci/run`
//! runs it on its own: `cargo test --test soak -- --ignored --nocapture`.
//! `SOAK_SERVER_BIN=target/release/tickwire` measures a release server.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

const SYMBOLS: usize = 200;
/// Source addresses the clients spread over (127.0.0.2 and up).
const SOURCE_ADDRS: usize = 50;
/// Unsubscribe/subscribe steps per connection life.
const CHURN_STEPS: usize = 3;
/// Ticks published per second, round-robin over the symbols (each client
/// with three symbols gets about 3 a second; a `*` client gets them all).
const PUBLISH_PER_SEC: usize = 200;
/// Connection handshakes in flight at once during the ramp.
const RAMP_CONCURRENCY: usize = 256;
/// Longest wait for any one reply or frame (the machine may be loaded).
const WAIT: Duration = Duration::from_secs(30);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Raises this process's soft open-file limit to the hard one (it holds
/// the clients' ends of every connection).
fn raise_fd_limit() {
    let _ = tickwire::sys::raise_fd_limit(u64::MAX, u64::MAX);
}

fn sym(i: usize) -> String {
    format!("S{i:03}")
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

// ---------------------------------------------------------------- server ---

/// The `tickwire` binary of this build (debug under plain `cargo test`), or
/// `SOAK_SERVER_BIN` (e.g. `target/release/tickwire`, to measure what a
/// deployment would use).
fn server_bin() -> PathBuf {
    std::env::var_os("SOAK_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tickwire")))
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(at) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<f64> = stat[at + 1..]
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15; clock ticks are 100 a second
    // on Linux.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// `tickwire serve` in its own process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(clients: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let addr_file = dir.path().join("addr");
        let log = dir.path().join("server.log");
        // Room for reconnects racing the server's notice of the old
        // connection ending, and for the publisher.
        let max_total = clients + clients / 10 + 16;
        let per_ip = 2 * clients.div_ceil(SOURCE_ADDRS) + 16;
        let mut cmd = Command::new(server_bin());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-feed",
            "--workers",
            "2",
        ])
        .args(["--max-connections", &max_total.to_string()])
        .args(["--max-connections-per-ip", &per_ip.to_string()])
        // Small enough to be full after the warm-up round: the ring keeps
        // its last `capacity` ticks alive, and filling it is not a leak.
        .args(["--ring-capacity", "1024"])
        // The same for the history of recent ticks (256 MiB and 5 minutes
        // by default: it would still be filling in round 2, with bar
        // updates for 200 symbols on top of the ticks).
        .args(["--history-bytes", "1048576"])
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", "info")
        // Freed pages go back to the OS at once instead of after 10 ms on
        // the thread's next allocation: RSS then follows live memory, not
        // what an idle thread's heap happens to still cache.
        .env("MIMALLOC_PURGE_DELAY", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        // Start it with the common soft default, so the server has to raise
        // its own limit (as it must in a real deployment).
        common::with_soft_fd_limit(&mut cmd, 1024);
        let mut child = cmd.spawn().expect("spawning tickwire serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                break s.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tickwire serve exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "tickwire serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// VmRSS in KiB.
    fn rss_kb(&self) -> u64 {
        status_kb(&format!("/proc/{}/status", self.pid()), "VmRSS:")
    }

    /// (soft, hard) RLIMIT_NOFILE of the running server.
    fn fd_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (f[0], f[1])
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM, and the exit status within 10 s.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = tickwire::sys::kill(self.pid(), tickwire::sys::Signal::Terminate);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let exited = self.child.try_wait().ok().flatten();
            let log = self.log();
            // Warnings, errors and panics (a line per connection is info).
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" INFO ") && !l.starts_with("  "))
                .take(40)
                .collect();
            eprintln!(
                "soak: server exit status {exited:?}; its log beyond info lines:\n{}",
                notable.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `GET /metrics`, as `name{labels}` → value.
async fn metrics(server: &Server) -> HashMap<String, f64> {
    common::scrape_metrics(server.addr).await
}

/// The gauges that must come back to zero, by name.
const GAUGES: [&str; 7] = [
    "tickwire_connections_admitted",
    "tickwire_connections{kind=\"subscriber\"}",
    "tickwire_connections{kind=\"publisher\"}",
    "tickwire_subscriptions{type=\"named\"}",
    "tickwire_subscriptions{type=\"star\"}",
    "tickwire_queued_bytes",
    "tickwire_pending_ticks",
];

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("/metrics has no {k}: {m:?}"))
}

fn gauges(m: &HashMap<String, f64>) -> Vec<(&'static str, f64)> {
    GAUGES.iter().map(|&k| (k, get(m, k))).collect()
}

// ---------------------------------------------------------------- client ---

/// A lean WebSocket client: frames are parsed in place; between reads an
/// idle client holds no buffer (bytes go through one scratch buffer per
/// thread), so 10,000 of them stay small.
struct Ws {
    stream: TcpStream,
    /// Unconsumed bytes (a partial frame, or frames not yet taken).
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

const OP_TEXT: u8 = 1;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

enum Connect {
    Ok(Ws),
    /// HTTP 503: over a connection limit.
    Refused,
}

impl Ws {
    async fn connect(src: IpAddr, addr: SocketAddr, path: &str) -> Result<Connect, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
        let mut stream = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect from {src}: {e}"))?;
        let connected = Instant::now();
        stream.set_nodelay(true).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write upgrade: {e}"))?;
        let mut buf = Vec::with_capacity(512);
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
                .await
                .map_err(|_| "no upgrade answer".to_string())?
                .map_err(|e| {
                    format!(
                        "read upgrade ({:?} -> {addr}, {:.1?} after connecting, {} bytes read): {e}",
                        stream.local_addr(),
                        connected.elapsed(),
                        buf.len()
                    )
                })?;
            if n == 0 {
                return Err(format!(
                    "closed during handshake: {}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        };
        if buf.starts_with(b"HTTP/1.1 503") {
            return Ok(Connect::Refused);
        }
        if !buf.starts_with(b"HTTP/1.1 101") {
            return Err(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&buf[..end])
            ));
        }
        buf.drain(..end);
        Ok(Connect::Ok(Ws {
            stream,
            buf,
            pos: 0,
        }))
    }

    /// A complete frame at `pos`: (opcode, payload range, frame length).
    fn parse(&self) -> Result<Option<(u8, Range<usize>, usize)>, String> {
        let b = &self.buf[self.pos..];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 || b[1] & 0x80 != 0 {
            return Err(format!("fragmented or masked server frame {:#x}", b[0]));
        }
        let (len, off) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if b.len() < off + len {
            return Ok(None);
        }
        let start = self.pos + off;
        Ok(Some((b[0] & 0x0f, start..start + len, off + len)))
    }

    /// The next frame, or `None` at EOF or reset. Cancel-safe: all state
    /// is in `buf`. The range indexes `buf` until the next call.
    async fn next(&mut self) -> Result<Option<(u8, Range<usize>)>, String> {
        loop {
            if let Some((op, r, len)) = self.parse()? {
                self.pos += len;
                return Ok(Some((op, r)));
            }
            // Keep only the partial frame; an idle client keeps nothing.
            if self.pos == self.buf.len() {
                self.buf = Vec::new();
            } else {
                self.buf.drain(..self.pos);
            }
            self.pos = 0;
            if self.stream.readable().await.is_err() {
                return Ok(None);
            }
            let read = SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                match self.stream.try_read(&mut s) {
                    Ok(n) => {
                        self.buf.extend_from_slice(&s[..n]);
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            });
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Ok(None),
            }
        }
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let f = common::encode_frame(true, opcode, payload);
        tokio::time::timeout(WAIT, self.stream.write_all(&f))
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| format!("write: {e}"))
    }
}

/// Subscriptions as the client knows them, and what it has seen.
#[derive(Default)]
struct Checker {
    /// Symbols subscribed by name (bit per symbol).
    named: [u64; 4],
    /// Symbols with an unsubscribe in flight: their ticks may still come.
    leaving: [u64; 4],
    star: bool,
    star_leaving: bool,
    /// Last `seq` seen per symbol on this connection.
    last_seq: HashMap<u16, u64>,
    /// Symbols unsubscribed since their last tick: subscribing again with a
    /// snapshot re-sends the last tick (flagged `snap`), which the client
    /// may already have had. Only that one repeat is allowed.
    resubscribed: [u64; 4],
    ticks: u64,
}

fn bit(set: &[u64; 4], i: usize) -> bool {
    set[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(set: &mut [u64; 4], i: usize, on: bool) {
    if on {
        set[i / 64] |= 1 << (i % 64);
    } else {
        set[i / 64] &= !(1 << (i % 64));
    }
}

fn sym_index(s: &str) -> Result<usize, String> {
    s.strip_prefix('S')
        .and_then(|d| d.parse::<usize>().ok())
        .filter(|&i| i < SYMBOLS)
        .ok_or_else(|| format!("unknown symbol {s}"))
}

/// `"name":` followed by a string or number, found by scanning (ticks are
/// the bulk of the traffic; a JSON parse each would cost more than the server).
fn field<'a>(json: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let at = json.windows(name.len()).position(|w| w == name)? + name.len();
    let rest = &json[at..];
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let end = rest
        .iter()
        .position(|&c| c == b'"' || c == b',' || c == b'}')?;
    Some(&rest[..end])
}

/// What a client read.
enum Event {
    Tick,
    Control(Value),
    Close(Option<u16>),
    Eof,
}

struct Client {
    n: usize,
    ws: Ws,
    ck: Checker,
}

impl Client {
    async fn connect(n: usize, addr: SocketAddr, retries: &AtomicU64) -> Result<Client, String> {
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % SOURCE_ADDRS) as u8));
        let mut refused = 0;
        let mut ws = loop {
            match Ws::connect(src, addr, "/v1/stream").await? {
                Connect::Ok(ws) => break ws,
                // A reconnect may race the server's notice that this
                // client's previous connection ended: retry, as a client
                // honouring Retry-After would (counted and reported).
                Connect::Refused if refused < 50 => {
                    refused += 1;
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Connect::Refused => return Err(format!("client {n}: 503 fifty times")),
            }
        };
        let (op, r) = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| format!("client {n}: no hello"))??
            .ok_or_else(|| format!("client {n}: EOF before hello"))?;
        if op != OP_TEXT || !ws.buf[r].starts_with(br#"{"type":"hello""#) {
            return Err(format!("client {n}: no hello first"));
        }
        Ok(Client {
            n,
            ws,
            ck: Checker::default(),
        })
    }

    fn fail(&self, why: impl std::fmt::Display) -> String {
        format!("client {}: {why}", self.n)
    }

    /// Reads one frame; checks ticks, answers pings.
    async fn event(&mut self) -> Result<Event, String> {
        let Some((op, r)) = self.ws.next().await? else {
            return Ok(Event::Eof);
        };
        match op {
            OP_TEXT => {
                let p = &self.ws.buf[r];
                if p.starts_with(br#"{"type":"trade""#) {
                    let s = field(p, br#""sym":"#).ok_or_else(|| self.fail("tick without sym"))?;
                    let s = std::str::from_utf8(s).unwrap().to_owned();
                    let seq: u64 = field(p, br#""seq":"#)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                        .ok_or_else(|| self.fail("tick without seq"))?;
                    let i = sym_index(&s).map_err(|e| self.fail(e))?;
                    let ck = &mut self.ck;
                    if !(ck.star || ck.star_leaving || bit(&ck.named, i) || bit(&ck.leaving, i)) {
                        return Err(self.fail(format!("tick of {s}, not subscribed")));
                    }
                    let snap = p.windows(11).any(|w| w == br#""snap":true"#);
                    let repeat_ok = snap && bit(&ck.resubscribed, i);
                    set_bit(&mut ck.resubscribed, i, false);
                    let last = ck.last_seq.entry(i as u16).or_default();
                    if seq < *last || (seq == *last && !repeat_ok) {
                        let last = *last;
                        return Err(self.fail(format!(
                            "{s}: seq {seq} after {last}: reordered or repeated (snap: {snap})"
                        )));
                    }
                    *last = seq;
                    ck.ticks += 1;
                    return Ok(Event::Tick);
                }
                let v: Value = serde_json::from_slice(p).map_err(|e| self.fail(e))?;
                match v["type"].as_str() {
                    Some("subscribed") => {
                        for s in v["symbols"].as_array().unwrap() {
                            match s.as_str().unwrap() {
                                "*" => self.ck.star = true,
                                s => set_bit(&mut self.ck.named, sym_index(s)?, true),
                            }
                        }
                    }
                    Some("unsubscribed") => {
                        for s in v["symbols"].as_array().unwrap() {
                            match s.as_str().unwrap() {
                                "*" => {
                                    self.ck.star_leaving = false;
                                    let ck = &mut self.ck;
                                    for &k in ck.last_seq.keys() {
                                        if !bit(&ck.named, k as usize) {
                                            set_bit(&mut ck.resubscribed, k as usize, true);
                                        }
                                    }
                                }
                                s => {
                                    let i = sym_index(s)?;
                                    set_bit(&mut self.ck.leaving, i, false);
                                    set_bit(&mut self.ck.resubscribed, i, true);
                                }
                            }
                        }
                    }
                    _ => return Err(self.fail(format!("unexpected message {v}"))),
                }
                Ok(Event::Control(v))
            }
            OP_PING => {
                let p = self.ws.buf[r].to_vec();
                self.ws.send(OP_PONG, &p).await?;
                Ok(Event::Tick)
            }
            OP_CLOSE => {
                let p = &self.ws.buf[r];
                Ok(Event::Close(
                    (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])),
                ))
            }
            op => Err(self.fail(format!("unexpected opcode {op}"))),
        }
    }

    /// Reads (and checks) until the reply `kind` with `id`.
    async fn until_reply(&mut self, kind: &str, id: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.event()).await {
                Err(_) => return Err(self.fail(format!("no `{kind}` {id} within {WAIT:?}"))),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Event::Control(v))) if v["type"] == kind && v["id"] == id => return Ok(()),
                Ok(Ok(Event::Tick | Event::Control(_))) => {}
                Ok(Ok(Event::Close(c))) => return Err(self.fail(format!("closed {c:?}"))),
                Ok(Ok(Event::Eof)) => return Err(self.fail("EOF")),
            }
        }
    }

    /// Reads (and checks) for `dur`.
    async fn read_for(&mut self, dur: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + dur;
        loop {
            match tokio::time::timeout_at(until, self.event()).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Event::Tick | Event::Control(_))) => {}
                Ok(Ok(Event::Close(c))) => return Err(self.fail(format!("closed {c:?}"))),
                Ok(Ok(Event::Eof)) => return Err(self.fail("EOF")),
            }
        }
    }

    /// Reads (and checks) until the phase is at least `at`.
    /// Reads (and checks) until the phase is at least `at`; bumps
    /// `first_tick`, if given, at the first tick read here.
    async fn read_until_phase(
        &mut self,
        phase: &mut watch::Receiver<Phase>,
        at: Phase,
        mut first_tick: Option<&AtomicUsize>,
    ) -> Result<(), String> {
        let before = self.ck.ticks;
        loop {
            if *phase.borrow_and_update() >= at {
                return Ok(());
            }
            tokio::select! {
                biased;
                r = phase.changed() => r.map_err(|_| self.fail("test gone"))?,
                e = self.event() => match e? {
                    Event::Tick | Event::Control(_) => {}
                    Event::Close(c) => return Err(self.fail(format!("closed {c:?} while holding"))),
                    Event::Eof => return Err(self.fail("EOF while holding")),
                },
            }
            if self.ck.ticks > before
                && let Some(counter) = first_tick.take()
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn subscribe(
        &mut self,
        id: u64,
        symbols: &[String],
        snapshot: bool,
    ) -> Result<(), String> {
        let msg = serde_json::json!({"op":"subscribe","id":id,"symbols":symbols,"channels":["trade"],"snapshot":snapshot});
        self.ws.send(OP_TEXT, msg.to_string().as_bytes()).await?;
        self.until_reply("subscribed", id).await
    }

    /// Sends an unsubscribe; ticks of `symbols` may arrive until its reply.
    async fn unsubscribe(&mut self, id: u64, symbols: &[String]) -> Result<(), String> {
        for s in symbols {
            if s == "*" {
                self.ck.star = false;
                self.ck.star_leaving = true;
            } else {
                let i = sym_index(s)?;
                set_bit(&mut self.ck.named, i, false);
                set_bit(&mut self.ck.leaving, i, true);
            }
        }
        let msg =
            serde_json::json!({"op":"unsubscribe","id":id,"symbols":symbols,"channels":["trade"]});
        self.ws.send(OP_TEXT, msg.to_string().as_bytes()).await
    }

    /// Leaves by close handshake: the server answers 1000 and ends TCP.
    async fn close(mut self) -> Result<u64, String> {
        self.ws.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.event()).await {
                Err(_) => return Err(self.fail("no close reply")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Event::Close(Some(1000)))) => break,
                Ok(Ok(Event::Close(c))) => return Err(self.fail(format!("closed with {c:?}"))),
                Ok(Ok(Event::Eof)) => return Err(self.fail("EOF before close reply")),
                Ok(Ok(_)) => {}
            }
        }
        // After the close frame, the server shuts the connection down.
        match tokio::time::timeout_at(deadline, self.event()).await {
            Ok(Ok(Event::Eof)) => Ok(self.ck.ticks),
            _ => Err(self.fail("no EOF after the close reply")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Ramp,
    Hold,
    Churn,
}

/// What the clients of one round share.
struct Shared {
    addr: SocketAddr,
    ramp: Semaphore,
    ready: AtomicUsize,
    /// Clients that received ticks during the hold.
    held_with_ticks: AtomicUsize,
    min_hold_ticks: AtomicU64,
    ticks: AtomicU64,
    refused_retries: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Deterministic symbol choices for client `n`.
struct Picker(usize);

impl Picker {
    fn next(&mut self) -> String {
        self.0 = (self.0 * 31 + 17) % SYMBOLS;
        sym(self.0)
    }
}

/// Subscribes to three fresh symbols (and `*` when `star`).
async fn subscribe_initial(
    c: &mut Client,
    pick: &mut Picker,
    star: bool,
) -> Result<Vec<String>, String> {
    let mut mine: Vec<String> = Vec::new();
    while mine.len() < 3 {
        let s = pick.next();
        if !mine.contains(&s) {
            mine.push(s);
        }
    }
    let mut symbols = mine.clone();
    if star {
        symbols.push("*".into());
    }
    c.subscribe(1, &symbols, c.n.is_multiple_of(2)).await?;
    Ok(mine)
}

/// Unsubscribe-oldest/subscribe-new steps; clients with `n % 3 == 0` also
/// take `*` in the first step and leave it in the last.
async fn churn(
    c: &mut Client,
    pick: &mut Picker,
    mine: &mut Vec<String>,
    life: usize,
) -> Result<(), String> {
    let star_churn = c.n.is_multiple_of(3);
    for step in 0..CHURN_STEPS {
        c.read_for(Duration::from_millis(50 + ((c.n + step) % 7) as u64 * 40))
            .await?;
        let id = 10 + (life * CHURN_STEPS + step) as u64 * 2;
        let old = mine.remove(0);
        let mut leave = vec![old];
        if star_churn && step == CHURN_STEPS - 1 && c.ck.star {
            leave.push("*".into());
        }
        c.unsubscribe(id, &leave).await?;
        let new = pick.next();
        let mut take = vec![new.clone()];
        if star_churn && step == 0 && !c.ck.star {
            take.push("*".into());
        }
        c.subscribe(id + 1, &take, step % 2 == 0).await?;
        if !mine.contains(&new) {
            mine.push(new);
        }
        // Symbols left and taken back are subscribed again; their pending
        // unsubscribe was answered before the subscribe's reply.
        for s in mine.iter() {
            let i = sym_index(s)?;
            set_bit(&mut c.ck.leaving, i, false);
            set_bit(&mut c.ck.named, i, true);
        }
    }
    Ok(())
}

/// Ends a connection one of four ways, chosen by `how`.
async fn leave(c: Client, how: usize) -> Result<u64, String> {
    match how % 4 {
        0 | 2 => c.close().await,
        1 => Ok(c.ck.ticks), // FIN, no close frame
        _ => {
            // RST
            c.ws.stream.set_zero_linger().ok();
            Ok(c.ck.ticks)
        }
    }
}

async fn client(
    n: usize,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Result<(), String> {
    let mut pick = Picker(n * 7);
    // Life 1: subscribe, hold with everyone, churn, leave.
    let permit = shared.ramp.acquire().await.unwrap();
    let mut c = Client::connect(n, shared.addr, &shared.refused_retries).await?;
    let mut mine = subscribe_initial(&mut c, &mut pick, n.is_multiple_of(500)).await?;
    drop(permit);
    shared.ready.fetch_add(1, Ordering::Relaxed);
    c.read_until_phase(&mut phase, Phase::Hold, None).await?;
    let before = c.ck.ticks;
    c.read_until_phase(&mut phase, Phase::Churn, Some(&shared.held_with_ticks))
        .await?;
    let held = c.ck.ticks - before;
    shared.min_hold_ticks.fetch_min(held, Ordering::Relaxed);
    churn(&mut c, &mut pick, &mut mine, 0).await?;
    let mut ticks = leave(c, n).await?;
    // Life 2: reconnect, churn, leave the other way. Handshakes in flight
    // are bounded as in the ramp: 10,000 at once would queue past the
    // server's handshake timeout, which starts at accept.
    let permit = shared.ramp.acquire().await.unwrap();
    let mut c = Client::connect(n, shared.addr, &shared.refused_retries).await?;
    let mut mine = subscribe_initial(&mut c, &mut pick, false).await?;
    drop(permit);
    churn(&mut c, &mut pick, &mut mine, 1).await?;
    ticks += leave(c, n + 1).await?;
    shared.ticks.fetch_add(ticks, Ordering::Relaxed);
    Ok(())
}

// ------------------------------------------------------------------ round ---

/// The publisher: batches of trades round-robin over every symbol, each
/// batch confirmed (ping/pong) before the next. Returns the ticks published
/// and the slowest confirmation.
async fn publish(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, Duration) {
    let Connect::Ok(mut ws) = Ws::connect(IpAddr::V4(Ipv4Addr::LOCALHOST), addr, "/v1/publish")
        .await
        .unwrap()
    else {
        panic!("publisher refused");
    };
    let mut i = 0usize;
    let mut sent = 0u64;
    let mut slowest = Duration::ZERO;
    let batch_len = PUBLISH_PER_SEC / 20;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frame = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        let batch: Vec<Value> = (0..batch_len)
            .map(|_| {
                i += 1;
                common::trade(&sym(i % SYMBOLS), i as u64, "1.5", "10")
            })
            .collect();
        let t0 = Instant::now();
        ws.send(OP_TEXT, Value::Array(batch).to_string().as_bytes())
            .await
            .unwrap();
        let ping = format!(r#"{{"op":"ping","id":{i}}}"#);
        ws.send(OP_TEXT, ping.as_bytes()).await.unwrap();
        loop {
            let (op, r) = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("the server confirms a publish batch within the wait")
                .unwrap()
                .expect("publisher connection open");
            frame.clear();
            frame.extend_from_slice(&ws.buf[r]);
            assert_eq!(op, OP_TEXT);
            let v: Value = serde_json::from_slice(&frame).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "pong" && v["id"] == i {
                break;
            }
        }
        slowest = slowest.max(t0.elapsed());
        sent += batch_len as u64;
    }
    ws.send(OP_CLOSE, &1000u16.to_be_bytes()).await.unwrap();
    while let Ok(Ok(Some((op, _)))) = tokio::time::timeout(WAIT, ws.next()).await {
        if op == OP_CLOSE {
            break;
        }
    }
    (sent, slowest)
}

struct RoundReport {
    peak: f64,
    ramp: Duration,
    hold: Duration,
    churn: Duration,
    drain: Duration,
    rss_peak_kb: u64,
    rss_after_kb: u64,
    server_fds_peak: usize,
    client_rss_peak_kb: u64,
    published: u64,
    received: u64,
    min_hold_ticks: u64,
    refused_retries: u64,
    slowest_publish: Duration,
    /// CPU seconds over the round: (server, this test process).
    cpu: (f64, f64),
}

async fn wait_all_ready(shared: &Shared, clients: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while shared.ready.load(Ordering::Relaxed) < clients {
        if let Some(e) = shared.first_error.lock().clone() {
            panic!("a client failed during the ramp: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {clients} clients connected and subscribed within {limit:?}",
            shared.ready.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn round(server: &Server, clients: usize, hold: Duration) -> RoundReport {
    let addr = server.addr;
    let started = Instant::now();
    let cpu_before = (cpu_secs(server.pid()), cpu_secs(std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher_task = tokio::spawn(publish(addr, stop.clone()));

    let shared = Arc::new(Shared {
        addr,
        ramp: Semaphore::new(RAMP_CONCURRENCY),
        ready: AtomicUsize::new(0),
        held_with_ticks: AtomicUsize::new(0),
        min_hold_ticks: AtomicU64::new(u64::MAX),
        ticks: AtomicU64::new(0),
        refused_retries: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let mut tasks = Vec::with_capacity(clients);
    for n in 0..clients {
        let shared2 = shared.clone();
        let rx = phase_rx.clone();
        tasks.push(tokio::spawn(async move {
            let r = client(n, shared2.clone(), rx).await;
            if let Err(e) = &r {
                shared2.first_error.lock().get_or_insert_with(|| e.clone());
            }
            r.is_ok()
        }));
    }
    drop(phase_rx);

    // 1. Ramp.
    wait_all_ready(&shared, clients, Duration::from_secs(180)).await;
    let ramp = started.elapsed();
    eprintln!("soak: {clients} connected and subscribed after {ramp:.1?}");
    let m = metrics(server).await;
    let peak = get(&m, "tickwire_connections{kind=\"subscriber\"}");
    assert_eq!(
        peak, clients as f64,
        "the server's connection gauge at peak"
    );
    assert_eq!(get(&m, "tickwire_connections{kind=\"publisher\"}"), 1.0);
    assert_eq!(
        get(&m, "tickwire_connections_admitted"),
        clients as f64 + 1.0,
        "admission places: every client and the publisher"
    );
    let stars = clients.div_ceil(500) as f64;
    assert_eq!(
        get(&m, "tickwire_subscriptions{type=\"named\"}"),
        3.0 * clients as f64,
        "three named subscriptions per client"
    );
    assert_eq!(get(&m, "tickwire_subscriptions{type=\"star\"}"), stars);

    // 2. Hold: everyone stays connected and keeps receiving.
    let hold_started = Instant::now();
    let _ = phase_tx.send(Phase::Hold);
    let mut rss_peak_kb = server.rss_kb();
    let mut server_fds_peak = server.open_fds();
    let client_rss_peak_kb = status_kb("/proc/self/status", "VmRSS:");
    // At least `hold`, and until every client has had a tick while all
    // are connected (on a loaded machine the publisher may stall for
    // seconds), bounded.
    let hold_limit = hold + Duration::from_secs(60);
    while hold_started.elapsed() < hold || shared.held_with_ticks.load(Ordering::Relaxed) < clients
    {
        assert!(
            hold_started.elapsed() < hold_limit,
            "only {} of {clients} clients received a tick within {hold_limit:?} of all being connected",
            shared.held_with_ticks.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = metrics(server).await;
        assert_eq!(
            get(&m, "tickwire_connections{kind=\"subscriber\"}"),
            clients as f64,
            "connections held through the hold"
        );
        rss_peak_kb = rss_peak_kb.max(server.rss_kb());
        server_fds_peak = server_fds_peak.max(server.open_fds());
        if let Some(e) = shared.first_error.lock().clone() {
            panic!("a client failed while holding: {e}");
        }
    }
    let hold = hold_started.elapsed();

    // 3. Churn, reconnect, leave.
    let churn_started = Instant::now();
    eprintln!("soak: held {hold:.1?}; churning");
    let _ = phase_tx.send(Phase::Churn);
    let mut failed = 0;
    for t in tasks {
        let ok = tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("clients finish their churn")
            .expect("a client task panicked");
        failed += usize::from(!ok);
    }
    if failed > 0 {
        panic!(
            "{failed} clients failed; first: {}",
            shared.first_error.lock().clone().unwrap_or_default()
        );
    }
    let churn = churn_started.elapsed();
    eprintln!("soak: churn, reconnect and leave done in {churn:.1?}");
    stop.store(true, Ordering::Relaxed);
    let (published, slowest_publish) = publisher_task.await.unwrap();

    // 4. Drain: the gauges come back to zero.
    let drain_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(server).await;
        let g = gauges(&m);
        if g.iter().all(|(_, v)| *v == 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "not back to zero: {g:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = drain_started.elapsed();
    RoundReport {
        peak,
        ramp,
        hold,
        churn,
        drain,
        rss_peak_kb,
        rss_after_kb: settled_rss(server).await,
        server_fds_peak,
        client_rss_peak_kb,
        published,
        received: shared.ticks.load(Ordering::Relaxed),
        min_hold_ticks: shared.min_hold_ticks.load(Ordering::Relaxed),
        refused_retries: shared.refused_retries.load(Ordering::Relaxed),
        slowest_publish,
        cpu: (
            cpu_secs(server.pid()) - cpu_before.0,
            cpu_secs(std::process::id()) - cpu_before.1,
        ),
    }
}

/// The server's RSS once it stops falling (the allocator returns freed
/// pages after a short delay): the lowest of samples over ~2 s.
async fn settled_rss(server: &Server) -> u64 {
    let mut low = u64::MAX;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        low = low.min(server.rss_kb());
    }
    low
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 10,000 connections for a minute or two; run by .ci/run with --ignored"]
async fn ten_thousand_connections_churn_and_leave_nothing_behind() {
    raise_fd_limit();
    let clients = env_num("SOAK_CLIENTS", 10_000) as usize;
    let hold = Duration::from_secs(env_num("SOAK_HOLD_SECS", 3));
    let started = Instant::now();
    let server = Server::start(clients);
    let addr = server.addr;

    // The server raised its own open-file limit (it was started at 1,024).
    let (soft, hard) = server.fd_limits();
    assert_eq!(
        soft, hard,
        "the server raises its soft fd limit to the hard one"
    );
    let log = server.log();
    assert!(log.contains("open-file limit"), "{log}");
    if (clients + clients / 10 + 16 + 80) as u64 <= hard {
        assert!(!log.contains("does not fit"), "{log}");
    }

    let baseline = metrics(&server).await;
    assert!(gauges(&baseline).iter().all(|(_, v)| *v == 0.0));
    let rss_baseline_kb = settled_rss(&server).await;
    let fds_baseline = server.open_fds();

    let warm = round(&server, clients, hold).await;
    let second = round(&server, clients, hold).await;

    let m = metrics(&server).await;
    let refused = get(&m, "tickwire_upgrades_refused_total{reason=\"limit\"}");
    let evicted = get(&m, "tickwire_clients_evicted_total");
    let fds_after = server.open_fds();

    eprintln!(
        "soak: {clients} clients against {} serve (pid {}), {SYMBOLS} symbols, {PUBLISH_PER_SEC} ticks/s published",
        server_bin().display(),
        server.pid()
    );
    eprintln!(
        "soak: server RSS baseline {}, open fds baseline {fds_baseline}",
        mib(rss_baseline_kb)
    );
    for (name, r) in [("round 1 (warm-up)", &warm), ("round 2", &second)] {
        let growth = r.rss_peak_kb.saturating_sub(rss_baseline_kb);
        eprintln!(
            "soak: {name}: peak {} connections (server gauge), ramp {:.1?}, hold {:.1?}, churn+reconnect+leave {:.1?}, drain {:.1?}; CPU seconds: server {:.1}, clients {:.1}",
            r.peak, r.ramp, r.hold, r.churn, r.drain, r.cpu.0, r.cpu.1
        );
        eprintln!(
            "soak: {name}: server RSS peak {} ({:.1} KiB per connection over baseline), after {}; server fds peak {}; client process RSS at peak {} ({:.1} KiB per client)",
            mib(r.rss_peak_kb),
            growth as f64 / clients as f64,
            mib(r.rss_after_kb),
            r.server_fds_peak,
            mib(r.client_rss_peak_kb),
            r.client_rss_peak_kb as f64 / clients as f64,
        );
        eprintln!(
            "soak: {name}: {} ticks published (slowest batch confirmation {:.1?}), {} delivered and checked, fewest per client during the hold {}, 503 retries {}",
            r.published, r.slowest_publish, r.received, r.min_hold_ticks, r.refused_retries
        );
    }
    eprintln!(
        "soak: open fds after {fds_after}; {refused} upgrades refused (limit), {evicted} clients evicted; {:.1?} in all",
        started.elapsed()
    );

    assert_eq!(evicted, 0.0, "no client fell behind");
    assert!(
        second.received > clients as u64 && second.published > 0,
        "{}",
        second.received
    );
    assert!(
        fds_after <= fds_baseline + 2,
        "server descriptors leaked: {fds_baseline} before, {fds_after} after"
    );
    // Most of what the connections used is given back: what stays is
    // high-water capacity (the client slab, hash maps, the ring), observed
    // at 7-18% of the growth at peak.
    let growth_kb = warm.rss_peak_kb.saturating_sub(rss_baseline_kb);
    for r in [&warm, &second] {
        assert!(
            r.rss_after_kb <= rss_baseline_kb + growth_kb / 4,
            "server RSS after a round {} is not near its baseline {} (peak {})",
            mib(r.rss_after_kb),
            mib(rss_baseline_kb),
            mib(r.rss_peak_kb)
        );
    }
    // Memory per connection (#5's S4 target: at most 16 KiB at peak). A
    // 16 KiB read buffer kept by every idle connection once doubled it
    // (29.4 KiB) while every other check here passed.
    for (name, r) in [("round 1", &warm), ("round 2", &second)] {
        let per_connection_kib =
            r.rss_peak_kb.saturating_sub(rss_baseline_kb) as f64 / clients as f64;
        assert!(
            per_connection_kib <= 16.0,
            "{name}: {per_connection_kib:.1} KiB per connection at peak, over the 16 KiB budget"
        );
    }
    // The leak check: the second identical round ends where the first did.
    let tolerance_kb = (8 * 1024).max(growth_kb / 20);
    assert!(
        second.rss_after_kb <= warm.rss_after_kb + tolerance_kb,
        "server RSS grew from {} after round 1 to {} after round 2 (tolerance {}): a leak",
        mib(warm.rss_after_kb),
        mib(second.rss_after_kb),
        mib(tolerance_kb)
    );

    // The server still serves, then stops cleanly on SIGTERM.
    let mut p = common::publisher(addr).await;
    let mut ws = common::subscriber(addr).await;
    ws.subscribe(1, &["AFTER"], None, false).await;
    p.publish(&[common::trade("AFTER", 1, "1", "1")]).await;
    assert_eq!(ws.recv_json().await["sym"], "AFTER");
    drop((p, ws));
    let status = server.stop();
    assert!(status.success(), "tickwire serve exited with {status}");
}
