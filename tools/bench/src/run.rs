//! One run: one target, one load point, one round, in six phases.
//!
//! 1. [`probe`]: one connection to each server, to fail early and clearly.
//! 2. [`connect`]: every subscriber connected and subscribed before the
//!    first tick, so that "expected" is exact.
//! 3. [`settle`]: gateways subscribed on the bus, memory measured.
//! 4. [`publish`]: the publisher's schedule, watched and shown.
//! 5. [`drain`]: what is in flight arrives, then everything stops.
//! 6. [`summary::report`]: the figures, warnings and problems of the run.
//!
//! Problems (the run is partial) and warnings (figures to read with care)
//! are gathered over the phases in [`Notes`].

mod intervals;
mod sample;
mod summary;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use self::intervals::Intervals;
use self::sample::{CpuSample, sample_cpu, total_rss};
use crate::BenchError;
use crate::args::{BenchArgs, Load};
use crate::clients::{self, Acc, ClientsConfig, IntervalMsg, Live, Phase};
use crate::pinning::Pinning;
use crate::plan::{self, Plan};
use crate::procstat;
use crate::progress::Progress;
use crate::publisher::{self, PublishCounters, PublishOutcome, PublisherConfig, Source};
use crate::report::{RunData, mb, ns, thousands};
use crate::resume::ResumePlan;
use crate::target::{self, Running, Target};
use crate::tickwire_lib::wall_clock_ns;
use crate::writes::{WriteCounter, WritesReport};

/// What a run is: the flags, and this run's target, load and round.
pub(crate) struct RunSpec<'a> {
    pub args: &'a BenchArgs,
    /// `--pin-server`/`--pin-runner` (the runner is already pinned).
    pub pinning: &'a Pinning,
    /// The target's position in `--compare` (its letter), and the target.
    pub target_index: usize,
    pub target: &'a Target,
    pub plan: &'a Arc<Plan>,
    pub source: &'a Source,
    pub load: &'a Load,
    pub round: usize,
    /// How the run is named in progress lines and tables.
    pub label: &'a str,
}

/// What the phases found that the report must say.
#[derive(Default)]
struct Notes {
    /// The run is partial: its figures are not to be trusted.
    problems: Vec<String>,
    /// The figures stand, but need reading with this in mind.
    warnings: Vec<String>,
}

/// The target's resident memory, summed over its processes, at the points
/// the report shows.
#[derive(Default)]
struct Memory {
    before_connect: u64,
    after_connect: u64,
    peak: u64,
    end: u64,
    /// Each process's at the end, in [`Running::procs`] order.
    end_per_process: Vec<u64>,
}

/// The subscriber side of a run, from [`connect`] to [`drain`].
struct Clients {
    /// Counters the client threads update as they go.
    live: Arc<Live>,
    /// Tells every connection where the run is.
    phase: watch::Sender<Phase>,
    /// One latency histogram per thread per second, for the interval log.
    intervals: mpsc::Receiver<IntervalMsg>,
    handles: Vec<JoinHandle<Acc>>,
    threads: usize,
    /// Seconds after publishing starts when slow clients stall.
    stall_at: f64,
    connect_seconds: f64,
}

/// The publisher side of a run, from [`publish`] to [`drain`].
struct Publishing {
    counters: Arc<PublishCounters>,
    /// Asks the publisher to stop early (the run is over anyway).
    stop: Arc<AtomicBool>,
    handle: JoinHandle<PublishOutcome>,
    /// CPU when publishing started: the window every rate is taken over.
    cpu0: CpuSample,
    start: SystemTime,
    /// Latencies by second since publishing started.
    intervals: Intervals,
    /// How the target ended, if one of its processes did during the run.
    server_gone: Option<String>,
    /// The server's writes, counted over the same window as its CPU.
    writes: WriteCounter,
}

/// What [`drain`] hands to the report: everything has stopped.
struct Drained {
    /// The clients' live counters: how many connections were lost, and why
    /// the first one was.
    live: Arc<Live>,
    /// Each client thread's figures (those that stopped in time).
    accs: Vec<Acc>,
    /// `None` when the publisher thread did not stop in time.
    publisher: Option<PublishOutcome>,
    counters: Arc<PublishCounters>,
    cpu0: CpuSample,
    cpu1: CpuSample,
    start: SystemTime,
    intervals: Intervals,
    /// Whether the runner started the target's processes.
    spawned: bool,
    /// Deliveries per write over the window.
    writes: WritesReport,
}

/// Runs the six phases against one target. What the runner started is
/// stopped whatever happens.
pub(crate) fn run_once(spec: &RunSpec) -> Result<RunData, BenchError> {
    let args = spec.args;
    let mut running = target::start(spec.target, &args.server_pid, args.server_bin.as_deref())?;
    let server = match probe(&running) {
        Ok(name) => name,
        Err(e) => {
            running.stop();
            return Err(e);
        }
    };
    // Serving now: every thread the server will fan out on exists.
    if let Err(e) = spec.pinning.pin_server(&running.pids()) {
        running.stop();
        return Err(BenchError::Thread(e));
    }
    let mut progress = Progress::new(args.quiet);
    let mut notes = Notes::default();
    let mut memory = Memory {
        before_connect: total_rss(&running.pids()).unwrap_or(0),
        ..Memory::default()
    };
    let clients = connect(spec, &mut running, &mut progress)?;
    memory.after_connect = settle(&running, spec.plan, &mut notes);
    let publishing = match publish(
        spec,
        &mut running,
        &clients,
        &mut memory,
        &mut progress,
        &mut notes,
    ) {
        Ok(p) => p,
        Err(e) => {
            progress.done();
            let _ = clients.phase.send(Phase::Stop);
            join_bounded(clients.handles, Duration::from_secs(10));
            running.stop();
            return Err(e);
        }
    };
    let pids = running.pids();
    let roles: Vec<String> = running.procs.iter().map(|p| p.role.clone()).collect();
    let threads = clients.threads;
    let (stall_at, connect_seconds) = (clients.stall_at, clients.connect_seconds);
    let drained = drain(
        args,
        &mut running,
        clients,
        publishing,
        &mut memory,
        &mut progress,
        &mut notes,
    );
    summary::report(
        spec,
        summary::Context {
            server,
            url: running.publish.url.clone(),
            subscribe_urls: running.subscribe.iter().map(|e| e.url.clone()).collect(),
            pids,
            roles,
            threads,
            stall_at,
            connect_seconds,
        },
        drained,
        memory,
        notes,
    )
}

/// Probe: connects once to every distinct server of the target and reads
/// its `hello`, so that a dead address or a server speaking another
/// protocol is one clear error before thousands of clients try. Returns
/// the servers' names and versions, from their `hello`s.
fn probe(running: &Running) -> Result<String, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Thread)?;
    let mut names: Vec<String> = Vec::new();
    let mut probed = Vec::new();
    for ep in running.subscribe.iter().chain([&running.publish]) {
        if probed.contains(&ep.addr) {
            continue;
        }
        probed.push(ep.addr);
        let name = rt
            .block_on(clients::probe(ep, Duration::from_secs(5)))
            .map_err(|source| BenchError::Probe {
                url: ep.url.clone(),
                source,
            })?;
        if !names.contains(&name) {
            names.push(name)
        }
    }
    Ok(names.join(", "))
}

/// Connect: starts the client threads and waits until every client has
/// connected and subscribed (or failed), before the first tick, so that
/// the ticks each client should receive are known exactly. Any failure
/// ends the run: a partly connected load measures something else. On
/// error, the clients and the target are stopped.
fn connect(
    spec: &RunSpec,
    running: &mut Running,
    progress: &mut Progress,
) -> Result<Clients, BenchError> {
    let args = spec.args;
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let stall_at = args.stall_at.unwrap_or(args.seconds / 4.0);
    let cfg = Arc::new(ClientsConfig {
        endpoints: running.subscribe.clone(),
        plan: spec.plan.clone(),
        threads,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        stall: (args.slow > 0).then(|| {
            (
                Duration::from_secs_f64(stall_at),
                Duration::from_secs_f64(args.stall),
            )
        }),
        warmup: Duration::from_secs_f64(args.warmup()),
        resume: ResumePlan::new(&args.resume, args.seconds),
    });
    let live = Arc::new(Live::default());
    let (phase, phase_rx) = watch::channel(Phase::Connecting);
    let (itx, intervals) = mpsc::channel::<IntervalMsg>();
    let handles = match clients::spawn(cfg, live.clone(), phase_rx, itx) {
        Ok(h) => h,
        Err(e) => {
            running.stop();
            return Err(BenchError::Thread(e));
        }
    };
    let total = spec.plan.clients.len();
    let mut problems: Vec<String> = Vec::new();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.connect_timeout + 5.0);
    loop {
        let (ok, failed) = (
            live.connected.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
        );
        if ok + failed >= total as u64 {
            break;
        }
        if let Some(st) = running.exited() {
            problems.push(format!("the server exited while clients connected ({st})"));
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "only {ok} of {total} clients connected within {} s",
                args.connect_timeout
            ));
            break;
        }
        if progress.due() {
            progress.show(&format!(
                "{}: connecting {}/{}",
                spec.label,
                thousands(ok),
                thousands(total as u64)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    let failed = live.failed.load(Ordering::Relaxed);
    if failed > 0 || !problems.is_empty() {
        progress.done();
        let _ = phase.send(Phase::Stop);
        join_bounded(handles, Duration::from_secs(5));
        running.stop();
        let first = live
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| problems.join("; "));
        return Err(BenchError::Connect {
            url: running.publish.url.clone(),
            failed: failed.max(1),
            total,
            first,
        });
    }
    Ok(Clients {
        live,
        phase,
        intervals,
        handles,
        threads,
        stall_at,
        connect_seconds,
    })
}

/// Settle: waits for every gateway's bus subscriptions to cover its
/// clients' keys (ticks published before that are legitimately not
/// delivered), then lets the server finish its snapshots and buffers
/// before its memory is measured. Returns the target's RSS.
fn settle(running: &Running, plan: &Plan, notes: &mut Notes) -> u64 {
    if let Some(w) = wait_for_gateways(running, plan, Duration::from_secs(10)) {
        notes.warnings.push(w);
    }
    std::thread::sleep(Duration::from_millis(200));
    total_rss(&running.pids()).unwrap_or(0)
}

/// Waits until every subscribe endpoint that is a bus gateway (its
/// `/metrics` says `tickwire_bus_connected 1`; the publish endpoint never
/// counts as one) is subscribed on the bus to as many subjects as its
/// clients want: one per key, or one per channel when a client is on `*`.
/// Returns a warning when one is not within `limit`. A server without
/// `/metrics`, or not on a bus, is not waited for.
fn wait_for_gateways(running: &Running, plan: &Plan, limit: Duration) -> Option<String> {
    let n = running.subscribe.len();
    let channels = i64::from(plan.channels.count_ones());
    let deadline = Instant::now() + limit;
    for (i, ep) in running.subscribe.iter().enumerate() {
        if ep.addr == running.publish.addr {
            continue;
        }
        let mine: Vec<&plan::ClientSpec> = plan
            .clients
            .iter()
            .filter(|c| clients::endpoint_index(c, n) == i)
            .collect();
        let want = if mine.iter().any(|c| c.all) {
            channels
        } else {
            let symbols: HashSet<u32> = mine
                .iter()
                .flat_map(|c| c.symbols.iter().copied())
                .collect();
            symbols.len() as i64 * channels
        };
        if want == 0 {
            continue;
        }
        loop {
            match target::fetch_metrics(ep.addr, Duration::from_secs(2)) {
                Ok(m) if m.get("tickwire_bus_connected") == Some(&1.0) => {
                    let have = m.get("tickwire_bus_subjects").copied().unwrap_or(0.0) as i64;
                    if have >= want {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Some(format!(
                            "{}: subscribed on the bus to {have} of the {want} subjects its clients want after {} s: ticks published before the rest were subscribed are missing for that reason",
                            ep.url,
                            limit.as_secs()
                        ));
                    }
                }
                _ => break,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    None
}

/// Publish: tells the clients the schedule's start, starts the publisher
/// for `--seconds`, and watches until it is done: the target's memory
/// peak, its processes, the clients' connections, a bound on the time, and
/// the progress line.
fn publish(
    spec: &RunSpec,
    running: &mut Running,
    clients: &Clients,
    memory: &mut Memory,
    progress: &mut Progress,
    notes: &mut Notes,
) -> Result<Publishing, BenchError> {
    let args = spec.args;
    let pids = running.pids();
    let live = &clients.live;
    let writes = WriteCounter::start(running, args.count_syscalls);
    let cpu0 = sample_cpu(live, &pids);
    let start_wall = wall_clock_ns();
    let start = SystemTime::now();
    let _ = clients.phase.send(Phase::Publishing {
        start_wall_ns: start_wall,
    });
    let counters = Arc::new(PublishCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = publisher::spawn(
        PublisherConfig {
            endpoint: running.publish.clone(),
            plan: spec.plan.clone(),
            source: spec.source.clone(),
            duration: Duration::from_secs_f64(args.seconds),
            seed: args.seed,
        },
        counters.clone(),
        stop.clone(),
    )
    .map_err(BenchError::Thread)?;

    let mut intervals = Intervals::default();
    memory.peak = memory.after_connect;
    let total = spec.plan.clients.len() as u64;
    let mut last_delivered = 0u64;
    let mut last_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds + 15.0);
    let mut server_gone = None;
    loop {
        intervals.absorb(&clients.intervals);
        if let Some(r) = total_rss(&pids) {
            memory.peak = memory.peak.max(r);
        }
        if let Some(st) = running.exited() {
            server_gone = Some(st);
            break;
        }
        if counters.done.load(Ordering::Acquire) {
            break;
        }
        if live.lost.load(Ordering::Relaxed) >= total {
            notes
                .problems
                .push("every client connection was lost".into());
            break;
        }
        if Instant::now() > deadline {
            notes
                .problems
                .push("publishing did not finish in time".into());
            break;
        }
        if progress.due() {
            let d = live.delivered_fast.load(Ordering::Relaxed)
                + live.delivered_slow.load(Ordering::Relaxed);
            let rate = (d - last_delivered) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
            last_delivered = d;
            last_at = Instant::now();
            let p99 = intervals
                .last_p99(clients.threads)
                .map_or_else(|| "-".into(), ns);
            let now: Option<f64> = pids.iter().map(|&p| procstat::process_cpu(p)).sum();
            let cpu = match (now.filter(|_| !pids.is_empty()), cpu0.server_total()) {
                (Some(now), Some(then)) => format!(
                    " · server {:.0}% CPU, RSS {}",
                    100.0 * (now - then) / cpu0.at.elapsed().as_secs_f64().max(1e-3),
                    mb(memory.peak)
                ),
                _ => String::new(),
            };
            progress.show(&format!(
                "{}: {:.0}/{} s · published {} · delivered {}/s · p99 {p99} · gaps {} · lost {}{cpu}",
                spec.label,
                cpu0.at.elapsed().as_secs_f64(),
                args.seconds,
                thousands(counters.published.load(Ordering::Relaxed)),
                thousands(rate as u64),
                thousands(live.gap_events.load(Ordering::Relaxed)),
                live.lost.load(Ordering::Relaxed),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Publishing {
        counters,
        stop,
        handle,
        cpu0,
        start,
        intervals,
        server_gone,
        writes,
    })
}

/// Drain: waits (at most `--drain`) for the ticks still in flight, and
/// stops early once everything expected has arrived or nothing has for a
/// second. Then takes the closing CPU and memory samples and stops the
/// clients, the publisher and the target, each within a bound, so that a
/// hung thread or server cannot hang the runner.
fn drain(
    args: &BenchArgs,
    running: &mut Running,
    clients: Clients,
    publishing: Publishing,
    memory: &mut Memory,
    progress: &mut Progress,
    notes: &mut Notes,
) -> Drained {
    let Publishing {
        counters,
        stop,
        handle,
        cpu0,
        start,
        mut intervals,
        mut server_gone,
        writes,
    } = publishing;
    let live = &clients.live;
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    let mut last = (u64::MAX, Instant::now());
    while server_gone.is_none() && Instant::now() < deadline {
        let fast = live.delivered_fast.load(Ordering::Relaxed);
        let all = fast + live.delivered_slow.load(Ordering::Relaxed);
        let want_fast = counters.expected_fast.load(Ordering::Relaxed);
        let want_all = want_fast + counters.expected_slow.load(Ordering::Relaxed);
        if all >= want_all || (fast >= want_fast && args.slow == 0) {
            break;
        }
        if all != last.0 {
            last = (all, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(1000) {
            // Nothing arrived for a second: what is missing is not coming.
            break;
        }
        if let Some(st) = running.exited() {
            server_gone = Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids = running.pids();
    let cpu1 = sample_cpu(live, &pids);
    let writes = writes.finish(
        live.delivered_fast.load(Ordering::Relaxed) + live.delivered_slow.load(Ordering::Relaxed),
    );
    memory.end_per_process = pids
        .iter()
        .map(|&p| procstat::process_rss(p).unwrap_or(0))
        .collect();
    memory.end = memory.end_per_process.iter().sum();
    memory.peak = memory.peak.max(memory.end);
    progress.done();

    let _ = clients.phase.send(Phase::Stop);
    stop.store(true, Ordering::Relaxed);
    let accs = join_bounded(clients.handles, Duration::from_secs(10));
    if accs.len() < clients.threads {
        notes.problems.push(format!(
            "{} client threads did not stop in time",
            clients.threads - accs.len()
        ));
    }
    let publisher = join_one(handle, Duration::from_secs(15));
    intervals.absorb(&clients.intervals);
    if server_gone.is_none() {
        server_gone = running.exited();
    }
    if let Some(st) = &server_gone {
        notes
            .problems
            .push(format!("the server exited during the run ({st})"));
    }
    let spawned = running.spawned();
    if let Some(note) = running.stop() {
        notes.warnings.push(note);
    }
    Drained {
        live: clients.live,
        accs,
        publisher,
        counters,
        cpu0,
        cpu1,
        start,
        intervals,
        spawned,
        writes,
    }
}

/// Joins threads, giving up on those still running after `limit` (they are
/// left behind rather than hanging the runner).
fn join_bounded<T>(handles: Vec<JoinHandle<T>>, limit: Duration) -> Vec<T> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished()
            && let Ok(v) = h.join()
        {
            out.push(v);
        }
    }
    out
}

fn join_one<T>(h: JoinHandle<T>, limit: Duration) -> Option<T> {
    join_bounded(vec![h], limit).pop()
}
