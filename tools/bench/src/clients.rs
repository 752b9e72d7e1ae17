//! Subscriber connections: thousands of them on a few threads, each thread a
//! single-threaded tokio runtime with one cheap task per connection.
//!
//! A task reads whatever its socket holds into its buffer, walks the frames
//! in place, and for every tick checks `seq` against the last one of its key
//! and records latency into the thread's histograms. Nothing is shared
//! between threads on the hot path except a few relaxed counters; the
//! histograms are merged once at the end (and once a second for the
//! interval log and the progress line).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use super::plan::{ClientSpec, Plan};
use super::scan::{Msg, ScanError, scan};
use super::ws::{self, Endpoint, WsError};
use crate::tickwire_lib::wall_clock_ns;

/// Handshakes in flight per thread: enough to connect 10,000 clients in a
/// few seconds without overflowing the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 128;
/// Initial read buffer per connection; it grows when a stalled client
/// resumes to a big backlog.
const READ_BUFFER: usize = 8 * 1024;

/// The histogram every latency goes into: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Why one connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("no `hello` from the server; its first message was: {0}")]
    NoHello(String),
    #[error("the subscribe was refused: {0}")]
    SubscribeRefused(String),
    #[error("setting up the connection took longer than {0:?}")]
    Timeout(Duration),
}

/// Where the run is; every connection watches it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Connecting,
    /// Ticks are being published; the schedule started at this wall time.
    Publishing {
        start_wall_ns: u64,
    },
    Stop,
}

pub struct ClientsConfig {
    /// Where clients connect, round-robin ([`endpoint_index`]).
    pub endpoints: Vec<Endpoint>,
    pub plan: Arc<Plan>,
    pub threads: usize,
    pub connect_timeout: Duration,
    /// Slow clients stop reading `.0` after publishing starts, for `.1`.
    pub stall: Option<(Duration, Duration)>,
    /// Ticks intended before `start + warmup` are counted but not timed.
    pub warmup: Duration,
}

/// Which of `n` endpoints a client connects to: round-robin by its id.
pub fn endpoint_index(spec: &ClientSpec, n: usize) -> usize {
    spec.id as usize % n.max(1)
}

/// Live figures, shared by all threads (relaxed; each stands alone).
#[derive(Default, Debug)]
pub struct Live {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Connections that ended before the run told them to.
    pub lost: AtomicU64,
    pub delivered_fast: AtomicU64,
    pub delivered_slow: AtomicU64,
    pub gap_events: AtomicU64,
    pub reorders: AtomicU64,
    pub parse_errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    pub first_loss: Mutex<Option<String>>,
    /// Thread ids of the client threads, for their CPU time.
    pub tids: Mutex<Vec<i32>>,
}

fn note(slot: &Mutex<Option<String>>, msg: impl FnOnce() -> String) {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(msg());
    }
}

/// Per-group counts (fast or slow clients).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// Live ticks received (snapshots excluded).
    pub delivered: u64,
    pub snapshots: u64,
    /// Times a key's `seq` jumped forward, and the ticks skipped by it.
    pub gap_events: u64,
    pub gap_ticks: u64,
    /// Ticks whose `seq` was not above the last one of their key.
    pub reorders: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.snapshots += o.snapshots;
        self.gap_events += o.gap_events;
        self.gap_ticks += o.gap_ticks;
        self.reorders += o.reorders;
    }
}

/// One second of latencies from one thread.
pub struct IntervalMsg {
    pub index: u64,
    pub rx: Histogram<u64>,
    pub intended: Histogram<u64>,
}

/// Everything one thread measured.
pub struct Acc {
    /// Fast clients, from `rx` and from the intended send time.
    pub rx: Histogram<u64>,
    pub intended: Histogram<u64>,
    /// Slow clients, from `rx`.
    pub slow_rx: Histogram<u64>,
    /// Fast clients from `rx`: before, during and after the stall.
    pub phases: [Histogram<u64>; 3],
    pub fast: Counts,
    pub slow: Counts,
    pub parse_errors: u64,
    pub samples: Vec<String>,
    /// Ticks of a symbol or key the client did not subscribe to.
    pub unexpected: u64,
    /// Ticks received before their `rx` by our clock (recorded as 1 ns).
    pub clock_skew: u64,
    /// `lagging` notices and `error` messages from the server.
    pub lagging: u64,
    pub server_errors: u64,
    /// How connections ended: close code, "eof" or "error".
    pub ends: BTreeMap<String, u64>,
    pub slow_ends: BTreeMap<String, u64>,
    interval_rx: Histogram<u64>,
    interval_intended: Histogram<u64>,
}

impl Acc {
    pub fn empty() -> Acc {
        Acc {
            rx: new_histogram(),
            intended: new_histogram(),
            slow_rx: new_histogram(),
            phases: [new_histogram(), new_histogram(), new_histogram()],
            fast: Counts::default(),
            slow: Counts::default(),
            parse_errors: 0,
            samples: Vec::new(),
            unexpected: 0,
            clock_skew: 0,
            lagging: 0,
            server_errors: 0,
            ends: BTreeMap::new(),
            slow_ends: BTreeMap::new(),
            interval_rx: new_histogram(),
            interval_intended: new_histogram(),
        }
    }

    /// All threads' figures in one.
    pub fn merge_all(accs: Vec<Acc>) -> Acc {
        let mut it = accs.into_iter();
        let Some(mut first) = it.next() else {
            return Acc::empty();
        };
        for a in it {
            first.merge(&a);
        }
        first
    }

    /// Folds another thread's figures into this one.
    pub fn merge(&mut self, o: &Acc) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.rx.add(&o.rx);
        let _ = self.intended.add(&o.intended);
        let _ = self.slow_rx.add(&o.slow_rx);
        for (a, b) in self.phases.iter_mut().zip(&o.phases) {
            let _ = a.add(b);
        }
        self.fast.add(&o.fast);
        self.slow.add(&o.slow);
        self.parse_errors += o.parse_errors;
        for s in &o.samples {
            if self.samples.len() < 5 {
                self.samples.push(s.clone());
            }
        }
        self.unexpected += o.unexpected;
        self.clock_skew += o.clock_skew;
        self.lagging += o.lagging;
        self.server_errors += o.server_errors;
        for (k, v) in &o.ends {
            *self.ends.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.slow_ends {
            *self.slow_ends.entry(k.clone()).or_default() += v;
        }
    }

    fn sample(&mut self, s: String) {
        if self.samples.len() < 5 {
            self.samples.push(s);
        }
    }
}

struct ThreadCtx {
    cfg: Arc<ClientsConfig>,
    live: Arc<Live>,
    acc: RefCell<Acc>,
    sem: Semaphore,
    /// Ticks intended at or after this wall time are timed (0: not yet).
    record_from: Cell<u64>,
    /// The slow clients' stall, as wall-clock ns (0, 0 when none).
    stall: Cell<(u64, u64)>,
}

/// Starts the client threads; each returns its [`Acc`] once the phase
/// becomes [`Phase::Stop`] and its connections have closed.
pub fn spawn(
    cfg: Arc<ClientsConfig>,
    live: Arc<Live>,
    phase: watch::Receiver<Phase>,
    intervals: mpsc::Sender<IntervalMsg>,
) -> std::io::Result<Vec<std::thread::JoinHandle<Acc>>> {
    let threads = cfg.threads.max(1);
    let mut per: Vec<Vec<ClientSpec>> = vec![Vec::new(); threads];
    for (i, c) in cfg.plan.clients.iter().enumerate() {
        per[i % threads].push(c.clone());
    }
    let mut handles = Vec::new();
    for (idx, specs) in per.into_iter().enumerate() {
        let (cfg, live, phase, tx) = (cfg.clone(), live.clone(), phase.clone(), intervals.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-clients-{idx}"))
                .spawn(move || thread_main(cfg, specs, live, phase, tx))?,
        );
    }
    Ok(handles)
}

fn thread_main(
    cfg: Arc<ClientsConfig>,
    specs: Vec<ClientSpec>,
    live: Arc<Live>,
    phase: watch::Receiver<Phase>,
    intervals: mpsc::Sender<IntervalMsg>,
) -> Acc {
    live.tids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(super::procstat::current_tid());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note(&live.first_error, || {
                format!("cannot build a client runtime: {e}")
            });
            live.failed.fetch_add(specs.len() as u64, Ordering::Relaxed);
            return Acc::empty();
        }
    };
    let ctx = Rc::new(ThreadCtx {
        cfg,
        live,
        acc: RefCell::new(Acc::empty()),
        sem: Semaphore::new(CONNECT_CONCURRENCY),
        record_from: Cell::new(0),
        stall: Cell::new((0, 0)),
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut tasks = Vec::with_capacity(specs.len());
        for spec in specs {
            tasks.push(tokio::task::spawn_local(client(
                spec,
                ctx.clone(),
                phase.clone(),
            )));
        }
        let ticker = tokio::task::spawn_local(ticker(ctx.clone(), phase.clone(), intervals));
        for t in tasks {
            let _ = t.await;
        }
        let _ = ticker.await;
    });
    drop(local);
    match Rc::try_unwrap(ctx) {
        Ok(ctx) => ctx.acc.into_inner(),
        // Every task has ended, so no other reference is left; be safe anyway.
        Err(ctx) => std::mem::replace(&mut *ctx.acc.borrow_mut(), Acc::empty()),
    }
}

/// Follows the phase for the thread and hands over one interval histogram
/// a second while publishing.
async fn ticker(
    ctx: Rc<ThreadCtx>,
    mut phase: watch::Receiver<Phase>,
    tx: mpsc::Sender<IntervalMsg>,
) {
    let mut index = 0u64;
    let mut tick: Option<tokio::time::Interval> = None;
    loop {
        let p = *phase.borrow_and_update();
        match p {
            Phase::Connecting => {}
            Phase::Publishing { start_wall_ns } => {
                if ctx.record_from.get() == 0 {
                    ctx.record_from
                        .set((start_wall_ns + ctx.cfg.warmup.as_nanos() as u64).max(1));
                    if let Some((at, len)) = ctx.cfg.stall {
                        let s = start_wall_ns + at.as_nanos() as u64;
                        ctx.stall.set((s, s + len.as_nanos() as u64));
                    }
                    let mut i = tokio::time::interval_at(
                        tokio::time::Instant::now() + Duration::from_secs(1),
                        Duration::from_secs(1),
                    );
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick = Some(i);
                }
            }
            Phase::Stop => {
                let mut acc = ctx.acc.borrow_mut();
                let rx = std::mem::replace(&mut acc.interval_rx, new_histogram());
                let intended = std::mem::replace(&mut acc.interval_intended, new_histogram());
                let _ = tx.send(IntervalMsg {
                    index,
                    rx,
                    intended,
                });
                return;
            }
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return },
            _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                let mut acc = ctx.acc.borrow_mut();
                let rx = std::mem::replace(&mut acc.interval_rx, new_histogram());
                let intended = std::mem::replace(&mut acc.interval_intended, new_histogram());
                drop(acc);
                let _ = tx.send(IntervalMsg { index, rx, intended });
                index += 1;
            }
        }
    }
}

/// One connection's state while it runs.
struct Conn {
    spec: ClientSpec,
    /// (plan symbol index, last seq of [trade, quote]); sorted by symbol.
    keys: Vec<(u32, [u64; 2])>,
    fragment: Option<Vec<u8>>,
    mask: u64,
}

impl Conn {
    fn mask(&mut self) -> [u8; 4] {
        self.mask = self
            .mask
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let b = (self.mask >> 32).to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}

async fn client(spec: ClientSpec, ctx: Rc<ThreadCtx>, phase: watch::Receiver<Phase>) {
    let permit = ctx.sem.acquire().await;
    let limit = ctx.cfg.connect_timeout;
    let opened = tokio::time::timeout(limit, open(&spec, &ctx)).await;
    drop(permit);
    let (stream, buf) = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            note(&ctx.live.first_error, || format!("client {}: {e}", spec.id));
            return;
        }
        Err(_) => {
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            note(&ctx.live.first_error, || {
                format!("client {}: {}", spec.id, ClientError::Timeout(limit))
            });
            return;
        }
    };
    ctx.live.connected.fetch_add(1, Ordering::Relaxed);
    let keys = spec.symbols.iter().map(|&s| (s, [0u64; 2])).collect();
    let mut conn = Conn {
        mask: spec.id as u64 ^ 0x2545_F491_4F6C_DD1D,
        spec,
        keys,
        fragment: None,
    };
    let end = run(&mut conn, stream, buf, &ctx, phase).await;
    if let Some(end) = end {
        ctx.live.lost.fetch_add(1, Ordering::Relaxed);
        note(&ctx.live.first_loss, || {
            format!("client {}: {end}", conn.spec.id)
        });
        let mut acc = ctx.acc.borrow_mut();
        let ends = if conn.spec.slow {
            &mut acc.slow_ends
        } else {
            &mut acc.ends
        };
        let key = if let Some(rest) = end.strip_prefix("close ") {
            rest.split_whitespace().next().unwrap_or("?").to_owned()
        } else if end.starts_with("eof") {
            "eof".to_owned()
        } else {
            "error".to_owned()
        };
        *ends.entry(key).or_default() += 1;
    }
}

/// Connects, upgrades, waits for `hello`, subscribes and waits for
/// `subscribed`. Returns the stream and the bytes already read after it.
async fn open(spec: &ClientSpec, ctx: &ThreadCtx) -> Result<(TcpStream, BytesMut), ClientError> {
    let ep = &ctx.cfg.endpoints[endpoint_index(spec, ctx.cfg.endpoints.len())];
    let (mut s, mut buf) = upgrade(ep, (spec.id as u64) << 20 ^ wall_clock_ns()).await?;
    // hello, then subscribe, then wait for `subscribed` (id 1).
    let mut said_hello = false;
    loop {
        while let Some(h) = ws::parse_head(&buf)? {
            if buf.len() < h.total() {
                break;
            }
            let payload = buf[h.header_len..h.total()].to_vec();
            buf.advance(h.total());
            match h.opcode {
                ws::OP_TEXT => {}
                ws::OP_CLOSE => {
                    return Err(WsError::Closed(if said_hello {
                        "before `subscribed` arrived"
                    } else {
                        "before `hello` arrived"
                    })
                    .into());
                }
                _ => continue,
            }
            let text = String::from_utf8_lossy(&payload);
            let kind = match scan(&payload) {
                Ok(Msg::Control(k)) => String::from_utf8_lossy(k).into_owned(),
                Ok(Msg::Tick(_)) => "tick".into(),
                Err(_) => String::new(),
            };
            if !said_hello {
                if kind != "hello" {
                    return Err(ClientError::NoHello(text.chars().take(200).collect()));
                }
                said_hello = true;
                let mut frame = Vec::new();
                let msg = subscribe_message(spec, &ctx.cfg.plan);
                let m = (spec.id as u64 ^ 0xDEAD_BEEF).to_le_bytes();
                ws::client_frame(
                    &mut frame,
                    ws::OP_TEXT,
                    msg.as_bytes(),
                    [m[0], m[1], m[2], m[3]],
                );
                s.write_all(&frame).await.map_err(WsError::Io)?;
            } else if kind == "subscribed" {
                return Ok((s, buf));
            } else if kind == "error" {
                return Err(ClientError::SubscribeRefused(
                    text.chars().take(300).collect(),
                ));
            }
        }
        if s.read_buf(&mut buf).await.map_err(WsError::Io)? == 0 {
            return Err(WsError::Closed(if said_hello {
                "before `subscribed` arrived"
            } else {
                "before `hello` arrived"
            })
            .into());
        }
    }
}

/// Connects to `/v1/stream` and completes the WebSocket upgrade.
async fn upgrade(ep: &Endpoint, nonce: u64) -> Result<(TcpStream, BytesMut), WsError> {
    let mut s = TcpStream::connect(ep.addr)
        .await
        .map_err(|source| WsError::Connect {
            addr: ep.addr,
            source,
        })?;
    s.set_nodelay(true)?;
    let path = "/v1/stream";
    let (req, accept) = ws::upgrade_request(ep, path, nonce);
    s.write_all(&req).await?;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(WsError::Closed("during the WebSocket handshake"));
        }
        if let Some(n) = ws::parse_upgrade_response(&buf, &accept, ep, path)? {
            buf.advance(n);
            return Ok((s, buf));
        }
    }
}

/// Connects once and reads the `hello`, so that a dead address or a server
/// speaking another protocol is reported once, clearly, before thousands of
/// clients try. Returns the server's name and version from `hello`.
pub async fn probe(ep: &Endpoint, limit: Duration) -> Result<String, ClientError> {
    let (mut s, mut buf) = match tokio::time::timeout(limit, upgrade(ep, wall_clock_ns())).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(WsError::HandshakeTimeout {
                addr: ep.addr,
                path: "/v1/stream".into(),
                secs: limit.as_secs(),
            }
            .into());
        }
    };
    match tokio::time::timeout(limit, read_hello(&mut s, &mut buf)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::NoHello(format!(
            "nothing within {} s",
            limit.as_secs()
        ))),
    }
}

async fn read_hello(s: &mut TcpStream, buf: &mut BytesMut) -> Result<String, ClientError> {
    loop {
        if let Some(h) = ws::parse_head(buf)?
            && buf.len() >= h.total()
        {
            let payload = &buf[h.header_len..h.total()];
            let text = String::from_utf8_lossy(payload).into_owned();
            if h.opcode != ws::OP_TEXT || scan(payload) != Ok(Msg::Control(b"hello")) {
                return Err(ClientError::NoHello(text.chars().take(200).collect()));
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let name = format!(
                "{} {}",
                v["server"].as_str().unwrap_or("?"),
                v["version"].as_str().unwrap_or("?")
            );
            let mut close = Vec::new();
            ws::client_frame(
                &mut close,
                ws::OP_CLOSE,
                &1000u16.to_be_bytes(),
                [1, 2, 3, 4],
            );
            let _ = s.write_all(&close).await;
            return Ok(name);
        }
        if s.read_buf(buf).await.map_err(WsError::Io)? == 0 {
            return Err(WsError::Closed("before `hello` arrived").into());
        }
    }
}

fn subscribe_message(spec: &ClientSpec, plan: &Plan) -> String {
    let symbols: Vec<&str> = if spec.all {
        vec!["*"]
    } else {
        spec.symbols
            .iter()
            .map(|&i| plan.symbols[i as usize].as_str())
            .collect()
    };
    serde_json::json!({
        "op": "subscribe",
        "id": 1,
        "symbols": symbols,
        "channels": plan.channel_names(),
        "snapshot": true,
    })
    .to_string()
}

/// Reads until told to stop. Returns why the connection ended early, if it did.
async fn run(
    conn: &mut Conn,
    mut s: TcpStream,
    mut buf: BytesMut,
    ctx: &ThreadCtx,
    mut phase: watch::Receiver<Phase>,
) -> Option<String> {
    let mut out = Vec::new();
    // Bytes already read with `subscribed` (snapshots) come first.
    if let Err(e) = process(conn, &mut buf, wall_clock_ns(), ctx, &mut out) {
        return Some(e);
    }
    let mut stalled = false;
    loop {
        if matches!(*phase.borrow_and_update(), Phase::Stop) {
            let mut close = Vec::new();
            let m = conn.mask();
            ws::client_frame(&mut close, ws::OP_CLOSE, &1000u16.to_be_bytes(), m);
            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&close)).await;
            return None;
        }
        let (stall_from, stall_to) = ctx.stall.get();
        let now = wall_clock_ns();
        let stall_pending = conn.spec.slow && !stalled && stall_from != 0 && now < stall_to;
        let stall_in = Duration::from_nanos(stall_from.saturating_sub(now));
        tokio::select! {
            r = phase.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep(stall_in), if stall_pending => {
                // Stop reading: the socket fills, the server must cope.
                stalled = true;
                let left = Duration::from_nanos(stall_to.saturating_sub(wall_clock_ns()));
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    r = phase.changed() => if r.is_err() { return None },
                }
            }
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => return Some("eof: the server closed the TCP connection without a close frame".into()),
                Ok(_) => {
                    let now = wall_clock_ns();
                    if let Err(e) = process(conn, &mut buf, now, ctx, &mut out) {
                        if !out.is_empty() {
                            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&out)).await;
                        }
                        return Some(e);
                    }
                    if !out.is_empty() {
                        if let Err(e) = s.write_all(&out).await {
                            return Some(format!("error: writing to the server: {e}"));
                        }
                        out.clear();
                    }
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(READ_BUFFER);
                    }
                }
                Err(e) => return Some(format!("error: reading: {e}")),
            },
        }
    }
}

/// Walks the complete frames in `buf`. Frames we must answer (pong, close
/// echo) are appended to `out`. `Err` says why the connection is over.
fn process(
    conn: &mut Conn,
    buf: &mut BytesMut,
    now: u64,
    ctx: &ThreadCtx,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut acc = ctx.acc.borrow_mut();
    let before = (
        acc.fast.delivered,
        acc.slow.delivered,
        acc.fast.gap_events + acc.slow.gap_events,
    );
    let (reorders0, parse0) = (acc.fast.reorders + acc.slow.reorders, acc.parse_errors);
    let mut pos = 0;
    let mut result = Ok(());
    loop {
        let h = match ws::parse_head(&buf[pos..]) {
            Ok(Some(h)) if buf.len() - pos >= h.total() => h,
            Ok(_) => break,
            Err(e) => {
                result = Err(format!("error: {e}"));
                break;
            }
        };
        let payload = &buf[pos + h.header_len..pos + h.total()];
        match h.opcode {
            ws::OP_TEXT if h.fin && conn.fragment.is_none() => {
                on_message(conn, payload, now, ctx, &mut acc)
            }
            ws::OP_TEXT if conn.fragment.is_none() => conn.fragment = Some(payload.to_vec()),
            ws::OP_CONT if conn.fragment.is_some() => {
                let f = conn.fragment.as_mut().expect("guarded");
                f.extend_from_slice(payload);
                if f.len() > ws::MAX_FRAME {
                    result =
                        Err("error: a fragmented message larger than the runner accepts".into());
                    break;
                }
                if h.fin {
                    let m = conn.fragment.take().expect("guarded");
                    on_message(conn, &m, now, ctx, &mut acc);
                }
            }
            ws::OP_TEXT | ws::OP_CONT => {
                result = Err("error: the server interleaved or misused fragments".into());
                break;
            }
            ws::OP_BINARY => {
                acc.parse_errors += 1;
                acc.sample("a binary frame (the runner asked for JSON)".into());
            }
            ws::OP_CLOSE => {
                let code = ws::close_code(payload);
                let mask = conn.mask();
                ws::client_frame(out, ws::OP_CLOSE, &payload[..payload.len().min(2)], mask);
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                result = Err(match code {
                    Some(c) => format!("close {c} {reason}"),
                    None => "close none".into(),
                });
                break;
            }
            ws::OP_PING => {
                let mask = conn.mask();
                ws::client_frame(out, ws::OP_PONG, payload, mask);
            }
            _ => {}
        }
        pos += h.total();
    }
    buf.advance(pos);
    let live = &ctx.live;
    let d_fast = acc.fast.delivered - before.0;
    let d_slow = acc.slow.delivered - before.1;
    if d_fast > 0 {
        live.delivered_fast.fetch_add(d_fast, Ordering::Relaxed);
    }
    if d_slow > 0 {
        live.delivered_slow.fetch_add(d_slow, Ordering::Relaxed);
    }
    let gaps = acc.fast.gap_events + acc.slow.gap_events - before.2;
    if gaps > 0 {
        live.gap_events.fetch_add(gaps, Ordering::Relaxed);
    }
    let reorders = acc.fast.reorders + acc.slow.reorders - reorders0;
    if reorders > 0 {
        live.reorders.fetch_add(reorders, Ordering::Relaxed);
    }
    if acc.parse_errors > parse0 {
        live.parse_errors
            .fetch_add(acc.parse_errors - parse0, Ordering::Relaxed);
    }
    result
}

fn on_message(conn: &mut Conn, payload: &[u8], now: u64, ctx: &ThreadCtx, acc: &mut Acc) {
    let t = match scan(payload) {
        Ok(Msg::Tick(t)) => t,
        Ok(Msg::Control(b"lagging")) => {
            acc.lagging += 1;
            return;
        }
        Ok(Msg::Control(b"error")) => {
            acc.server_errors += 1;
            acc.sample(format!(
                "server error: {}",
                String::from_utf8_lossy(payload)
            ));
            return;
        }
        Ok(Msg::Control(_)) => return,
        Err(e) => {
            acc.parse_errors += 1;
            let e: ScanError = e;
            acc.sample(format!(
                "{e}: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ));
            return;
        }
    };
    let slot = ctx
        .cfg
        .plan
        .index
        .get(t.sym)
        .and_then(|sym| conn.keys.binary_search_by_key(sym, |k| k.0).ok());
    let Some(slot) = slot else {
        // A `*` subscriber gets snapshots of every symbol the server has
        // seen, including other runs' symbols: that is not a fault.
        if t.snap {
            let counts = if conn.spec.slow {
                &mut acc.slow
            } else {
                &mut acc.fast
            };
            counts.snapshots += 1;
        } else {
            acc.unexpected += 1;
        }
        return;
    };
    let last = &mut conn.keys[slot].1[t.channel];
    let counts = if conn.spec.slow {
        &mut acc.slow
    } else {
        &mut acc.fast
    };
    if t.snap {
        counts.snapshots += 1;
        *last = (*last).max(t.seq);
        return;
    }
    counts.delivered += 1;
    if *last != 0 {
        if t.seq > *last + 1 {
            counts.gap_events += 1;
            counts.gap_ticks += t.seq - *last - 1;
        } else if t.seq <= *last {
            counts.reorders += 1;
        }
    }
    *last = (*last).max(t.seq);
    let from = ctx.record_from.get();
    if from == 0 || t.ts < from {
        return;
    }
    if now < t.rx {
        acc.clock_skew += 1;
    }
    let lat = now.saturating_sub(t.rx).max(1);
    if conn.spec.slow {
        acc.slow_rx.saturating_record(lat);
        return;
    }
    let lat_intended = now.saturating_sub(t.ts).max(1);
    acc.rx.saturating_record(lat);
    acc.intended.saturating_record(lat_intended);
    acc.interval_rx.saturating_record(lat);
    acc.interval_intended.saturating_record(lat_intended);
    let (s0, s1) = ctx.stall.get();
    if s0 != 0 {
        let p = if now < s0 {
            0
        } else if now < s1 {
            1
        } else {
            2
        };
        acc.phases[p].saturating_record(lat);
    }
}
