//! The `tickwire` command: `serve` runs the feed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tickwire::bus::Role;
use tickwire::server::config::{Config, FeedSource};
use tickwire::server::serve_args::{LogFormat, ServeArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's purge delay (`tickwire::sys::set_allocator_purge_delay`).
const ALLOCATOR_PURGE_DELAY_MS: i64 = 1000;

#[derive(Parser)]
#[command(
    name = "tickwire",
    version,
    about = "Low-latency market-data feed over WebSocket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: ServeArgs' size beside the others costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the feed server (with no flags: the bundled recording, looped, on 127.0.0.1:8080).
    Serve(ServeArgs),
    /// Convert vendor files (Lean, Tardis, Databento DBN) into a tickwire recording.
    Import(tickwire::recordings::import::ImportArgs),
    /// Play recordings into a server's /v1/publish, paced by their timestamps.
    Replay(tickwire::recordings::replay::client::ReplayArgs),
    /// Subscribe to a server and write the ticks it sends to a recording.
    Record(tickwire::recordings::record::RecordArgs),
    /// Print recordings as JSON lines (publish tick objects, one per line).
    Cat(tickwire::recordings::convert::CatArgs),
    /// Rewrite recordings in another encoding (`.twr` ⇄ `.jsonl`, `.zst` or not).
    Convert(tickwire::recordings::convert::ConvertArgs),
    /// Measure a feed server's latency under load (this one, or any server speaking docs/PROTOCOL.md).
    ///
    /// Runs `tickwire-bench` (tools/bench), which `cargo build` puts beside
    /// this binary; `tickwire bench --help` lists its flags.
    #[command(disable_help_flag = true)]
    Bench {
        /// Everything after `bench`, handed to tickwire-bench untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Logs on stderr, level from `RUST_LOG` (default `info`).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    tickwire::sys::set_allocator_purge_delay(ALLOCATOR_PURGE_DELAY_MS);
    let cli = Cli::parse();
    init_logs(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    });
    match cli.command {
        Command::Serve(args) => match args.into_config() {
            Ok((config, addr_file)) => serve(config, addr_file),
            Err(e) => {
                eprintln!("tickwire: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import(args) => tickwire::recordings::import::run(args),
        Command::Replay(args) => tickwire::recordings::replay::client::run(args),
        Command::Record(args) => tickwire::recordings::record::run(args),
        Command::Cat(args) => tickwire::recordings::convert::run_cat(args),
        Command::Convert(args) => tickwire::recordings::convert::run_convert(args),
        Command::Bench { args } => bench(args),
    }
}

/// `tickwire bench …`: the runner is a binary of its own, built beside this
/// one. This process becomes it (exec): same pid, same arguments, its exit
/// status is ours, so scripts and the runner's own children see no
/// difference from when it was a subcommand.
fn bench(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let runner = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("tickwire-bench"),
        Err(e) => {
            eprintln!("tickwire: cannot find this binary's directory (to run tickwire-bench): {e}");
            return ExitCode::FAILURE;
        }
    };
    if !runner.is_file() {
        eprintln!(
            "tickwire: `tickwire bench` runs {}, which does not exist: run `cargo build --release` at the repository root (it builds tickwire and tickwire-bench side by side)",
            runner.display()
        );
        return ExitCode::FAILURE;
    }
    // argv[0] is what the runner's usage lines show.
    let err = std::process::Command::new(&runner)
        .arg0("tickwire bench")
        .args(args)
        .exec();
    eprintln!("tickwire: cannot run {}: {err}", runner.display());
    ExitCode::FAILURE
}

/// Raises the open-file limit to the hard one (each connection holds a
/// descriptor), says what it got, and warns when `--max-connections` cannot
/// fit in it: past the limit, accepts fail with EMFILE instead of a 503.
fn check_fd_limit(config: &Config) {
    match tickwire::access::limits::raise_fd_limit() {
        Ok(l) => {
            tracing::info!(
                soft = l.soft,
                hard = l.hard,
                was = l.was,
                "open-file limit (RLIMIT_NOFILE)"
            );
            let workers = config.worker_count();
            if let Some(need) =
                tickwire::access::limits::fd_shortfall(config.max_connections, workers, l.soft)
            {
                tracing::warn!(
                    max_connections = config.max_connections,
                    fd_limit = l.soft,
                    need,
                    "--max-connections does not fit in the open-file limit: connections beyond about {} will fail to be accepted (EMFILE) instead of getting a 503; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections",
                    l.soft
                        .saturating_sub(tickwire::access::limits::fd_reserve(workers))
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

fn serve(config: Config, addr_file: Option<PathBuf>) -> ExitCode {
    check_fd_limit(&config);
    if !config.huge_pages
        && let Err(e) = tickwire::sys::disable_transparent_huge_pages()
    {
        tracing::warn!(error = %e, "could not turn transparent huge pages off (--huge-pages to leave them on)");
    }
    let feed = config.feed.clone();
    let gateway = config.bus.as_ref().is_some_and(|b| b.role == Role::Gateway);
    // Clients get their close grace, and a margin, before anything is cut.
    let deadline = SHUTDOWN_DEADLINE.max(config.close_timeout + Duration::from_secs(3));
    let handle = match tickwire::server::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("tickwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = addr_file {
        // Write then rename, so a reader never sees a partial address.
        let tmp = path.with_extension("tmp");
        let mut text = handle.addr().to_string();
        if let Some(b) = handle.binance_addr() {
            text.push_str(&format!("\nbinance {b}"));
        }
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            eprintln!("tickwire: cannot write --addr-file {}: {e}", path.display());
            handle.shutdown();
            return ExitCode::FAILURE;
        }
    }
    match feed {
        _ if gateway => tracing::info!("gateway: ticks come from the bus"),
        FeedSource::Embedded { .. } => {
            tracing::info!(
                "playing the bundled recording (replay-data/us-equities-20131007-open30.twr.zst) in a loop"
            )
        }
        FeedSource::Recording { path, .. } => {
            tracing::info!(file = %path.display(), "playing recording")
        }
        FeedSource::None => tracing::info!("no built-in feed; publish ticks on /v1/publish"),
    }
    let scheme = if handle.is_tls() { "wss" } else { "ws" };
    tracing::info!("subscribe at {scheme}://{}/v1/stream", handle.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the signal runtime");
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    tracing::info!("shutting down: closing every connection with 1001");
    let abandoned = handle.shutdown_within(deadline);
    if !abandoned.is_empty() {
        tracing::error!(
            ?deadline,
            abandoned = %abandoned.join(", "),
            "shutdown deadline passed: exiting without waiting for these threads (what they had not sent is lost)"
        );
        return ExitCode::FAILURE;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How long `serve` waits after SIGINT/SIGTERM for its threads to finish
/// before it exits anyway (naming them): shutdown is bounded whatever state
/// a connection or the bus is in. Longer when `--close-timeout` needs it
/// (that plus 3 s).
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
