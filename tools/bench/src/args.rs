//! The command line: every flag of `tickwire bench`, the checks clap cannot
//! make, and the load points a `--sweep` expands to.

use std::path::PathBuf;

use crate::BenchError;
use crate::tickwire_lib::Speed;

/// `--book-depth`: a book subscriber's depth (docs/PROTOCOL.md, "Order
/// books").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BookDepth {
    /// The top 10 levels per side (the server's default).
    #[value(name = "10")]
    D10,
    /// The top 25 levels per side.
    #[value(name = "25")]
    D25,
    /// Every level.
    Full,
}

impl BookDepth {
    /// The subscribe request's `depth` value.
    pub fn json(self) -> &'static str {
        match self {
            BookDepth::D10 => "10",
            BookDepth::D25 => "25",
            BookDepth::Full => "\"full\"",
        }
    }

    /// As the report prints it.
    pub fn name(self) -> &'static str {
        match self {
            BookDepth::D10 => "10",
            BookDepth::D25 => "25",
            BookDepth::Full => "full",
        }
    }
}

/// `--sweep`: the parameter and its values. Boxed to keep the CLI enum small.
pub type Sweep = Box<(String, Vec<f64>)>;

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
    about = "Measure a feed server's latency under load (tickwire, or any server speaking docs/PROTOCOL.md)."
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
    /// What the subscribers speak: `tickwire` (docs/PROTOCOL.md) or
    /// `binance` (raw Binance streams, `<sym>@trade` and `<sym>@bookTicker`,
    /// on a server's `--binance-listen` endpoint; docs/BINANCE.md). The
    /// publisher always uses /v1/publish. With --url, --binance-url says
    /// where the Binance endpoint is; a server the runner starts gets
    /// `--binance-listen`. In --compare, write a target as `binance:self` or
    /// `binance:ws://B,pub:ws://M` instead.
    #[arg(long, default_value = "tickwire", value_parser = crate::binance::Protocol::parse, conflicts_with = "compare")]
    pub protocol: crate::binance::Protocol,
    /// The Binance endpoint(s) of a --url server (ws://HOST:PORT, comma-separated
    /// for several), for `--protocol binance`.
    #[arg(long, requires = "url")]
    pub binance_url: Option<String>,
    /// Measure 2 to 6 targets with the same load, alternating runs (A, B,
    /// C, A, B, C, …), and print medians and ratios (A/B for two targets,
    /// X/A for more). A target is `self` (a tickwire server started by the
    /// runner for each run), `nats:N` (a deployment started for each run:
    /// nats-server, an ingest node taking the publisher and N gateways
    /// taking the subscribers; nats:0 puts the subscribers on the ingest
    /// node), or URLs as for --url, with `pub:` marking the publisher's.
    /// `binance:` before `self` or URLs puts the subscribers on Binance
    /// streams (see --protocol), e.g. `--compare self binance:self`.
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
    #[arg(long, default_value = "max", value_parser = Speed::parse, requires = "replay")]
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
    /// S3: run every target twice per round, with the stall and as a
    /// control with the same --slow clients reading throughout, and report
    /// the stalled clients' share of the server's RSS growth (growth over
    /// the stall window minus the control's over the same window) and the
    /// fast clients' p99 during the stall against the control's.
    #[arg(long, requires = "slow", conflicts_with_all = ["find_max_rate", "book"])]
    pub stall_control: bool,
    /// The order-book scenario (src/book.rs): --symbols books, --clients
    /// at --book-depth on --per-client books each, --slow of them stalled,
    /// --rate one-level diffs/s, then the same load as trades.
    #[arg(long)]
    pub book: bool,
    /// With --book: the diffs touch the top N levels of a side (default
    /// 12: at depth 10, levels 11-12 are outside every subscriber's window,
    /// so a sixth of the updates reach no client). 10 keeps every diff in a
    /// depth-10 window, but not every diff changes the book: a removal of a
    /// level already removed changes nothing (the server does not sequence
    /// it), and a tenth of the updates also derive a `quote` nobody here
    /// subscribes to, so a sequenced tick still reaches fewer clients than
    /// a trade's 5 (`deliv./tick in` in the report). 1-20.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub book_levels: u64,
    /// With --book: the depth every book subscriber asks for. `full`
    /// receives every update that changes the book, so book and trades
    /// reach the same clients per update (equal fan-out).
    #[arg(long, value_enum, default_value_t = BookDepth::D10)]
    pub book_depth: BookDepth,
    /// Seed for subscriptions and ticks: the same seed gives the same load.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Client threads (default: one per core).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Runs per target and load point (default 1; 3 with --compare; with
    /// --book, book/trades phase pairs in alternating order).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Vary the load: clients=100,1000,10000 or rate=1000,5000,20000.
    #[arg(long, value_parser = parse_sweep)]
    pub sweep: Option<Sweep>,
    /// S2: find each target's highest rate (ticks/s, searched between LOW
    /// and HIGH) with every tick delivered to fast clients and p99 from
    /// intended send time under --p99-bound. A ladder doubling from LOW,
    /// then --rate-steps of bisection per target, each rate run --rounds
    /// times (default 3) alternating between targets; a rate passes when
    /// every round delivered every tick and the median round's p99 is
    /// under the bound. Reports each target's bracket (highest passing,
    /// lowest failing), every rate's rounds, and the ratio with the range
    /// the brackets allow. Prints the most time it can take first.
    #[arg(long, value_name = "LOW..HIGH", value_parser = crate::maxrate::parse_range, conflicts_with_all = ["sweep", "replay", "book"])]
    pub find_max_rate: Option<crate::maxrate::RateRange>,
    /// The p99 (from intended send time) a rate must stay under, for
    /// --find-max-rate.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = crate::resume::parse_duration)]
    pub p99_bound: std::time::Duration,
    /// Bisection steps after the ladder, for --find-max-rate (each halves
    /// a target's bracket, geometrically).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub rate_steps: u32,
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
    /// Pin the target's processes (every thread) to these CPUs, e.g. `0`
    /// or `0-1` (as `taskset -c`); a tickwire server the runner starts
    /// gets `--workers` = their number unless a server flag sets it.
    #[arg(long, value_name = "CPUS", value_parser = crate::pinning::parse_cpu_list)]
    pub pin_server: Option<crate::pinning::CpuList>,
    /// Pin the runner itself (client threads, publisher) to these CPUs;
    /// client threads default to their number.
    #[arg(long, value_name = "CPUS", value_parser = crate::pinning::parse_cpu_list)]
    pub pin_runner: Option<crate::pinning::CpuList>,
    /// The publisher thread's scheduling: `realtime` (SCHED_FIFO 10,
    /// falling back to nice -10, then to the ordinary scheduler; the
    /// report says which it got and why), `nice` or `normal` (as before
    /// this flag). A raised priority keeps the publisher on its schedule
    /// while client threads share its CPU, so that latency from intended
    /// send time is the server's and not the publisher's wake-up delay.
    #[arg(long, value_enum, default_value = "realtime")]
    pub publisher_priority: crate::pacing::PublisherPriority,
    /// The publisher spins this many µs at the end of each sleep, to cover
    /// the timer's own lateness (0: no spin). Only where the sleep is at
    /// least 8 times longer, so spinning takes at most an eighth of its CPU.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub publisher_spin_us: u64,
    /// Count the target's write and read system calls with `perf stat`
    /// (deliveries per write for any server; needs perf and tracing rights).
    #[arg(long)]
    pub count_syscalls: bool,
    /// How wss:// servers are verified (--ca-file), as for replay and record.
    #[command(flatten)]
    pub tls: crate::tickwire_lib::ClientTls,
    /// Reconnecting clients and the slow clients' policy.
    #[command(flatten)]
    pub resume: crate::resume::ResumeArgs,
}

impl BenchArgs {
    /// Seconds of warm-up (see `--warmup`).
    pub(crate) fn warmup(&self) -> f64 {
        self.warmup.unwrap_or((self.seconds / 5.0).min(1.0))
    }
}

/// One load point: the flags with a sweep value applied.
#[derive(Clone, Debug)]
pub(crate) struct Load {
    pub clients: usize,
    /// Ticks per second of a synthetic source.
    pub rate: f64,
    /// The swept parameter and its value here (`None` without --sweep).
    pub point: Option<(String, f64)>,
}

impl Load {
    /// The load points of a run: the flags, or one per --sweep value.
    pub(crate) fn all(args: &BenchArgs) -> Vec<Load> {
        match args.sweep.as_deref() {
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
        }
    }
}

/// Checks the flags that clap cannot; returns the channels as a mask
/// (1: trade, 2: quote).
pub(crate) fn validate(args: &BenchArgs) -> Result<u8, BenchError> {
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
    if args.stall_control && args.slow == 0 {
        return usage("--stall-control needs --slow clients to stall".into());
    }
    if args.threads == Some(0) || args.rounds == Some(0) {
        return usage("--threads and --rounds must be at least 1".into());
    }
    Ok(mask)
}
