//! The server: listeners, worker threads and lifecycle.
//!
//! One thread per core runs a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listener, its own clients and its own ring reader, so
//! per-client state needs no locks ([`worker`]). A separate ingest thread
//! runs recorded sources. HTTP is hyper's, routed from one table
//! ([`routes`]); WebSocket upgrades are answered in [`upgrade`] (with the
//! subprotocol negotiated there, which fastwebsockets leaves to us) and the
//! connection ([`Conn`](crate::net::transport::Conn): TCP, or TLS with
//! `--tls-cert`) is taken back from hyper for the [`session`]. `/v1/sse`
//! is answered by hand ([`sse`]). Both streaming front ends share one
//! [`subscriber`] core: authorization, admission, the client's
//! registration with the fan-out, and the subscribe step. The TLS
//! handshake runs in the connection's own task on its worker, under the
//! handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::access::auth::Role;
use crate::access::limits::Admission;
use crate::bus::Role as NodeRole;
use crate::model::symbols::SymbolTable;
use crate::pipeline::ingest::{Ingest, TickSource, run_source};
use crate::pipeline::stats::Stats;
use crate::recordings::replay::{RecordedFeed, RecordingError};
use crate::server::config::{Config, FeedSource};
use crate::server::worker::WorkerThread;
use crate::shutdown::{Shutdown, ShutdownTrigger, shutdown_pair};

pub mod config;
pub(crate) mod context;
mod heartbeat;
pub(crate) mod metrics;
pub mod reference;
mod routes;
pub mod serve_args;
pub(crate) mod session;
mod sse;
mod subscriber;
mod upgrade;
mod web;
mod worker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the feed: {0}")]
    Feed(#[from] RecordingError),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Journal(#[from] crate::recordings::journal::JournalError),
}

/// A running server.
pub struct ServerHandle {
    /// The main listener's address, as bound.
    addr: SocketAddr,
    /// The conformance echo listener's, when enabled.
    echo_addr: Option<SocketAddr>,
    /// Whether the main listener speaks TLS.
    tls: bool,
    /// Tells every thread to stop.
    trigger: ShutdownTrigger,
    /// Workers, the feed source and the bus link, joined at shutdown.
    threads: Vec<JoinHandle<()>>,
    /// The counters `/metrics` shows, for tests and benchmarks.
    stats: Arc<Stats>,
    /// Where ticks enter, with the symbol table (tests look symbols up).
    ingest: Arc<Ingest>,
    /// The connection counts, for [`ServerHandle::connections`].
    admission: Arc<Admission>,
    /// The Binance endpoint's address, when `--binance-listen` is set.
    binance_addr: Option<SocketAddr>,
    /// Streams subscribed on the Binance endpoint, over all connections.
    binance_streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the main listener speaks TLS (`wss://`, `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The conformance echo listener's address, when `echo_listen` is set.
    pub fn echo_addr(&self) -> Option<SocketAddr> {
        self.echo_addr
    }

    /// The Binance endpoint's address, when `binance` is configured.
    pub fn binance_addr(&self) -> Option<SocketAddr> {
        self.binance_addr
    }

    /// Streams subscribed on the Binance endpoint, over all connections.
    pub fn binance_streams(&self) -> usize {
        self.binance_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// WebSocket connections holding an admission place: (all, publishers).
    pub fn connections(&self) -> (usize, usize) {
        self.admission.counts()
    }

    /// Closes every connection with 1001 and waits for the threads to end.
    pub fn shutdown(self) {
        self.trigger.trigger();
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// [`ServerHandle::shutdown`], waiting at most `deadline`: returns the
    /// names of the threads still running then (a bus link waiting on a
    /// NATS server that is gone, say), which the caller abandons by exiting.
    pub fn shutdown_within(self, deadline: std::time::Duration) -> Vec<String> {
        self.trigger.trigger();
        let until = std::time::Instant::now() + deadline;
        let mut threads = self.threads;
        while !threads.is_empty() && std::time::Instant::now() < until {
            let (done, running): (Vec<_>, Vec<_>) =
                threads.into_iter().partition(|t| t.is_finished());
            for t in done {
                let _ = t.join();
            }
            threads = running;
            if !threads.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        threads
            .iter()
            .map(|t| t.thread().name().unwrap_or("unnamed").to_owned())
            .collect()
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Inherited by accepted sockets on Linux.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            // The kernel's wording ("Address already in use") names no
            // culprit; say what holds it as far as we know.
            std::io::Error::new(
                e.kind(),
                "address in use: another process listens there (started twice?)",
            )
        } else {
            e
        }
    })?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Starts the server on its own threads and returns once it is listening.
pub fn start(config: Config) -> Result<ServerHandle, ServerError> {
    let workers = config.worker_count();
    let config = Arc::new(config);
    let stats = Arc::new(Stats::default());
    let symbols = Arc::new(SymbolTable::new(config.max_symbols));
    let role = config.bus.as_ref().map_or(NodeRole::Standalone, |b| b.role);
    // An ingest node's bus link reads the ring like one more worker.
    // So do the Binance endpoint's hub and the journal's writer.
    let ring_readers = workers
        + usize::from(role == NodeRole::Ingest)
        + usize::from(config.binance.is_some())
        + usize::from(config.journal.is_some());
    // With bars, one trade may need several slots at once.
    let ring_capacity = if config.bars {
        config
            .ring_capacity
            .max(crate::pipeline::ingest::MOST_SLOTS_PER_TRADE)
    } else {
        config.ring_capacity
    };
    let (ingest, mut readers) = Ingest::with_history(
        ring_capacity,
        ring_readers,
        symbols,
        stats.clone(),
        config.history,
        crate::model::epoch::Epoch::generate(),
    );
    if role != NodeRole::Standalone {
        ingest.start_offsets_at(crate::model::tick::wall_clock_ns() / 1_000);
    }
    ingest.set_max_book_levels(config.max_book_levels);
    // A gateway's bars come built from its ingest node, over the bus.
    ingest.set_bars(config.bars && role != NodeRole::Gateway);
    let binance_reader = config
        .binance
        .is_some()
        .then(|| readers.pop().expect("a reader for the binance endpoint"));
    let journal_reader = config
        .journal
        .as_ref()
        .map(|_| readers.pop().expect("a reader for the journal"));
    // Applied after the recording's (below): they are newer.
    let journal_references = match &config.journal {
        Some(j) => {
            let references = restore_journal(j, &ingest, &stats)?;
            ingest.set_archive(Arc::new(crate::recordings::journal::Archive::new(
                j.dir.clone(),
                ingest.symbols().clone(),
                ingest.history().clone(),
                stats.clone(),
                j.readers,
            )));
            references
        }
        None => Vec::new(),
    };
    let bus_reader = (role == NodeRole::Ingest)
        .then(|| readers.pop().expect("a reader per worker plus the bus"));
    let (trigger, shutdown) = shutdown_pair();
    let mut threads_early = Vec::new();
    let admission = Admission::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.max_publishers,
    );

    let listeners = Listeners::bind(&config, workers)?;
    if let (Some(j), Some(reader)) = (&config.journal, journal_reader) {
        threads_early.push(crate::recordings::journal::start(
            j.clone(),
            ingest.clone(),
            reader,
            stats.clone(),
            config.reference.clone(),
            shutdown.clone(),
        )?);
    }
    let addr = listeners.addr;
    let source = feed_source(&config, role)?;
    for (sym, inst) in journal_references {
        if let Err(e) = config.reference.set(&sym, inst, config.max_symbols) {
            tracing::warn!(%sym, error = %e, "journaled reference data left out");
        }
    }

    let mut threads = threads_early;
    // The bus link starts before the sources: an ingest node must know
    // every key's last `seq` before it assigns the next one.
    let bus_config = config.bus.clone().map(|mut b| {
        b.name
            .get_or_insert_with(|| format!("tickwire-{}-{addr}", role.as_str()));
        b
    });
    let bus = match (bus_config, role) {
        (Some(bc), NodeRole::Ingest) => Some(crate::bus::start_ingest(
            bc,
            ingest.clone(),
            bus_reader.expect("an ingest node has a bus reader"),
            stats.clone(),
            shutdown.clone(),
        )?),
        (Some(bc), NodeRole::Gateway) => Some(crate::bus::start_gateway(
            bc,
            ingest.clone(),
            stats.clone(),
            shutdown.clone(),
        )?),
        _ => None,
    };
    let link = bus.as_ref().map(|b| b.link.clone());
    if let Some(b) = bus {
        threads.push(b.thread);
    }
    for (i, ((listener, echo), reader)) in listeners
        .main
        .into_iter()
        .zip(listeners.echo)
        .zip(readers)
        .enumerate()
    {
        let worker = WorkerThread {
            id: i,
            listener,
            echo,
            reader,
            config: config.clone(),
            ingest: ingest.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            admission: admission.clone(),
            bus: link.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("tickwire-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(ServerError::Thread)?;
        threads.push(t);
    }
    let mut binance_addr = None;
    let binance_streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let (Some(bc), Some(reader)) = (&config.binance, binance_reader) {
        let listener = bind(bc.listen).map_err(|source| ServerError::Bind {
            addr: bc.listen,
            source,
        })?;
        let at = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: bc.listen,
            source,
        })?;
        binance_addr = Some(at);
        tracing::info!(addr = %at, tls = config.tls.is_some(), "binance endpoint listening");
        let t = crate::binance::spawn(crate::binance::Endpoint {
            config: bc.clone(),
            listener,
            reader,
            ingest: ingest.clone(),
            tls: config.tls.clone(),
            handshake_timeout: config.handshake_timeout,
            socket_send_buffer: config.socket_send_buffer,
            admission: admission.clone(),
            shutdown: shutdown.clone(),
            streams_gauge: binance_streams.clone(),
        })
        .map_err(ServerError::Thread)?;
        threads.push(t);
    }
    if let Some(source) = source {
        threads.push(spawn_source(source, ingest.clone(), shutdown.clone())?);
    }
    if config.bars && role != NodeRole::Gateway {
        threads.push(spawn_bar_clock(ingest.clone(), shutdown.clone())?);
    }
    log_started(&config, addr, workers, role, listeners.echo_addr);
    Ok(ServerHandle {
        addr,
        echo_addr: listeners.echo_addr,
        tls: config.tls.is_some(),
        trigger,
        threads,
        stats,
        ingest,
        admission,
        binance_addr,
        binance_streams,
    })
}

/// Reads the journal back into `ingest` before anything is sequenced.
fn restore_journal(
    j: &crate::recordings::journal::JournalConfig,
    ingest: &Ingest,
    stats: &Stats,
) -> Result<crate::recordings::format::References, ServerError> {
    std::fs::create_dir_all(&j.dir).map_err(|source| {
        crate::recordings::journal::JournalError::Dir {
            dir: j.dir.display().to_string(),
            what: "cannot create the directory",
            source,
        }
    })?;
    let r = crate::recordings::journal::restore(&j.dir, ingest, stats)?;
    if r.epoch.is_none() && r.newest_offset > 0 {
        // A fresh epoch (a gap): offsets still move past every old one.
        ingest.start_offsets_at(r.newest_offset + 1);
    }
    tracing::info!(
        dir = %j.dir.display(),
        ticks = r.ticks,
        epoch = %ingest.epoch(),
        continued = r.epoch.is_some(),
        next_offset = ingest.newest_offset() + 1,
        references = r.references.len(),
        "journal restored"
    );
    Ok(r.references)
}

/// Every worker's listening sockets.
struct Listeners {
    /// The main listener's address (its port chosen here when it was 0).
    addr: SocketAddr,
    /// One `SO_REUSEPORT` socket per worker on `addr`.
    main: Vec<std::net::TcpListener>,
    /// The echo listener's sockets, one per worker, when it is enabled.
    echo: Vec<Option<std::net::TcpListener>>,
    /// The echo listener's address, when it is enabled.
    echo_addr: Option<SocketAddr>,
}

impl Listeners {
    fn bind(config: &Config, workers: usize) -> Result<Listeners, ServerError> {
        let bind_at = |addr: SocketAddr| {
            let l = bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
            let at = l
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            Ok::<_, ServerError>((l, at))
        };
        // The first listener picks the port (it may be 0); the others share it.
        let (first, addr) = bind_at(config.listen)?;
        let mut main = vec![first];
        for _ in 1..workers {
            main.push(bind_at(addr)?.0);
        }
        sole_listener(addr, &main)?;
        // The echo listener, like the main one, has one socket per worker.
        let mut echo: Vec<Option<std::net::TcpListener>> = (0..workers).map(|_| None).collect();
        let mut echo_addr = None;
        if let Some(want) = config.echo_listen {
            let mut at = want;
            for slot in &mut echo {
                let (l, bound) = bind_at(at)?;
                at = bound;
                *slot = Some(l);
            }
            sole_listener(at, &echo.iter().flatten().collect::<Vec<_>>())?;
            echo_addr = Some(at);
        }
        Ok(Listeners {
            addr,
            main,
            echo,
            echo_addr,
        })
    }
}

/// Refuses to start when a socket of another process shares `addr` with
/// our `SO_REUSEPORT` listeners (see [`crate::net::port_owner`]).
fn sole_listener<L: std::borrow::Borrow<std::net::TcpListener>>(
    addr: SocketAddr,
    ours: &[L],
) -> Result<(), ServerError> {
    let ours: Vec<&std::net::TcpListener> = ours.iter().map(|l| l.borrow()).collect();
    crate::net::port_owner::ensure_sole_listener(addr, &ours)
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The recorded source the node plays, if any. A recording's reference
/// records go into the reference table before play, in file order (the
/// newest of a symbol wins, over `--symbols-file`'s).
fn feed_source(
    config: &Config,
    role: NodeRole,
) -> Result<Option<Box<dyn TickSource>>, ServerError> {
    Ok(match &config.feed {
        // A gateway's ticks come from the bus.
        _ if role == NodeRole::Gateway => None,
        FeedSource::Embedded { speed } => Some(Box::new(RecordedFeed::embedded(*speed)?)),
        FeedSource::Recording {
            path,
            speed,
            looping,
        } => {
            let mut feed = RecordedFeed::from_file(path, *speed, *looping)?;
            for (sym, inst) in feed.take_references() {
                if let Err(e) = config.reference.set(&sym, inst, config.max_symbols) {
                    tracing::warn!(%sym, error = %e, "reference record of the recording left out");
                }
            }
            Some(Box::new(feed))
        }
        FeedSource::None => None,
    })
}

/// Runs a recorded source on its own thread and runtime.
fn spawn_source(
    source: Box<dyn TickSource>,
    ingest: Arc<Ingest>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name("tickwire-ingest".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the ingest runtime");
            let name = source.name().to_owned();
            if let Err(e) = rt.block_on(run_source(source, ingest, shutdown)) {
                tracing::error!(source = name, error = %e, "feed source stopped");
            }
        })
        .map_err(ServerError::Thread)
}

/// Runs the bar clock (throttled open bars, closes of quiet symbols' bars)
/// on its own small thread.
fn spawn_bar_clock(ingest: Arc<Ingest>, shutdown: Shutdown) -> Result<JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name("tickwire-bars".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the bar clock's runtime");
            rt.block_on(ingest.run_bar_clock(shutdown));
        })
        .map_err(ServerError::Thread)
}

/// The start-up log lines: where, how, and what is open to whom.
fn log_started(
    config: &Config,
    addr: SocketAddr,
    workers: usize,
    role: NodeRole,
    echo_addr: Option<SocketAddr>,
) {
    tracing::info!(%addr, workers, role = role.as_str(), tls = config.tls.is_some(), "tickwire listening");
    match &config.auth {
        Some(keys) => tracing::info!(
            subscriber_keys = keys.count(Role::Subscriber),
            publisher_keys = keys.count(Role::Publisher),
            "authentication on: /v1/stream and /v1/publish need an API key"
        ),
        None => {
            tracing::info!(
                "authentication off (no --config): anyone who can connect may subscribe and publish"
            );
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "listening beyond loopback without API keys: anyone who reaches this address may publish; pass --config FILE with keys"
                );
            }
        }
    }
    if let Some(echo) = echo_addr {
        tracing::warn!(%echo, "conformance echo listener on (for Autobahn; not for production)");
    }
}
