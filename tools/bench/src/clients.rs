//! Subscriber connections: thousands of them on a few threads, each thread a
//! single-threaded tokio runtime with one cheap task per connection.
//!
//! A task reads whatever its socket holds into its buffer, walks the frames
//! in place, and for every tick checks `seq` against the last one of its key
//! and records latency into the thread's histograms. Nothing is shared
//! between threads on the hot path except a few relaxed counters; the
//! histograms are merged once at the end (and once a second for the
//! interval log and the progress line).

mod acc;
mod conn;
mod handshake;
mod reconnect;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

pub use self::acc::{Acc, Counts, IntervalMsg, new_histogram};
pub use self::handshake::probe;
pub use self::reconnect::ReconnectAcc;
use super::plan::{ClientSpec, Plan};
use super::ws::{Endpoint, WsError};

/// Handshakes in flight per thread: enough to connect 10,000 clients in a
/// few seconds without overflowing the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 128;
/// Initial read buffer per connection; it grows when a stalled client
/// resumes to a big backlog.
const READ_BUFFER: usize = 8 * 1024;

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
    /// What they speak there.
    pub protocol: crate::binance::Protocol,
    pub plan: Arc<Plan>,
    pub threads: usize,
    pub connect_timeout: Duration,
    /// Slow clients stop reading `.0` after publishing starts, for `.1`.
    pub stall: Option<(Duration, Duration)>,
    /// A `--stall-control` run: the stall window is kept (the fast
    /// clients' phases are timed against it) but the slow clients read
    /// throughout.
    pub stall_control: bool,
    /// Ticks intended before `start + warmup` are counted but not timed.
    pub warmup: Duration,
    /// Reconnecting clients and the slow clients' policy (`crate::resume`).
    pub resume: crate::resume::ResumePlan,
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
            tasks.push(tokio::task::spawn_local(conn::client(
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
    let mut acc = match Rc::try_unwrap(ctx) {
        Ok(ctx) => ctx.acc.into_inner(),
        // Every task has ended, so no other reference is left; be safe anyway.
        Err(ctx) => std::mem::replace(&mut *ctx.acc.borrow_mut(), Acc::empty()),
    };
    // Ticks a connection read after the ticker's last hand-off (or with
    // no ticker at all) still count in the totals.
    acc.take_interval();
    acc
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
                let (rx, intended) = ctx.acc.borrow_mut().take_interval();
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
                let (rx, intended) = ctx.acc.borrow_mut().take_interval();
                let _ = tx.send(IntervalMsg { index, rx, intended });
                index += 1;
            }
        }
    }
}
