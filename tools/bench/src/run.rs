//! One run: one target, one load point, one round, in six phases.
//!
//! 1. [`setup::probe`]: one connection to each server, to fail early and clearly.
//! 2. [`setup::connect`]: every subscriber connected and subscribed before the
//!    first tick, so that "expected" is exact.
//! 3. [`setup::settle`]: gateways subscribed on the bus, memory measured.
//! 4. [`publish::publish`]: the publisher's schedule, watched and shown.
//! 5. [`publish::drain`]: what is in flight arrives, then everything stops.
//! 6. [`summary::report`]: the figures, warnings and problems of the run.
//!
//! Problems (the run is partial) and warnings (figures to read with care)
//! are gathered over the phases in [`Notes`].

mod intervals;
mod publish;
mod sample;
mod setup;
mod summary;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::publish::Drained;
use self::sample::total_rss;
use crate::BenchError;
use crate::args::{BenchArgs, Load};
use crate::clients::Phase;
use crate::pinning::Pinning;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::publisher::Source;
use crate::report::RunData;
use crate::target::{self, Target};

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
    /// The control of `--stall-control`: the slow clients read through
    /// the stall window instead of stalling.
    pub stall_control: bool,
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
    /// Each process's at the end, in [`crate::target::Running::procs`] order.
    end_per_process: Vec<u64>,
    /// At the stall's edges (runs with `--slow`).
    stall: crate::stall::StallMemory,
}

/// Runs the six phases against one target. What the runner started is
/// stopped whatever happens.
pub(crate) fn run_once(spec: &RunSpec) -> Result<RunData, BenchError> {
    let args = spec.args;
    let mut running = target::start(spec.target, &args.server_pid, args.server_bin.as_deref())?;
    let server = match setup::probe(&running) {
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
    let clients = setup::connect(spec, &mut running, &mut progress)?;
    memory.after_connect = setup::settle(&running, spec.plan, &mut notes);
    let publishing = match publish::publish(
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
    let drained = publish::drain(
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
