//! Before the first tick: the target probed, every subscriber connected
//! and subscribed, a deployment's gateways subscribed on the bus.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::sample::total_rss;
use super::{Notes, RunSpec, join_bounded};
use crate::BenchError;
use crate::binance::Protocol;
use crate::clients::{self, Acc, ClientsConfig, IntervalMsg, Live, Phase};
use crate::plan::{self, Plan};
use crate::progress::Progress;
use crate::report::thousands;
use crate::resume::ResumePlan;
use crate::target::{self, Running};

/// The subscriber side of a run, from [`connect`] to [`super::publish::drain`].
pub(super) struct Clients {
    /// Counters the client threads update as they go.
    pub(super) live: Arc<Live>,
    /// Tells every connection where the run is.
    pub(super) phase: watch::Sender<Phase>,
    /// One latency histogram per thread per second, for the interval log.
    pub(super) intervals: mpsc::Receiver<IntervalMsg>,
    pub(super) handles: Vec<JoinHandle<Acc>>,
    pub(super) threads: usize,
    /// Seconds after publishing starts when slow clients stall.
    pub(super) stall_at: f64,
    pub(super) connect_seconds: f64,
}

/// Probe: connects once to every distinct server of the target and reads
/// its `hello`, so that a dead address or a server speaking another
/// protocol is one clear error before thousands of clients try. Returns
/// the servers' names and versions, from their `hello`s.
pub(super) fn probe(running: &Running) -> Result<String, BenchError> {
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
        // Subscribers speak the target's protocol; the publisher tickwire's.
        let protocol = if std::ptr::eq(ep, &running.publish) {
            Protocol::Tickwire
        } else {
            running.protocol
        };
        let name = rt
            .block_on(clients::probe(ep, protocol, Duration::from_secs(5)))
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
pub(super) fn connect(
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
        protocol: running.protocol,
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
        stall_control: spec.stall_control,
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
pub(super) fn settle(running: &Running, plan: &Plan, notes: &mut Notes) -> u64 {
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
pub(super) fn wait_for_gateways(running: &Running, plan: &Plan, limit: Duration) -> Option<String> {
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
