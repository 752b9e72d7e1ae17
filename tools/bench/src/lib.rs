//! `tickwire bench`: the latency benchmark runner.
//!
//! It drives any server that speaks PROTOCOL.md (or a `tickwire serve` it
//! starts in a child process) with thousands of subscribers and one
//! publisher, and reports honest percentiles: latency from the server's
//! `rx` stamp and from the publisher's intended send time (coordinated
//! omission), every delivery accounted for (expected, missing, `seq` gaps,
//! reorderings), the server's and its own CPU and memory, a table, JSON, an
//! HdrHistogram interval log and SVG plots. `--compare` alternates runs
//! against two to six targets and prints ratios; `--sweep` varies the load.
//! A target may be a deployment: the publisher on one server (an ingest
//! node) and the subscribers spread over others (gateways), given as URLs
//! or started by the runner (`nats:N`: nats-server, ingest node, N
//! gateways; see [`target`]).
//!
//! Layout: [`plan`] decides who subscribes to what, [`publisher`] sends
//! ticks on a schedule, [`clients`] receive and measure, [`ws`] and [`scan`]
//! are the lean protocol client, [`target`] starts or finds the server,
//! [`procstat`] samples `/proc`, [`report`] and [`plot`] show the results.

pub mod clients;
pub mod plan;
pub mod plot;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod scan;
pub mod target;
mod tickwire_lib;
pub mod ws;

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use self::clients::{Acc, ClientsConfig, IntervalMsg, Live, Phase, new_histogram};
use self::plan::{Plan, PlanInput};
use self::publisher::{PublishCounters, PublisherConfig, Source};
use self::report::*;
use self::target::Target;
use crate::tickwire_lib::Speed;

/// Why a benchmark could not run (or could not finish a run).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Limit(#[from] procstat::LimitError),
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("{url}: {source}")]
    Probe {
        url: String,
        #[source]
        source: clients::ClientError,
    },
    #[error(
        "{url}: {failed} of {total} clients could not connect and subscribe; first error: {first}"
    )]
    Connect {
        url: String,
        failed: u64,
        total: usize,
        first: String,
    },
    #[error("cannot read the recording: {0}")]
    Recording(#[from] crate::tickwire_lib::RecordingError),
    #[error("cannot start a thread or runtime: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
        _ => Err(format!(
            "`{s}` is not a speed: write a factor > 0 (1 = recorded pace) or `max`"
        )),
    }
}

/// `--sweep`: the parameter and its values. Boxed to keep the CLI enum small.
type Sweep = Box<(String, Vec<f64>)>;

fn parse_sweep(s: &str) -> Result<Sweep, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write e.g. clients=100,1000,10000 or rate=1000,2000"))?;
    if !matches!(k, "clients" | "rate") {
        return Err(format!("`{k}` cannot be swept; sweep `clients` or `rate`"));
    }
    let vals: Result<Vec<f64>, _> = v.split(',').map(|x| x.trim().parse::<f64>()).collect();
    match vals {
        Ok(vs) if !vs.is_empty() && vs.iter().all(|x| *x > 0.0 && x.is_finite()) => {
            Ok(Box::new((k.to_owned(), vs)))
        }
        _ => Err(format!(
            "`{v}`: the values must be positive numbers separated by commas"
        )),
    }
}

/// `tickwire bench`: measure a feed server's latency under load.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "tickwire-bench",
    version,
    about = "Measure a feed server's latency under load (tickwire, or any server speaking PROTOCOL.md)."
)]
pub struct BenchArgs {
    /// Server to measure (ws://HOST:PORT), or several, comma-separated:
    /// subscribers are spread over them round-robin (e.g. the gateways of a
    /// deployment) and the publisher uses the first, or --publish-url, or
    /// the one written `pub:ws://…`. Without --url (and without --compare)
    /// the runner starts `tickwire serve` in a child process.
    #[arg(long, conflicts_with = "compare")]
    pub url: Option<String>,
    /// Where the publisher connects when it is not where subscribers do
    /// (a deployment's ingest node; --url lists its gateways).
    #[arg(long, requires = "url")]
    pub publish_url: Option<String>,
    /// Measure 2 to 6 targets with the same load, alternating runs (A, B,
    /// C, A, B, C, …), and print medians and ratios (A/B for two targets,
    /// X/A for more). A target is `self` (a tickwire server started by the
    /// runner for each run), `nats:N` (a deployment started for each run:
    /// nats-server, an ingest node taking the publisher and N gateways
    /// taking the subscribers; nats:0 puts the subscribers on the ingest
    /// node), or URLs as for --url, with `pub:` marking the publisher's.
    /// `self` and `nats:N` may carry server flags of their own after a
    /// space, e.g. "nats:1 --bus-memory" "self --workers=1".
    #[arg(long, num_args = 2..=6, value_name = "TARGET")]
    pub compare: Option<Vec<String>>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Symbols each client subscribes to (chosen at random, seeded).
    #[arg(long, default_value_t = 10)]
    pub per_client: usize,
    /// Symbols published (synthetic names S0000, S0001, …).
    #[arg(long, default_value_t = 100)]
    pub symbols: usize,
    /// Subscribe every client to "*" instead of --per-client symbols.
    #[arg(long)]
    pub all_symbols: bool,
    /// Channels published and subscribed.
    #[arg(long, default_value = "trade,quote", value_delimiter = ',')]
    pub channels: Vec<String>,
    /// Ticks per second published, on a fixed schedule.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Publish this recording (e.g. replay-data/us-equities-20131007-open30.twr.zst)
    /// instead of synthetic ticks, looped for --seconds.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Replay speed: a factor (1 = recorded pace) or `max`.
    #[arg(long, default_value = "max", value_parser = parse_speed, requires = "replay")]
    pub speed: Speed,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds at the start whose ticks are counted but not timed
    /// (default: 1, or a fifth of --seconds when that is shorter).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Extra clients, subscribed to "*", that stop reading for --stall seconds.
    #[arg(long, default_value_t = 0)]
    pub slow: usize,
    /// How long slow clients stop reading.
    #[arg(long, default_value_t = 10.0)]
    pub stall: f64,
    /// When the stall starts, in seconds after publishing starts
    /// (default: a quarter of --seconds).
    #[arg(long)]
    pub stall_at: Option<f64>,
    /// Seed for subscriptions and ticks: the same seed gives the same load.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Client threads (default: one per core).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Runs per target and load point (default 1; 3 with --compare).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Vary the load: clients=100,1000,10000 or rate=1000,5000,20000.
    #[arg(long, value_parser = parse_sweep)]
    pub sweep: Option<Sweep>,
    /// Directory for the report files.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// JSON report (default: OUT/report.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Percentile-distribution plot, SVG (default: OUT/latency.svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// HdrHistogram interval log (default: OUT/latency.hlog).
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Process to sample CPU and RSS of, for a --url target (repeatable:
    /// the figures are summed, e.g. an ingest node, gateways and
    /// nats-server). Default: the local processes listening on the URLs'
    /// ports, if visible (that never includes nats-server).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Extra flag for a server the runner starts (repeatable), e.g.
    /// --server-arg=--workers=1. It goes to every tickwire node of a
    /// `nats:N` deployment.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// The `tickwire` binary that serves `self` and `nats:N` targets.
    /// Default: `tickwire` in this runner's own directory, where `cargo
    /// build` puts both.
    #[arg(long, env = "TICKWIRE_BIN", value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// After publishing, wait at most this long for deliveries to arrive.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Time allowed for all clients to connect and subscribe.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Hard limit for the whole command, seconds (default: computed from
    /// the runs with a generous margin).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    fn warmup(&self) -> f64 {
        self.warmup.unwrap_or((self.seconds / 5.0).min(1.0))
    }
}

/// One load point: the flags with a sweep value applied.
#[derive(Clone, Debug)]
struct Load {
    clients: usize,
    rate: f64,
    point: Option<(String, f64)>,
}

/// Runs the benchmark; prints the tables, writes the files.
pub fn run(args: BenchArgs) -> ExitCode {
    match run_all(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "tickwire bench: some runs are partial (see PROBLEM lines); the report is marked so"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("tickwire bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &BenchArgs) -> Result<u8, BenchError> {
    let usage = |m: String| Err(BenchError::Usage(m));
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return usage("--seconds must be in (0, 3600]".into());
    }
    if !(args.warmup() >= 0.0 && args.warmup() < args.seconds) {
        return usage("--warmup must be ≥ 0 and shorter than --seconds".into());
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return usage("--rate must be a positive number of ticks per second".into());
    }
    if !(args.drain >= 0.0
        && args.drain <= 600.0
        && args.connect_timeout > 0.0
        && args.stall >= 0.0)
    {
        return usage(
            "--drain, --connect-timeout and --stall must be sensible positive durations".into(),
        );
    }
    let mut mask = 0u8;
    for c in &args.channels {
        mask |= match c.as_str() {
            "trade" => 1,
            "quote" => 2,
            other => {
                return usage(format!(
                    "unknown channel `{other}`; use trade, quote or trade,quote"
                ));
            }
        };
    }
    if mask == 0 {
        return usage("--channels needs at least one of trade, quote".into());
    }
    if args.threads == Some(0) || args.rounds == Some(0) {
        return usage("--threads and --rounds must be at least 1".into());
    }
    Ok(mask)
}

fn run_all(args: &BenchArgs) -> Result<bool, BenchError> {
    let channels = validate(args)?;
    let targets: Vec<Target> = match (&args.compare, &args.url) {
        (Some(list), _) => list
            .iter()
            .map(|s| Target::parse(s, &args.server_arg))
            .collect::<Result<_, _>>()
            .map_err(BenchError::Usage)?,
        (None, Some(u)) => {
            vec![Target::urls(u, args.publish_url.as_deref()).map_err(BenchError::Usage)?]
        }
        (None, None) => vec![Target::Spawn {
            extra: args.server_arg.clone(),
            own: Vec::new(),
        }],
    };
    if targets.len() > 1 && !args.server_pid.is_empty() {
        return Err(BenchError::Usage(
            "--server-pid names the processes of one target; with --compare the listeners' pids are looked up"
                .into(),
        ));
    }
    if targets.iter().any(Target::is_deployment) && target::nats_server_exe().is_none() {
        return Err(BenchError::Usage(
            "a nats:N target needs nats-server: install it (Debian: apt-get install nats-server) or set TICKWIRE_NATS_SERVER to its path".into(),
        ));
    }
    if targets.iter().any(Target::starts_servers) {
        target::server_bin(args.server_bin.as_deref())?;
    }
    let rounds = args
        .rounds
        .map_or(if targets.len() > 1 { 3 } else { 1 }, |r| r as usize);
    let loads: Vec<Load> = match args.sweep.as_deref() {
        None => vec![Load {
            clients: args.clients,
            rate: args.rate,
            point: None,
        }],
        Some((k, vals)) => vals
            .iter()
            .map(|&v| Load {
                clients: if k == "clients" {
                    v as usize
                } else {
                    args.clients
                },
                rate: if k == "rate" { v } else { args.rate },
                point: Some((k.clone(), v)),
            })
            .collect(),
    };

    // File descriptors: every client, the publisher, and a margin.
    let max_clients = loads.iter().map(|l| l.clients).max().unwrap_or(0) + args.slow;
    if let Some(note) = procstat::raise_fd_limit(max_clients)? {
        eprintln!("tickwire bench: {note}");
    }
    // Every client comes from 127.0.0.1: a server the runner starts must
    // admit them all (its default is 100 per address), unless told otherwise.
    let targets: Vec<Target> = targets
        .into_iter()
        .map(|t| t.with_connection_limits(max_clients + 64))
        .collect();

    // The recording, if any, and the symbol universe.
    let replay = match &args.replay {
        Some(path) => Some(crate::tickwire_lib::read_all(path)?),
        None => None,
    };
    let symbols = match &replay {
        Some(ticks) => {
            let mut s: Vec<String> = ticks.iter().map(|t| t.sym.to_string()).collect();
            s.sort();
            s.dedup();
            s
        }
        None => Plan::synthetic_symbols(args.symbols),
    };

    // A hard bound on the whole command: runs are bounded one by one, this
    // catches what nothing else does.
    let per_run = args.connect_timeout + args.seconds + args.drain + 40.0
        // Starting a deployment, and waiting for its gateways' subscriptions.
        + if targets.iter().any(Target::is_deployment) { 40.0 } else { 0.0 };
    let budget = args
        .timeout
        .unwrap_or(per_run * (loads.len() * rounds * targets.len()) as f64 + 30.0);
    start_watchdog(Duration::from_secs_f64(budget));

    let started = SystemTime::now();
    let mut runs: Vec<RunData> = Vec::new();
    let mut all_complete = true;
    for load in &loads {
        let plan = Arc::new(Plan::new(PlanInput {
            symbols: symbols.clone(),
            channels,
            clients: load.clients,
            per_client: args.per_client,
            all_symbols: args.all_symbols,
            slow: args.slow,
            seed: args.seed,
        })?);
        let source = match &replay {
            Some(ticks) => {
                let keep: Vec<_> = ticks
                    .iter()
                    .filter(|t| channels & (1 << t.event.channel() as u8) != 0)
                    .cloned()
                    .collect();
                if keep.is_empty() {
                    return Err(BenchError::Usage(
                        "the recording has no ticks on the chosen --channels".into(),
                    ));
                }
                let idx = keep
                    .iter()
                    .map(|t| plan.index.get(t.sym.as_bytes()).copied().unwrap_or(0))
                    .collect();
                Source::Replay {
                    ticks: Arc::new(keep),
                    symbols: Arc::new(idx),
                    speed: args.speed,
                }
            }
            None => Source::Synthetic { rate: load.rate },
        };
        for round in 1..=rounds {
            for (ti, t) in targets.iter().enumerate() {
                let label = run_label(t, ti, targets.len(), load, round, rounds);
                let data = run_once(args, (ti, t), &plan, &source, load, round, &label)?;
                println!("{}", human(&data.report));
                all_complete &= data.report.complete;
                runs.push(data);
            }
        }
    }

    let comparison = (targets.len() > 1).then(|| compare(&runs, &targets, &loads));
    if let Some(c) = &comparison {
        println!("{}", c.text);
    }
    write_outputs(args, &runs, &targets, comparison.as_ref(), started)?;
    Ok(all_complete)
}

/// Target letters: A, B, C, … (as many as --compare accepts).
const LETTERS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];

fn run_label(t: &Target, ti: usize, n: usize, load: &Load, round: usize, rounds: usize) -> String {
    let name = t.short();
    let mut l = if n > 1 {
        format!("{}:{name}", LETTERS[ti.min(LETTERS.len() - 1)])
    } else {
        name
    };
    if let Some((k, v)) = &load.point {
        l.push_str(&format!(" {k}={v}"));
    }
    if rounds > 1 {
        l.push_str(&format!(" r{round}"));
    }
    l
}

fn start_watchdog(limit: Duration) {
    let _ = std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "tickwire bench: hard timeout after {:.0} s: something hung; stopping (no report written)",
                limit.as_secs_f64()
            );
            for pid in target::CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = crate::tickwire_lib::sys::kill(*pid, crate::tickwire_lib::sys::Signal::Kill);
            }
            for dir in target::TEMP_DIRS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(3);
        });
}

/// CPU seconds of this process and of each client thread.
struct CpuSample {
    /// The whole machine.
    system: Option<procstat::SystemCpu>,
    runner: f64,
    threads: Vec<f64>,
    /// Each of the target's processes.
    server: Vec<Option<f64>>,
    at: Instant,
}

impl CpuSample {
    /// The target's CPU seconds, summed; `None` if a process was not seen.
    fn server_total(&self) -> Option<f64> {
        if self.server.is_empty() {
            return None;
        }
        self.server.iter().copied().sum()
    }
}

/// The target's RSS, summed over its processes.
fn total_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    Some(pids.iter().filter_map(|&p| procstat::process_rss(p)).sum())
}

fn sample_cpu(live: &Live, pids: &[u32]) -> CpuSample {
    let tids = live.tids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    CpuSample {
        system: procstat::system_cpu(),
        runner: procstat::process_cpu(std::process::id()).unwrap_or(0.0),
        threads: tids
            .iter()
            .map(|&t| procstat::thread_cpu(t).unwrap_or(0.0))
            .collect(),
        server: pids.iter().map(|&p| procstat::process_cpu(p)).collect(),
        at: Instant::now(),
    }
}

/// Progress on stderr: one line rewritten in place on a terminal, a line
/// every few seconds otherwise.
struct Progress {
    quiet: bool,
    tty: bool,
    last: Instant,
    every: Duration,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            quiet,
            tty,
            last: Instant::now() - Duration::from_secs(60),
            every: Duration::from_secs(if tty { 1 } else { 5 }),
        }
    }
    fn due(&mut self) -> bool {
        if self.quiet || self.last.elapsed() < self.every {
            return false;
        }
        self.last = Instant::now();
        true
    }
    fn show(&self, line: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
    fn done(&self) {
        if !self.quiet && self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_once(
    args: &BenchArgs,
    (target_index, target): (usize, &Target),
    plan: &Arc<Plan>,
    source: &Source,
    load: &Load,
    round: usize,
    label: &str,
) -> Result<RunData, BenchError> {
    let mut running = target::start(target, &args.server_pid, args.server_bin.as_deref())?;
    let url = running.publish.url.clone();
    let subscribe_urls: Vec<String> = running.subscribe.iter().map(|e| e.url.clone()).collect();
    // Make sure every server is there and speaks the protocol, once.
    let probe_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Thread)?;
    let mut names: Vec<String> = Vec::new();
    let mut probe_failed = None;
    let mut probed_addrs = Vec::new();
    for ep in running.subscribe.iter().chain([&running.publish]) {
        if probed_addrs.contains(&ep.addr) {
            continue;
        }
        probed_addrs.push(ep.addr);
        match probe_rt.block_on(clients::probe(ep, Duration::from_secs(5))) {
            Ok(name) => {
                if !names.contains(&name) {
                    names.push(name)
                }
            }
            Err(source) => {
                probe_failed = Some(BenchError::Probe {
                    url: ep.url.clone(),
                    source,
                });
                break;
            }
        }
    }
    drop(probe_rt);
    if let Some(e) = probe_failed {
        running.stop();
        return Err(e);
    }
    let server_name = names.join(", ");
    let pids = running.pids();
    let roles: Vec<String> = running.procs.iter().map(|p| p.role.clone()).collect();
    let rss_before = total_rss(&pids).unwrap_or(0);
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let stall_at = args.stall_at.unwrap_or(args.seconds / 4.0);
    let cfg = Arc::new(ClientsConfig {
        endpoints: running.subscribe.clone(),
        plan: plan.clone(),
        threads,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        stall: (args.slow > 0).then(|| {
            (
                Duration::from_secs_f64(stall_at),
                Duration::from_secs_f64(args.stall),
            )
        }),
        warmup: Duration::from_secs_f64(args.warmup()),
    });
    let live = Arc::new(Live::default());
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Connecting);
    let (itx, irx) = mpsc::channel::<IntervalMsg>();
    let handles = clients::spawn(cfg, live.clone(), phase_rx, itx).map_err(BenchError::Thread)?;
    let total = plan.clients.len();
    let mut progress = Progress::new(args.quiet);
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    // Connect everyone before the first tick, so that "expected" is exact.
    let t0 = Instant::now();
    let connect_deadline = t0 + Duration::from_secs_f64(args.connect_timeout + 5.0);
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
        if Instant::now() > connect_deadline {
            problems.push(format!(
                "only {ok} of {total} clients connected within {} s",
                args.connect_timeout
            ));
            break;
        }
        if progress.due() {
            progress.show(&format!(
                "{label}: connecting {}/{}",
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
        let _ = phase_tx.send(Phase::Stop);
        join_bounded(handles, Duration::from_secs(5));
        running.stop();
        let first = live
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| problems.join("; "));
        return Err(BenchError::Connect {
            url,
            failed: failed.max(1),
            total,
            first,
        });
    }
    // A gateway subscribes on the bus when its first client wants a key;
    // ticks published before that are legitimately not delivered, so wait
    // until every gateway's bus subscriptions cover its clients' keys.
    let settle = wait_for_gateways(&running, plan, Duration::from_secs(10));
    if let Some(w) = settle {
        warnings.push(w);
    }
    // Let the server settle (snapshots, buffers) before measuring memory.
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = total_rss(&pids).unwrap_or(0);

    let cpu0 = sample_cpu(&live, &pids);
    let start_wall = crate::tickwire_lib::wall_clock_ns();
    let start_sys = SystemTime::now();
    let _ = phase_tx.send(Phase::Publishing {
        start_wall_ns: start_wall,
    });
    let counters = Arc::new(PublishCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publisher::spawn(
        PublisherConfig {
            endpoint: running.publish.clone(),
            plan: plan.clone(),
            source: source.clone(),
            duration: Duration::from_secs_f64(args.seconds),
            seed: args.seed,
        },
        counters.clone(),
        stop.clone(),
    )
    .map_err(BenchError::Thread)?;

    let mut intervals: Vec<(Histogram<u64>, Histogram<u64>, usize)> = Vec::new();
    let absorb = |m: IntervalMsg, intervals: &mut Vec<(Histogram<u64>, Histogram<u64>, usize)>| {
        let i = m.index as usize;
        while intervals.len() <= i {
            intervals.push((new_histogram(), new_histogram(), 0));
        }
        let slot = &mut intervals[i];
        let _ = slot.0.add(&m.rx);
        let _ = slot.1.add(&m.intended);
        slot.2 += 1;
    };
    let mut rss_peak = rss_after;
    let mut last_delivered = 0u64;
    let mut last_at = Instant::now();
    let run_deadline = Instant::now() + Duration::from_secs_f64(args.seconds + 15.0);
    let mut server_gone = None;
    // Publishing.
    loop {
        while let Ok(m) = irx.try_recv() {
            absorb(m, &mut intervals);
        }
        if let Some(r) = total_rss(&pids) {
            rss_peak = rss_peak.max(r);
        }
        if let Some(st) = running.exited() {
            server_gone = Some(st);
            break;
        }
        if counters.done.load(Ordering::Acquire) {
            break;
        }
        if live.lost.load(Ordering::Relaxed) >= total as u64 {
            problems.push("every client connection was lost".into());
            break;
        }
        if Instant::now() > run_deadline {
            problems.push("publishing did not finish in time".into());
            break;
        }
        if progress.due() {
            let d = live.delivered_fast.load(Ordering::Relaxed)
                + live.delivered_slow.load(Ordering::Relaxed);
            let rate = (d - last_delivered) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
            last_delivered = d;
            last_at = Instant::now();
            let p99 = intervals
                .iter()
                .rev()
                .find(|s| s.2 >= threads)
                .map(|s| ns(s.0.value_at_quantile(0.99)))
                .unwrap_or_else(|| "-".into());
            let now: Option<f64> = pids.iter().map(|&p| procstat::process_cpu(p)).sum();
            let cpu = match (now.filter(|_| !pids.is_empty()), cpu0.server_total()) {
                (Some(now), Some(then)) => format!(
                    " · server {:.0}% CPU, RSS {}",
                    100.0 * (now - then) / cpu0.at.elapsed().as_secs_f64().max(1e-3),
                    mb(rss_peak)
                ),
                _ => String::new(),
            };
            progress.show(&format!(
                "{label}: {:.0}/{} s · published {} · delivered {}/s · p99 {p99} · gaps {} · lost {}{cpu}",
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
    // Drain: wait for what is still in flight, bounded.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    let mut last = (u64::MAX, Instant::now());
    while server_gone.is_none() && Instant::now() < drain_deadline {
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
    let cpu1 = sample_cpu(&live, &pids);
    let rss_ends: Vec<u64> = pids
        .iter()
        .map(|&p| procstat::process_rss(p).unwrap_or(0))
        .collect();
    let rss_end = rss_ends.iter().sum();
    rss_peak = rss_peak.max(rss_end);
    progress.done();

    let _ = phase_tx.send(Phase::Stop);
    stop.store(true, Ordering::Relaxed);
    let accs = join_bounded(handles, Duration::from_secs(10));
    if accs.len() < threads {
        problems.push(format!(
            "{} client threads did not stop in time",
            threads - accs.len()
        ));
    }
    let pub_out = join_one(publisher, Duration::from_secs(15));
    while let Ok(m) = irx.try_recv() {
        absorb(m, &mut intervals);
    }
    if server_gone.is_none() {
        server_gone = running.exited();
    }
    if let Some(st) = &server_gone {
        problems.push(format!("the server exited during the run ({st})"));
    }
    let spawned = running.spawned();
    if let Some(note) = running.stop() {
        warnings.push(note);
    }

    let mut acc = Acc::merge_all(accs);
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-6);
    let Some(pub_out) = pub_out else {
        problems.push("the publisher thread did not stop in time".into());
        return Err(BenchError::Usage(problems.join("; ")));
    };
    if let Some(f) = &pub_out.failure {
        problems.push(f.clone());
    }
    if let Some(l) = live
        .first_loss
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        let lost = live.lost.load(Ordering::Relaxed);
        let msg = format!("{lost} connections ended before the run did; first: {l}");
        // Slow clients being evicted is the expected outcome of a stall.
        if acc.ends.is_empty() {
            warnings.push(msg);
        } else {
            problems.push(msg);
        }
    }
    let publish_seconds = pub_out.seconds.max(1e-6);
    let fast_clients = plan.clients.iter().filter(|c| !c.slow).count();
    let mut fast = group(
        &acc.fast,
        pub_out.expected_fast,
        fast_clients,
        publish_seconds,
    );
    fast.ended_early = std::mem::take(&mut acc.ends);
    let delivered_all = acc.fast.delivered + acc.slow.delivered;
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
                            role: roles[i].clone(),
                            pid: pids[i],
                            cpu_seconds: cpu,
                            cpu_seconds_per_million: per_million(cpu),
                            rss_end: rss_ends[i],
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            },
            cpu_seconds: b - a,
            cpu_cores: (b - a) / window,
            cpu_seconds_per_million: per_million(b - a),
            rss_before_connect: rss_before,
            rss_after_connect: rss_after,
            rss_per_connection: rss_after.saturating_sub(rss_before) as f64 / total.max(1) as f64,
            rss_start: rss_after,
            rss_end,
            rss_peak,
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
        warnings.push(format!(
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
        warnings.push(format!(
            "the machine was saturated ({system:.2} of {cores} cores busy: server {:.2}, runner {:.2}, interrupts (loopback TCP) {interrupts:.2}, other processes {others:.2}): everything waited for CPU, so the figures measure this machine as much as the server",
            server_resources.as_ref().map_or(0.0, |s| s.cpu_cores),
            runner_cpu / window
        ));
    }
    // Other engineers' builds or tests on a shared machine take CPU from
    // both sides; say how much.
    if others > 0.25 {
        warnings.push(format!(
            "other processes kept {others:.2} of {cores} cores busy during the run: the figures include waiting for CPU"
        ));
    }
    let late_p99 = pub_out.lateness.value_at_quantile(0.99);
    if late_p99 > 1_000_000 {
        warnings.push(format!(
            "the publisher ran up to {} late (p99) against its schedule: latency from intended send time includes that (server backpressure or a busy machine)",
            ns(late_p99)
        ));
    }
    if acc.clock_skew > 0 {
        warnings.push(format!(
            "{} ticks arrived before their rx by this machine's clock (the server's clock is not CLOCK_REALTIME?); they count as 1 ns",
            acc.clock_skew
        ));
    }
    let missing = pub_out.expected_fast.saturating_sub(acc.fast.delivered);
    if missing > 0 {
        warnings.push(format!(
            "{} of {} ticks expected by fast clients never arrived ({:.1}%): the server dropped them or was still behind when the drain ended (--drain {} s)",
            thousands(missing),
            thousands(pub_out.expected_fast),
            100.0 * missing as f64 / pub_out.expected_fast.max(1) as f64,
            args.drain
        ));
    }
    if acc.unexpected > 0 {
        problems.push(format!(
            "{} ticks arrived for keys nobody subscribed to",
            acc.unexpected
        ));
    }
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
        }
    });
    let mut interval_hists: Vec<Histogram<u64>> = intervals.into_iter().map(|s| s.0).collect();
    // Seconds after the last delivery (drain, shutdown) say nothing.
    while interval_hists.last().is_some_and(|h| h.is_empty()) {
        interval_hists.pop();
    }
    let (min_rx, min_intended) = (acc.rx.min(), acc.intended.min());
    if !acc.rx.is_empty() && min_rx > min_intended.saturating_add(50_000) {
        warnings.push(format!(
            "the server's rx stamps run at least {} behind this machine's clock (the fastest tick took {} from rx but {} from its intended send time): compare servers on latency from intended send time",
            ns(min_rx - min_intended),
            ns(min_rx),
            ns(min_intended)
        ));
    }
    let report = RunReport {
        label: label.to_owned(),
        target: target.describe(),
        target_index,
        url: url.clone(),
        subscribe_urls,
        server: server_name,
        spawned,
        round,
        point: load.point.clone(),
        complete: problems.is_empty(),
        problems,
        warnings,
        load: LoadReport {
            clients: load.clients,
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
            rate: args.replay.is_none().then_some(load.rate),
            speed: args.replay.as_ref().map(|_| match args.speed {
                Speed::Max => "max".to_owned(),
                Speed::Factor(f) => f.to_string(),
            }),
            seconds: args.seconds,
            warmup_seconds: args.warmup(),
            slow_clients: args.slow,
            stall_seconds: (args.slow > 0).then_some(args.stall),
            stall_at_seconds: (args.slow > 0).then_some(stall_at),
            seed: args.seed,
            client_threads: threads,
        },
        connect_seconds,
        window_seconds: window,
        publish: PublishReport {
            published: pub_out.published,
            seconds: pub_out.seconds,
            ticks_per_sec: pub_out.published as f64 / publish_seconds,
            lateness_p99_ns: late_p99,
            lateness_max_ns: pub_out.lateness.max(),
            server_errors: counters.server_errors.load(Ordering::Relaxed),
            server_error_samples: pub_out.server_error_samples,
        },
        latency: Percentiles::of(&acc.rx),
        latency_intended: Percentiles::of(&acc.intended),
        fast,
        slow,
        delivered_per_sec: delivered_all as f64 / publish_seconds,
        parse_errors: acc.parse_errors,
        unexpected_ticks: acc.unexpected,
        clock_skew_ticks: acc.clock_skew,
        subscriber_server_errors: acc.server_errors,
        samples: acc.samples.clone(),
        server_resources,
        runner: RunnerResources {
            cpu_seconds: runner_cpu,
            other_processes_cores: others,
            interrupt_cores: interrupts,
            cpu_seconds_per_million: per_million(runner_cpu),
            busiest_client_thread: busiest,
        },
        intervals: interval_hists
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
            .collect(),
    };
    Ok(RunData {
        report,
        rx: acc.rx,
        intended: acc.intended,
        start: start_sys,
        intervals: interval_hists,
    })
}

/// Waits until every subscribe endpoint that is a bus gateway (its
/// `/metrics` says `tickwire_bus_connected 1`; the publish endpoint never
/// counts as one) is subscribed on the bus to as many subjects as its
/// clients want: one per key, or one per channel when a client is on `*`.
/// Returns a warning when one is not within `limit`. A server without
/// `/metrics`, or not on a bus, is not waited for.
fn wait_for_gateways(running: &target::Running, plan: &Plan, limit: Duration) -> Option<String> {
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

fn group(c: &clients::Counts, expected: u64, clients: usize, seconds: f64) -> GroupReport {
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

/// Joins threads, giving up on those still running after `limit` (they are
/// left behind rather than hanging the runner).
fn join_bounded<T>(handles: Vec<std::thread::JoinHandle<T>>, limit: Duration) -> Vec<T> {
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

fn join_one<T>(h: std::thread::JoinHandle<T>, limit: Duration) -> Option<T> {
    join_bounded(vec![h], limit).pop()
}

/// Medians per target and load point, and A/B ratios.
struct Comparison {
    text: String,
    json: serde_json::Value,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

type Metric = (&'static str, fn(&RunReport) -> Option<f64>);

const METRICS: [Metric; 10] = [
    ("p50 from rx (µs)", |r| Some(r.latency.p50_ns as f64 / 1e3)),
    ("p99 from rx (µs)", |r| Some(r.latency.p99_ns as f64 / 1e3)),
    ("p99.9 from rx (µs)", |r| {
        Some(r.latency.p999_ns as f64 / 1e3)
    }),
    ("p50 from intended (µs)", |r| {
        Some(r.latency_intended.p50_ns as f64 / 1e3)
    }),
    ("p99 from intended (µs)", |r| {
        Some(r.latency_intended.p99_ns as f64 / 1e3)
    }),
    ("p99.9 from intended (µs)", |r| {
        Some(r.latency_intended.p999_ns as f64 / 1e3)
    }),
    ("max from rx (µs)", |r| Some(r.latency.max_ns as f64 / 1e3)),
    ("delivered/s", |r| Some(r.delivered_per_sec)),
    ("server CPU-s per M deliveries", |r| {
        r.server_resources
            .as_ref()
            .map(|s| s.cpu_seconds_per_million)
    }),
    ("missing (fast clients)", |r| Some(r.fast.missing as f64)),
];

/// A round is "clean" when other processes kept less than this many cores
/// busy during both of its runs.
const CLEAN_OTHERS: f64 = 0.3;

fn compare(runs: &[RunData], targets: &[Target], loads: &[Load]) -> Comparison {
    use std::fmt::Write as _;
    let mut text = String::new();
    let mut points = Vec::new();
    let names: Vec<String> = targets.iter().map(|t| t.describe()).collect();
    let k = targets.len();
    // Two targets: A/B, as always; more: each against A.
    let ratio_names: Vec<String> = if k == 2 {
        vec!["A/B".into()]
    } else {
        (1..k).map(|i| format!("{}/A", LETTERS[i])).collect()
    };
    let block = |text: &mut String, title: String, groups: &[Vec<&RunReport>]| {
        let _ = write!(text, "{title}\n  {:<32}", "");
        for l in LETTERS.iter().take(k) {
            let _ = write!(text, "{l:>14}");
        }
        for r in &ratio_names {
            let _ = write!(text, "{r:>9}");
        }
        let _ = write!(text, "\n  {:<32}", "");
        for n in &names {
            let short: String = n.trim_start_matches("ws://").chars().take(13).collect();
            let _ = write!(text, "{short:>14}");
        }
        let _ = writeln!(text);
        let mut rows = serde_json::Map::new();
        for (name, f) in METRICS {
            let m: Vec<f64> = groups
                .iter()
                .map(|g| median(g.iter().filter_map(|r| f(r)).collect()))
                .collect();
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let ratios: Vec<f64> = if k == 2 {
                vec![div(m[0], m[1])]
            } else {
                m[1..].iter().map(|&x| div(x, m[0])).collect()
            };
            let _ = write!(text, "  {name:<32}");
            for v in &m {
                let _ = write!(text, "{v:>14.1}");
            }
            for r in &ratios {
                let _ = write!(text, "{r:>9.2}");
            }
            let _ = writeln!(text);
            let mut row = serde_json::json!({
                "medians": m.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
            });
            if k == 2 {
                row["a"] = finite(m[0]);
                row["b"] = finite(m[1]);
                row["a_over_b"] = finite(ratios[0]);
            } else {
                row["over_a"] = ratios.iter().map(|&v| finite(v)).collect();
            }
            rows.insert(name.to_owned(), row);
        }
        rows
    };
    for load in loads {
        let groups: Vec<Vec<&RunReport>> = (0..k)
            .map(|ti| {
                runs.iter()
                    .map(|r| &r.report)
                    .filter(|r| r.point == load.point && r.target_index == ti)
                    .collect()
            })
            .collect();
        let point = load
            .point
            .as_ref()
            .map_or(String::new(), |(k, v)| format!(" at {k}={v}"));
        let n = groups.iter().map(Vec::len).min().unwrap_or(0);
        let all = block(
            &mut text,
            format!("comparison{point}: median of {n} alternating runs each"),
            &groups,
        );
        // On a shared machine, rounds where someone else's build ran are
        // noise for every target; show the quiet rounds on their own too.
        let clean: Vec<usize> = (1..=n)
            .filter(|&round| {
                groups
                    .iter()
                    .flatten()
                    .filter(|r| r.round == round)
                    .all(|r| r.runner.other_processes_cores < CLEAN_OTHERS)
            })
            .collect();
        let clean_groups: Vec<Vec<&RunReport>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|r| clean.contains(&r.round))
                    .copied()
                    .collect()
            })
            .collect();
        let clean_rows = (!clean.is_empty() && clean.len() < n).then(|| {
            block(
                &mut text,
                format!(
                    "comparison{point}: quiet rounds only ({} of {n}: other processes under {CLEAN_OTHERS} cores in every run of the round)",
                    clean.len()
                ),
                &clean_groups,
            )
        });
        if clean.is_empty() {
            let _ = writeln!(
                text,
                "  (no round was quiet: other processes took {CLEAN_OTHERS}+ cores in every round; the figures include waiting for CPU)"
            );
        }
        points.push(serde_json::json!({
            "point": load.point,
            "medians": all,
            "quiet_rounds": clean,
            "quiet_medians": clean_rows,
        }));
    }
    let mut json = serde_json::json!({ "targets": names, "points": points });
    if k == 2 {
        json["a"] = serde_json::json!(names[0]);
        json["b"] = serde_json::json!(names[1]);
    }
    Comparison { text, json }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

fn write_outputs(
    args: &BenchArgs,
    runs: &[RunData],
    targets: &[Target],
    comparison: Option<&Comparison>,
    started: SystemTime,
) -> Result<(), BenchError> {
    let out = |p: &Option<PathBuf>, name: &str| p.clone().unwrap_or_else(|| args.out.join(name));
    let (json, svg, hlog) = (
        out(&args.json, "report.json"),
        out(&args.plot, "latency.svg"),
        out(&args.hlog, "latency.hlog"),
    );
    for p in [&json, &svg, &hlog] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BenchError::Output {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| BenchError::Output { path, source }
    };

    // Percentile plot: every run from rx; a single run also from intended time.
    let series: Vec<plot::Series> = runs
        .iter()
        .flat_map(|r| {
            let color = r.report.target_index;
            let color = match args.sweep.as_deref() {
                Some((_, vals)) => r
                    .report
                    .point
                    .as_ref()
                    .and_then(|(_, v)| vals.iter().position(|x| x == v))
                    .map_or(color, |i| i * targets.len() + color),
                None => color,
            };
            // Two servers' rx stamps come from two clocks; the intended send
            // time and the receive time both come from ours, so comparisons
            // are drawn from intended send time.
            let mut v = vec![if targets.len() > 1 {
                plot::Series {
                    label: format!("{} (from intended send time)", r.report.label),
                    hist: &r.intended,
                    color,
                    dashed: false,
                }
            } else {
                plot::Series {
                    label: format!("{} (from rx)", r.report.label),
                    hist: &r.rx,
                    color,
                    dashed: false,
                }
            }];
            if runs.len() == 1 {
                v.push(plot::Series {
                    label: format!("{} (from intended send time)", r.report.label),
                    hist: &r.intended,
                    color: 1,
                    dashed: true,
                });
            }
            v
        })
        .collect();
    let first = &runs[0].report.load;
    let title = format!(
        "tickwire bench: {} clients × {} symbols, {}",
        first.clients,
        if first.all_symbols {
            "*".to_owned()
        } else {
            first.per_client.to_string()
        },
        first.rate.map_or_else(
            || format!(
                "{} at {}",
                first.source,
                first.speed.clone().unwrap_or_default()
            ),
            |r| format!("{r} ticks/s")
        )
    );
    plot::percentile_plot(&svg, &title, &series)?;
    println!("plot: {}", svg.display());

    let mut sweep_json = None;
    if let Some((param, vals)) = args.sweep.as_deref() {
        let lines: Vec<plot::SweepLine> = (0..targets.len())
            .map(|ti| plot::SweepLine {
                label: targets[ti].describe(),
                points: vals
                    .iter()
                    .map(|v| {
                        let mine: Vec<&RunReport> = runs
                            .iter()
                            .map(|r| &r.report)
                            .filter(|r| {
                                r.point.as_ref().map(|p| p.1) == Some(*v) && r.target_index == ti
                            })
                            .collect();
                        // Two servers: their rx clocks differ, ours does not.
                        let lat = |r: &&RunReport| {
                            if targets.len() > 1 {
                                r.latency_intended.clone()
                            } else {
                                r.latency.clone()
                            }
                        };
                        (
                            *v,
                            median(mine.iter().map(|r| lat(r).p50_ns as f64).collect()),
                            median(mine.iter().map(|r| lat(r).p99_ns as f64).collect()),
                        )
                    })
                    .filter(|p| p.1.is_finite() && p.2.is_finite())
                    .collect(),
            })
            .collect();
        let sweep_svg = svg.with_file_name(format!(
            "{}-sweep.svg",
            svg.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("latency")
        ));
        let y = if targets.len() > 1 {
            "latency from intended send time"
        } else {
            "latency from rx"
        };
        plot::sweep_plot(
            &sweep_svg,
            &format!("p50 / p99 against {param}"),
            param,
            y,
            &lines,
        )?;
        println!("sweep plot: {}", sweep_svg.display());
        // S2's figure: the most delivered/s whose p99 stayed under 10 ms.
        let mut best = Vec::new();
        for ti in 0..targets.len() {
            let mut top: Option<(f64, f64)> = None;
            for v in vals {
                let mine: Vec<&RunReport> = runs
                    .iter()
                    .map(|r| &r.report)
                    .filter(|r| r.point.as_ref().map(|p| p.1) == Some(*v) && r.target_index == ti)
                    .collect();
                let p99 = median(
                    mine.iter()
                        .map(|r| {
                            let p = if targets.len() > 1 {
                                &r.latency_intended
                            } else {
                                &r.latency
                            };
                            p.p99_ns as f64
                        })
                        .collect(),
                );
                let rate = median(mine.iter().map(|r| r.delivered_per_sec).collect());
                // A point where nothing was timed (everything arrived late
                // or not at all) or ticks went missing does not count.
                let sound = !mine.is_empty()
                    && mine
                        .iter()
                        .all(|r| r.latency.count > 0 && r.fast.missing == 0);
                if sound && p99 < 10e6 && rate > top.map_or(0.0, |t| t.0) {
                    top = Some((rate, *v));
                }
            }
            match top {
                Some((rate, v)) => println!(
                    "{}: highest delivered/s with p99 under 10 ms: {} (at {param}={v})",
                    targets[ti].describe(),
                    thousands(rate as u64)
                ),
                None => println!(
                    "{}: p99 was over 10 ms at every point",
                    targets[ti].describe()
                ),
            }
            best.push(serde_json::json!({
                "target": targets[ti].describe(),
                "delivered_per_sec": top.map(|t| t.0),
                "at": top.map(|t| t.1),
            }));
        }
        sweep_json = Some(serde_json::json!({
            "best_under_10ms_p99": best,
            "parameter": param,
            "plot": sweep_svg.display().to_string(),
            "lines": lines.iter().map(|l| serde_json::json!({
                "target": l.label,
                "points": l.points.iter().map(|p| serde_json::json!({"value": p.0, "p50_ns": p.1, "p99_ns": p.2})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }

    report::write_interval_log(&hlog, runs).map_err(werr(&hlog))?;
    println!("interval log: {}", hlog.display());

    let doc = serde_json::json!({
        "tool": "tickwire bench",
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": started.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "complete": runs.iter().all(|r| r.report.complete),
        "files": { "plot": svg.display().to_string(), "interval_log": hlog.display().to_string() },
        "runs": runs.iter().map(|r| &r.report).collect::<Vec<_>>(),
        "comparison": comparison.map(|c| c.json.clone()),
        "sweep": sweep_json,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    std::fs::write(&json, text).map_err(werr(&json))?;
    println!("report: {}", json.display());
    Ok(())
}
