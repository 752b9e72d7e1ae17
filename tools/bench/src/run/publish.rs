//! From the first tick to the last delivery: the publisher's schedule
//! watched, then the drain and the closing samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::intervals::Intervals;
use super::sample::{CpuSample, sample_cpu, total_rss};
use super::setup::Clients;
use super::{Memory, Notes, RunSpec, join_bounded, join_one};
use crate::BenchError;
use crate::args::BenchArgs;
use crate::clients::{Acc, Live, Phase};
use crate::procstat;
use crate::progress::Progress;
use crate::publisher::{self, PublishCounters, PublishOutcome, PublisherConfig};
use crate::report::{mb, ns, thousands};
use crate::stall::StallSampler;
use crate::target::Running;
use crate::tickwire_lib::wall_clock_ns;
use crate::writes::{WriteCounter, WritesReport};

/// The publisher side of a run, from [`publish`] to [`drain`].
pub(super) struct Publishing {
    pub(super) counters: Arc<PublishCounters>,
    /// Asks the publisher to stop early (the run is over anyway).
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handle: JoinHandle<PublishOutcome>,
    /// CPU when publishing started: the window every rate is taken over.
    pub(super) cpu0: CpuSample,
    pub(super) start: SystemTime,
    /// Latencies by second since publishing started.
    pub(super) intervals: Intervals,
    /// How the target ended, if one of its processes did during the run.
    pub(super) server_gone: Option<String>,
    /// The server's writes, counted over the same window as its CPU.
    pub(super) writes: WriteCounter,
}

/// What [`drain`] hands to the report: everything has stopped.
pub(super) struct Drained {
    /// The clients' live counters: how many connections were lost, and why
    /// the first one was.
    pub(super) live: Arc<Live>,
    /// Each client thread's figures (those that stopped in time).
    pub(super) accs: Vec<Acc>,
    /// `None` when the publisher thread did not stop in time.
    pub(super) publisher: Option<PublishOutcome>,
    pub(super) counters: Arc<PublishCounters>,
    pub(super) cpu0: CpuSample,
    pub(super) cpu1: CpuSample,
    pub(super) start: SystemTime,
    pub(super) intervals: Intervals,
    /// Whether the runner started the target's processes.
    pub(super) spawned: bool,
    /// Deliveries per write over the window.
    pub(super) writes: WritesReport,
}

/// Publish: tells the clients the schedule's start, starts the publisher
/// for `--seconds`, and watches until it is done: the target's memory
/// peak, its processes, the clients' connections, a bound on the time, and
/// the progress line.
pub(super) fn publish(
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
            priority: args.publisher_priority,
            spin_ns: args.publisher_spin_us * 1000,
        },
        counters.clone(),
        stop.clone(),
    )
    .map_err(BenchError::Thread)?;

    let mut intervals = Intervals::default();
    memory.peak = memory.after_connect;
    let stall_window = (args.slow > 0).then(|| {
        let at = start_wall + (clients.stall_at * 1e9) as u64;
        (at, at + (args.stall * 1e9) as u64)
    });
    let mut stall = StallSampler::new(stall_window, running.publish.addr);
    let total = spec.plan.clients.len() as u64;
    let mut last_delivered = 0u64;
    let mut last_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds + 15.0);
    let mut server_gone = None;
    loop {
        intervals.absorb(&clients.intervals);
        let rss = total_rss(&pids);
        if let Some(r) = rss {
            memory.peak = memory.peak.max(r);
        }
        stall.observe(wall_clock_ns(), rss);
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
    memory.stall = stall.memory;
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
pub(super) fn drain(
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
    if memory.stall.rss_stall_start.is_some() {
        memory.stall.rss_after_drain = Some(memory.end);
    }
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
