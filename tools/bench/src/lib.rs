//! `tickwire bench`: the latency benchmark runner, a crate of its own.
//!
//! It drives any server that speaks docs/PROTOCOL.md (or a `tickwire serve` it
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
//! It uses no server internals: it talks to servers over the wire, and
//! takes only the tick model, the recording reader and the libc wrappers
//! from the tickwire library ([`tickwire_lib`], the one place naming them).
//! Keeping it out of the server library means editing it rebuilds neither
//! the library nor the server's tests.
//!
//! # Map
//!
//! - [`args`]: the command line, its checks, the load points of a sweep.
//! - [`book`]: the order-book scenario (`--book`).
//! - [`mod@run`]: one run in six phases (probe, connect, settle, publish,
//!   drain, report); this file runs them for every target, load and round.
//! - [`target`]: the server under test, found or started (`target::spawn`).
//! - [`plan`]: who subscribes to what, and the ticks' symbols.
//! - [`publisher`]: ticks sent on a schedule (synthetic or a recording);
//!   [`pacing`]: how it keeps that schedule (priority, absolute sleeps).
//! - [`clients`]: the subscribers; they receive, check and time every tick.
//! - [`ws`], [`scan`]: the lean WebSocket client and tick scanner.
//! - [`procstat`]: CPU and memory from `/proc`; the file-descriptor limit.
//! - [`progress`]: the progress line.
//! - [`report`], [`compare`], [`plot`], [`output`]: the tables, ratios,
//!   plots and files.
//! - [`watchdog`]: the hard limit on the whole command.
//! - [`pinning`]: the server and the runner on CPUs of their own.
//! - [`writes`]: deliveries per write (tickwire's `/metrics`, or `perf`).
//! - [`tls`]: `wss://` (the subscribers over TLS, a relay for the publisher).
//! - [`resume`]: the resume scenarios (reconnecting clients, the slow
//!   clients' `catchup` policy) and their report.
//! - [`maxrate`]: `--find-max-rate`, S2's highest rate under a p99 bound.
//! - [`stall`]: S3's memory at the stall's edges and `--stall-control`.

// The docs are written for the engineers who change this code: read them
// with `cargo doc --document-private-items`, where links to crate-private
// items resolve.
#![allow(rustdoc::private_intra_doc_links)]
#![deny(unsafe_code)]

mod args;
mod binance;
mod book;
mod clients;
mod compare;
mod maxrate;
mod output;
mod pacing;
mod pinning;
mod plan;
mod plot;
mod procstat;
mod progress;
mod publisher;
mod report;
mod resume;
mod run;
mod scan;
mod stall;
mod target;
mod tickwire_lib;
mod tls;
mod watchdog;
mod writes;
mod ws;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use self::args::BenchArgs;
use self::args::Load;
use self::binance::Protocol;
use self::compare::LETTERS;
use self::plan::{Plan, PlanInput};
use self::publisher::Source;
use self::report::RunData;
use self::run::RunSpec;
use self::target::Target;
use self::tickwire_lib::NewTick;

/// Why a benchmark could not run (or could not finish a run).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
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
    Recording(#[from] tickwire_lib::RecordingError),
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

/// Runs the benchmark; prints the tables, writes the files. Exits 0 when
/// every run completed, 2 when some are partial, 1 on an error.
pub fn run(args: BenchArgs) -> ExitCode {
    let result = if args.book {
        book::run(&args)
    } else {
        run_all(&args)
    };
    match result {
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

/// Every run: each load point, round after round, every target in turn
/// (A, B, C, A, B, C, …, so that drift on the machine hits all alike).
fn run_all(args: &BenchArgs) -> Result<bool, BenchError> {
    let channels = args::validate(args)?;
    tls::init(&args.tls).map_err(BenchError::Usage)?;
    let targets = targets(args)?;
    // Pinned before any thread starts, so that every one inherits it.
    let pinning = pinning::Pinning::from_flags(args.pin_server.as_ref(), args.pin_runner.as_ref())?;
    pinning.pin_runner().map_err(BenchError::Thread)?;
    let targets: Vec<Target> = targets
        .into_iter()
        .map(|t| t.with_workers(pinning.server.len()))
        .collect();
    let rounds = args.rounds.map_or(
        if targets.len() > 1 || args.find_max_rate.is_some() {
            3
        } else {
            1
        },
        |r| r as usize,
    );
    let loads = Load::all(args);

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
        Some(path) => Some(tickwire_lib::read_all(path)?),
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

    if let Some(range) = args.find_max_rate {
        return maxrate::search(maxrate::Setup {
            args,
            range,
            targets: &targets,
            pinning: &pinning,
            rounds,
            symbols,
            channels,
        });
    }
    // A control run beside every stalled one.
    let variants: &[bool] = if args.stall_control {
        &[false, true]
    } else {
        &[false]
    };
    // A hard bound on the whole command: runs are bounded one by one, this
    // catches what nothing else does.
    let per_run = args.connect_timeout + args.seconds + args.drain + 40.0
        // Starting a deployment, and waiting for its gateways' subscriptions.
        + if targets.iter().any(Target::is_deployment) { 40.0 } else { 0.0 };
    let budget = args
        .timeout
        .unwrap_or(per_run * (loads.len() * rounds * targets.len() * variants.len()) as f64 + 30.0);
    watchdog::start(Duration::from_secs_f64(budget));

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
        if targets.iter().any(|t| t.protocol() == Protocol::Binance) {
            binance::check_plan(&plan).map_err(BenchError::Usage)?;
        }
        let source = source(args, replay.as_deref(), channels, &plan, load)?;
        for round in 1..=rounds {
            for (ti, t) in targets.iter().enumerate() {
                // Stalled and control alternate which goes first by round.
                for k in 0..variants.len() {
                    let control = variants[(k + round + 1) % variants.len()];
                    let mut label = run_label(t, ti, targets.len(), load, round, rounds);
                    if args.stall_control {
                        label.push_str(if control { " control" } else { " stalled" });
                    }
                    let data = run::run_once(&RunSpec {
                        args,
                        pinning: &pinning,
                        target_index: ti,
                        target: t,
                        plan: &plan,
                        source: &source,
                        load,
                        round,
                        label: &label,
                        stall_control: control,
                    })?;
                    println!("{}", report::human(&data.report));
                    all_complete &= data.report.complete;
                    runs.push(data);
                }
            }
        }
    }

    let comparison = (targets.len() > 1).then(|| compare::compare(&runs, &targets, &loads));
    if let Some(c) = &comparison {
        println!("{}", c.text);
    }
    let control = args.stall_control.then(|| {
        let (text, json) = stall::control_summary(&runs, &targets);
        println!("{text}");
        ("stall_control", json)
    });
    output::write_outputs(args, &runs, &targets, comparison.as_ref(), control, started)?;
    Ok(all_complete)
}

/// The targets the flags name (`--compare`, `--url`, or a server the
/// runner starts), checked for what they need before anything starts.
fn targets(args: &BenchArgs) -> Result<Vec<Target>, BenchError> {
    let targets: Vec<Target> = match (&args.compare, &args.url) {
        (Some(list), _) => list
            .iter()
            .map(|s| Target::parse(s, &args.server_arg))
            .collect::<Result<_, _>>()
            .map_err(BenchError::Usage)?,
        (None, Some(u)) => match (args.protocol, &args.binance_url) {
            (Protocol::Tickwire, None) => {
                vec![Target::urls(u, args.publish_url.as_deref()).map_err(BenchError::Usage)?]
            }
            (Protocol::Binance, Some(b)) => {
                // The publisher uses the main endpoint (--url's first, or
                // --publish-url); subscribers the Binance one.
                let main =
                    Target::urls(u, args.publish_url.as_deref()).map_err(BenchError::Usage)?;
                let Target::Urls { publish, .. } = main else {
                    unreachable!("Target::urls makes URLs")
                };
                vec![
                    Target::urls(b, Some(&publish))
                        .and_then(Target::binance)
                        .map_err(BenchError::Usage)?,
                ]
            }
            (Protocol::Binance, None) => {
                return Err(BenchError::Usage(
                    "--protocol binance with --url needs --binance-url (the server's --binance-listen address)".into(),
                ));
            }
            (Protocol::Tickwire, Some(_)) => {
                return Err(BenchError::Usage(
                    "--binance-url is for --protocol binance".into(),
                ));
            }
        },
        (None, None) => {
            let t = Target::Spawn {
                extra: args.server_arg.clone(),
                own: Vec::new(),
            };
            vec![match args.protocol {
                Protocol::Tickwire => t,
                Protocol::Binance => t.binance().map_err(BenchError::Usage)?,
            }]
        }
    };
    if args.book && targets.iter().any(|t| t.protocol() == Protocol::Binance) {
        return Err(BenchError::Usage(
            "--book measures tickwire's book channel; Binance depth streams are not benchmarked"
                .into(),
        ));
    }
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
    Ok(targets)
}

/// What the publisher sends at one load point: synthetic ticks at its
/// rate, or the recording's ticks on the chosen channels.
fn source(
    args: &BenchArgs,
    replay: Option<&[NewTick]>,
    channels: u8,
    plan: &Plan,
    load: &Load,
) -> Result<Source, BenchError> {
    let Some(ticks) = replay else {
        return Ok(Source::Synthetic { rate: load.rate });
    };
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
    Ok(Source::Replay {
        ticks: Arc::new(keep),
        symbols: Arc::new(idx),
        speed: args.speed,
    })
}

/// A run's name: the target (with its letter when there are several), the
/// sweep point and the round.
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
