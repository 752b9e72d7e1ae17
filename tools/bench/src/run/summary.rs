//! The report phase: the clients' and the publisher's figures merged into
//! one [`RunReport`], with every warning and problem the figures show.

use std::sync::atomic::Ordering;

use super::{Drained, Memory, Notes, RunSpec};
use crate::BenchError;
use crate::clients::{Acc, Counts};
use crate::publisher::PublishOutcome;
use crate::report::{
    GroupReport, IntervalSummary, LoadReport, Percentiles, ProcessResources, PublishReport,
    RunData, RunReport, RunnerResources, ServerResources, SlowReport, ns, thousands,
};
use crate::tickwire_lib::Speed;

/// What the earlier phases learned about the target and the clients.
pub(super) struct Context {
    /// The servers' names and versions, from the probe.
    pub server: String,
    pub url: String,
    pub subscribe_urls: Vec<String>,
    /// The target's processes and their roles, in the same order.
    pub pids: Vec<u32>,
    pub roles: Vec<String>,
    pub threads: usize,
    pub stall_at: f64,
    pub connect_seconds: f64,
}

/// Report: merges what every client thread measured with what the
/// publisher sent, checks the figures (missing ticks, a saturated machine,
/// a late publisher, clocks that disagree, …) and builds the run's report.
/// Fails only when the publisher never returned its outcome.
pub(super) fn report(
    spec: &RunSpec,
    ctx: Context,
    mut drained: Drained,
    memory: Memory,
    mut notes: Notes,
) -> Result<RunData, BenchError> {
    let args = spec.args;
    let mut acc = Acc::merge_all(std::mem::take(&mut drained.accs));
    let (cpu0, cpu1) = (&drained.cpu0, &drained.cpu1);
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-6);
    let Some(pub_out) = drained.publisher.take() else {
        notes
            .problems
            .push("the publisher thread did not stop in time".into());
        return Err(BenchError::Usage(notes.problems.join("; ")));
    };
    if let Some(f) = &pub_out.failure {
        notes.problems.push(f.clone());
    }
    if let Some(l) = drained
        .live
        .first_loss
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        let lost = drained.live.lost.load(Ordering::Relaxed);
        let msg = format!("{lost} connections ended before the run did; first: {l}");
        // Slow clients being evicted is the expected outcome of a stall.
        if acc.ends.is_empty() {
            notes.warnings.push(msg);
        } else {
            notes.problems.push(msg);
        }
    }
    let publish_seconds = pub_out.seconds.max(1e-6);
    let fast_clients = spec.plan.clients.iter().filter(|c| !c.slow).count();
    let mut fast = group(
        &acc.fast,
        pub_out.expected_fast,
        fast_clients,
        publish_seconds,
    );
    fast.ended_early = std::mem::take(&mut acc.ends);
    let delivered_all = acc.fast.delivered + acc.slow.delivered;
    let (server_resources, runner) = resources(
        spec,
        &ctx,
        &drained,
        &memory,
        delivered_all,
        window,
        &mut notes,
    );
    check_deliveries(spec, &pub_out, &acc, &mut notes);
    let slow = (args.slow > 0).then(|| {
        let mut g = group(&acc.slow, pub_out.expected_slow, args.slow, publish_seconds);
        g.ended_early = std::mem::take(&mut acc.slow_ends);
        SlowReport {
            group: g,
            latency: Percentiles::of(&acc.slow_rx),
            lagging_notices: acc.lagging,
            fast_before: Percentiles::of(&acc.phases[0]),
            fast_during: Percentiles::of(&acc.phases[1]),
            fast_after: Percentiles::of(&acc.phases[2]),
            memory: memory.stall.clone(),
        }
    });
    let reconnect = crate::resume::ReconnectReport::build(
        &crate::resume::ResumePlan::new(&args.resume, args.seconds),
        &acc.reconnect,
        &fast,
        &mut notes.problems,
    );
    let interval_hists = std::mem::take(&mut drained.intervals).into_rx();
    let (min_rx, min_intended) = (acc.rx.min(), acc.intended.min());
    if !acc.rx.is_empty() && min_rx > min_intended.saturating_add(50_000) {
        notes.warnings.push(format!(
            "the server's rx stamps run at least {} behind this machine's clock (the fastest tick took {} from rx but {} from its intended send time): compare servers on latency from intended send time",
            ns(min_rx - min_intended),
            ns(min_rx),
            ns(min_intended)
        ));
    }
    let report = RunReport {
        label: spec.label.to_owned(),
        target: spec.target.describe(),
        target_index: spec.target_index,
        url: ctx.url.clone(),
        subscribe_urls: ctx.subscribe_urls.clone(),
        server: ctx.server.clone(),
        spawned: drained.spawned,
        round: spec.round,
        stall_control: spec.stall_control,
        point: spec.load.point.clone(),
        complete: notes.problems.is_empty(),
        problems: notes.problems,
        warnings: notes.warnings,
        load: load_report(spec, &ctx),
        connect_seconds: ctx.connect_seconds,
        window_seconds: window,
        publish: PublishReport {
            published: pub_out.published,
            seconds: pub_out.seconds,
            ticks_per_sec: pub_out.published as f64 / publish_seconds,
            lateness_p99_ns: pub_out.lateness.value_at_quantile(0.99),
            lateness_max_ns: pub_out.lateness.max(),
            pacing: pub_out.pacing.clone(),
            server_errors: drained.counters.server_errors.load(Ordering::Relaxed),
            server_error_samples: pub_out.server_error_samples,
        },
        latency: Percentiles::of(&acc.rx),
        latency_intended: Percentiles::of(&acc.intended),
        fast,
        slow,
        reconnect,
        delivered_per_sec: delivered_all as f64 / publish_seconds,
        parse_errors: acc.parse_errors,
        unexpected_ticks: acc.unexpected,
        clock_skew_ticks: acc.clock_skew,
        subscriber_server_errors: acc.server_errors,
        samples: acc.samples.clone(),
        server_resources,
        runner,
        writes: drained.writes.clone(),
        pinning: spec.pinning.is_set().then(|| spec.pinning.clone()),
        intervals: interval_summaries(&interval_hists),
    };
    Ok(RunData {
        report,
        rx: acc.rx,
        intended: acc.intended,
        start: drained.start,
        intervals: interval_hists,
    })
}

/// The target's and the runner's CPU and memory over the window, with a
/// warning when the runner, the machine or other processes may have
/// shaped the figures.
fn resources(
    spec: &RunSpec,
    ctx: &Context,
    drained: &Drained,
    memory: &Memory,
    delivered_all: u64,
    window: f64,
    notes: &mut Notes,
) -> (Option<ServerResources>, RunnerResources) {
    let (cpu0, cpu1) = (&drained.cpu0, &drained.cpu1);
    let pids = &ctx.pids;
    let per_million = |cpu: f64| {
        if delivered_all > 0 {
            cpu / (delivered_all as f64 / 1e6)
        } else {
            0.0
        }
    };
    let server_resources = match (cpu0.server_total(), cpu1.server_total()) {
        (Some(a), Some(b)) => Some(ServerResources {
            pids: pids.clone(),
            processes: if pids.len() > 1 {
                (0..pids.len())
                    .map(|i| {
                        let cpu = cpu1.server[i].unwrap_or(0.0) - cpu0.server[i].unwrap_or(0.0);
                        ProcessResources {
                            role: ctx.roles[i].clone(),
                            pid: pids[i],
                            cpu_seconds: cpu,
                            cpu_seconds_per_million: per_million(cpu),
                            rss_end: memory.end_per_process[i],
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            },
            cpu_seconds: b - a,
            cpu_cores: (b - a) / window,
            cpu_seconds_per_million: per_million(b - a),
            rss_before_connect: memory.before_connect,
            rss_after_connect: memory.after_connect,
            rss_per_connection: crate::report::rss_per_connection(
                memory.after_connect.saturating_sub(memory.before_connect),
                spec.plan.clients.len(),
            ),
            rss_start: memory.after_connect,
            rss_end: memory.end,
            rss_peak: memory.peak,
        }),
        _ => None,
    };
    let runner_cpu = cpu1.runner - cpu0.runner;
    let busiest = cpu1
        .threads
        .iter()
        .zip(&cpu0.threads)
        .map(|(b, a)| (b - a) / window)
        .fold(0.0, f64::max);
    // Was the runner the bottleneck?
    if busiest > 0.85 {
        notes.warnings.push(format!(
            "a client thread was on a CPU {:.0}% of the time: the runner may be the bottleneck and its queueing is in the latency (try --threads, fewer clients, or a bigger machine)",
            busiest * 100.0
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let used = runner_cpu + server_resources.as_ref().map_or(0.0, |s| s.cpu_seconds);
    let (system, interrupts, others) = match (cpu0.system, cpu1.system) {
        (Some(a), Some(b)) => {
            let process = (b.process - a.process) / window;
            let irq = (b.interrupts - a.interrupts) / window;
            (process + irq, irq, (process - used / window).max(0.0))
        }
        _ => (used / window, 0.0, 0.0),
    };
    if system > 0.9 * cores {
        notes.warnings.push(format!(
            "the machine was saturated ({system:.2} of {cores} cores busy: server {:.2}, runner {:.2}, interrupts (loopback TCP) {interrupts:.2}, other processes {others:.2}): everything waited for CPU, so the figures measure this machine as much as the server",
            server_resources.as_ref().map_or(0.0, |s| s.cpu_cores),
            runner_cpu / window
        ));
    }
    // Other engineers' builds or tests on a shared machine take CPU from
    // both sides; say how much.
    if others > 0.25 {
        notes.warnings.push(format!(
            "other processes kept {others:.2} of {cores} cores busy during the run: the figures include waiting for CPU"
        ));
    }
    let runner = RunnerResources {
        cpu_seconds: runner_cpu,
        other_processes_cores: others,
        interrupt_cores: interrupts,
        cpu_seconds_per_million: per_million(runner_cpu),
        busiest_client_thread: busiest,
    };
    (server_resources, runner)
}

/// Warnings and problems about the ticks themselves: a late publisher,
/// clocks that disagree, ticks that never arrived or that nobody wanted.
fn check_deliveries(spec: &RunSpec, pub_out: &PublishOutcome, acc: &Acc, notes: &mut Notes) {
    if !pub_out.pacing.fallback.is_empty() {
        notes.warnings.push(format!(
            "the publisher thread runs under {}: {}",
            pub_out.pacing.scheduling, pub_out.pacing.fallback
        ));
    }
    let late_p99 = pub_out.lateness.value_at_quantile(0.99);
    if late_p99 > 1_000_000 {
        notes.warnings.push(format!(
            "the publisher ran up to {} late (p99) against its schedule: latency from intended send time includes that (server backpressure or a busy machine)",
            ns(late_p99)
        ));
    }
    if acc.clock_skew > 0 {
        notes.warnings.push(format!(
            "{} ticks arrived before their rx by this machine's clock (the server's clock is not CLOCK_REALTIME?); they count as 1 ns",
            acc.clock_skew
        ));
    }
    let missing = pub_out.expected_fast.saturating_sub(acc.fast.delivered);
    if missing > 0 {
        notes.warnings.push(format!(
            "{} of {} ticks expected by fast clients never arrived ({:.1}%): the server dropped them or was still behind when the drain ended (--drain {} s)",
            thousands(missing),
            thousands(pub_out.expected_fast),
            100.0 * missing as f64 / pub_out.expected_fast.max(1) as f64,
            spec.args.drain
        ));
    }
    if acc.unexpected > 0 {
        notes.problems.push(format!(
            "{} ticks arrived for keys nobody subscribed to",
            acc.unexpected
        ));
    }
}

/// The load as the report states it.
fn load_report(spec: &RunSpec, ctx: &Context) -> LoadReport {
    let (args, plan) = (spec.args, spec.plan);
    LoadReport {
        clients: spec.load.clients,
        per_client: if args.all_symbols {
            plan.symbols.len()
        } else {
            args.per_client
        },
        symbols: plan.symbols.len(),
        all_symbols: args.all_symbols,
        channels: plan.channel_names(),
        source: args
            .replay
            .as_ref()
            .map_or("synthetic".into(), |p| p.display().to_string()),
        rate: args.replay.is_none().then_some(spec.load.rate),
        speed: args.replay.as_ref().map(|_| match args.speed {
            Speed::Max => "max".to_owned(),
            Speed::Factor(f) => f.to_string(),
        }),
        seconds: args.seconds,
        warmup_seconds: args.warmup(),
        slow_clients: args.slow,
        stall_seconds: (args.slow > 0).then_some(args.stall),
        stall_at_seconds: (args.slow > 0).then_some(ctx.stall_at),
        stall_policy: args.resume.stall_policy.filter(|_| args.slow > 0),
        seed: args.seed,
        client_threads: ctx.threads,
    }
}

/// p50, p99 and max of each second.
fn interval_summaries(hists: &[hdrhistogram::Histogram<u64>]) -> Vec<IntervalSummary> {
    hists
        .iter()
        .enumerate()
        .map(|(i, h)| IntervalSummary {
            second: i as u64 + 1,
            count: h.len(),
            p50_ns: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.5)
            },
            p99_ns: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            },
            max_ns: h.max(),
        })
        .collect()
}

fn group(c: &Counts, expected: u64, clients: usize, seconds: f64) -> GroupReport {
    GroupReport {
        clients,
        expected,
        delivered: c.delivered,
        missing: expected.saturating_sub(c.delivered),
        snapshots: c.snapshots,
        gap_events: c.gap_events,
        gap_ticks: c.gap_ticks,
        reorders: c.reorders,
        delivered_per_sec: c.delivered as f64 / seconds,
        ended_early: Default::default(),
    }
}
