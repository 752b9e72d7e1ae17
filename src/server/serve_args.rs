//! `tickwire serve`'s flags: each with its default, and how they become a
//! [`Config`]. Declared here, beside the configuration they fill, so the
//! binary's `main.rs` keeps only the commands and the start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::bus::{BusConfig, Role};
use crate::model::speed::Speed;
use crate::server::config::{Config, FeedSource};

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (write e.g. 5s, 250ms)"))
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT` with the host
/// resolved once, now (its first IPv4 address, else its first address:
/// `localhost:8080` listens on 127.0.0.1 even where `::1` is listed first).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "write an IP address and port: 127.0.0.1:8080, 0.0.0.0:8080 (every IPv4 interface) or [::1]:8080";
    if s.parse::<std::net::IpAddr>().is_ok() || !s.contains(':') {
        return Err(format!("`{s}` has no port; {hint}"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("`{s}`: cannot resolve the host name ({e}); {hint}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{s}`: the host name has no address; {hint}"))
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on: `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT` (resolved
    /// once at start, its first IPv4 address preferred).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Fan-out worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Play this recording (.twr or .jsonl, optionally .zst) instead of the bundled one.
    #[arg(long, value_name = "FILE", conflicts_with = "no_feed")]
    replay: Option<PathBuf>,
    /// Playback speed of the feed (--replay or the bundled recording): a
    /// factor (1 = recorded pace) or `max`.
    #[arg(long, default_value = "1", value_parser = Speed::parse, conflicts_with = "no_feed")]
    speed: Speed,
    /// Loop the --replay recording.
    #[arg(long = "loop", requires = "replay")]
    looping: bool,
    /// No built-in feed: only ticks from publishers on /v1/publish.
    #[arg(long)]
    no_feed: bool,
    /// Ticks the ingest ring holds (a power of two; publishers wait when it
    /// is full; at least 16 while bars are built).
    #[arg(long, default_value_t = 16_384)]
    ring_capacity: usize,
    /// Largest inbound WebSocket message in bytes (bigger: read through and
    /// answered `message_too_large`).
    #[arg(long, default_value_t = 65_536)]
    max_message_bytes: usize,
    /// Most (symbol, channel) keys a connection may subscribe to by name.
    #[arg(long, default_value_t = 10_000)]
    max_keys_per_connection: usize,
    /// Most distinct symbols the server tracks.
    #[arg(long, default_value_t = 1_000_000)]
    max_symbols: usize,
    /// Most price levels per side one order book may hold.
    #[arg(long, default_value_t = crate::pipeline::ingest::DEFAULT_MAX_BOOK_LEVELS)]
    max_book_levels: usize,
    /// Do not build OHLCV bars (the `bar_1s` … `bar_1d` channels) from
    /// trades; bars replayed from a recording still flow.
    #[arg(long)]
    no_bars: bool,
    /// Byte cap on one client's frames queued for its socket.
    #[arg(long, default_value_t = 262_144)]
    client_buffer_bytes: usize,
    /// Bytes of recent ticks held for resume and catch-up (about 450 bytes
    /// a tick); 0 turns the history off.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    history_bytes: usize,
    /// Append every sequenced tick to rotating files in DIR (recording
    /// format) and restore from them at start-up: a restart keeps the
    /// epoch, `seq` and offsets. Standalone servers only.
    #[arg(long, value_name = "DIR", conflicts_with = "bus")]
    journal: Option<std::path::PathBuf>,
    /// Start a new journal file past this size.
    #[arg(long, default_value_t = 64 * 1024 * 1024, requires = "journal")]
    journal_file_bytes: u64,
    /// Start a new journal file past this age.
    #[arg(long, default_value = "1h", value_parser = parse_duration, requires = "journal")]
    journal_file_age: Duration,
    /// Delete the oldest journal files while all of them hold more.
    #[arg(long, default_value_t = 1024 * 1024 * 1024, requires = "journal")]
    journal_bytes: u64,
    /// fdatasync the journal at most this long after a write (0 = every
    /// batch): what a power loss can lose. A kill -9 loses nothing.
    #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "journal")]
    journal_sync: Duration,
    /// Blocking threads that may read the journal at once for resumes
    /// older than the memory history (more wait their turn).
    #[arg(long, default_value_t = 4, requires = "journal")]
    journal_readers: usize,
    /// Ticks older than this leave the history.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    history_age: Duration,
    /// SO_SNDBUF for subscriber sockets, bytes (the kernel doubles it).
    #[arg(long, default_value_t = 32_768)]
    socket_send_buffer: usize,
    /// Close a client with 4000 after it has been behind this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    evict_after: Duration,
    /// Longest a busy worker's fan-out pass waits after the last one
    /// started, so that each write carries more ticks (0 = never wait).
    /// The window opens only while the worker thread uses
    /// `--coalesce-busy` of its core, or `--coalesce-paying-busy` where its
    /// clients' tick rate makes holding pay; at light load every tick is
    /// written at once.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    coalesce_max_window: Duration,
    /// Share of a core a worker thread uses (its CPU time) at which its
    /// coalescing window opens whatever its clients' tick rate, and which
    /// it then aims for (0 to 1): near saturation, where holding is what
    /// keeps the worker from queueing.
    #[arg(long, default_value_t = 0.9)]
    coalesce_busy: f64,
    /// The lower share at which the window opens when holding pays (see
    /// `--coalesce-min-yield`), and which it then aims for (above 0, at
    /// most `--coalesce-busy`).
    #[arg(long, default_value_t = 0.75)]
    coalesce_paying_busy: f64,
    /// Ticks per write that holding for `--coalesce-max-window` must be
    /// expected to buy, at the per-client tick rate the worker measures,
    /// for the window to open at `--coalesce-paying-busy` (at least 1; 2
    /// with 10 ms: clients getting 160 ticks/s or more).
    #[arg(long, default_value_t = 2.0)]
    coalesce_min_yield: f64,
    /// Let the kernel back the heap with transparent huge pages. Off by
    /// default: a huge page's first touch zeroes 2 MiB and may compact
    /// memory on the spot, a 1–10 ms stall of a worker mid-delivery.
    #[arg(long)]
    huge_pages: bool,
    /// Control messages per second per connection (sustained).
    #[arg(long, default_value_t = 50)]
    control_rate: u32,
    /// Control messages per connection in a burst.
    #[arg(long, default_value_t = 100)]
    control_burst: u32,
    /// Time a client has to send its HTTP request head.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// After sending Close, how long to wait for the peer's.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// WebSocket connections the server holds at once (HTTP 503 beyond).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// WebSocket connections from one client IP address (HTTP 503 beyond).
    #[arg(long, default_value_t = 100)]
    max_connections_per_ip: usize,
    /// Publishers connected at once (HTTP 503 beyond).
    #[arg(long, default_value_t = 16)]
    max_publishers: usize,
    /// Ping a connection silent for half of this; close it (1008) if it is
    /// still silent at the end. 0 = never.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Send SSE clients a `: heartbeat` comment this often.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    sse_heartbeat: Duration,
    /// Tell SSE clients (`retry:`) to wait this long before reconnecting
    /// after the stream drops (browsers default to ~3 s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    sse_retry: Duration,
    /// Also listen here for the conformance echo (Autobahn): every message
    /// on any path is sent back. Off by default; never expose it publicly.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    echo_listen: Option<SocketAddr>,
    /// Largest message the echo listener accepts, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, requires = "echo_listen")]
    echo_max_message_bytes: usize,
    /// Load balancers (CIDRs or addresses, comma-separated or repeated)
    /// whose PROXY protocol v1/v2 header names the real client: limits and
    /// logs then use that address. They must send it; anyone else sending
    /// one is refused. Default: none.
    #[arg(long, value_name = "CIDR", num_args = 1..)]
    proxy_protocol_from: Vec<String>,
    /// Also serve a Binance spot market-stream compatible endpoint here
    /// (`/ws/<stream>`, `/stream?streams=`, `/api/v3/…`; TLS too with
    /// --tls-cert). See docs/BINANCE.md.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    binance_listen: Option<SocketAddr>,
    /// A tickwire symbol's Binance name, BINANCE=TICKWIRE (e.g.
    /// ESM4=ES.FUT; repeatable). Default: the symbol's letters and digits.
    #[arg(long, value_name = "PAIR", requires = "binance_listen")]
    binance_symbol: Vec<String>,
    /// Incoming messages per second a Binance connection may send (more
    /// disconnects it, as on Binance).
    #[arg(long, default_value_t = 5, requires = "binance_listen")]
    binance_messages_per_sec: u32,
    /// Streams one Binance connection may listen to.
    #[arg(long, default_value_t = 1024, requires = "binance_listen")]
    binance_max_streams: usize,
    /// Stream events queued for one Binance connection; one whose queue is
    /// full cannot keep up and is disconnected. At least a ring batch (1024).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1024..), requires = "binance_listen")]
    binance_queue_len: u32,
    /// Closed klines kept per symbol and interval for /api/v3/klines
    /// (112 bytes each; Binance's `limit` is at most 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..), requires = "binance_listen")]
    binance_kline_rows: u32,
    /// How often the Binance endpoint pings each connection.
    #[arg(long, default_value = "20s", value_parser = parse_duration, requires = "binance_listen")]
    binance_ping_interval: Duration,
    /// A Binance connection not answering a ping with a pong this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "binance_listen")]
    binance_pong_timeout: Duration,
    /// Once listening, write the bound address (e.g. 127.0.0.1:41234) to this
    /// file: lets a parent process use `--listen 127.0.0.1:0`. With
    /// `--binance-listen`, a second line `binance ADDR` gives that address.
    #[arg(long, value_name = "FILE")]
    addr_file: Option<PathBuf>,
    /// API keys and the symbols each may see (TOML; see
    /// docs/tickwire.example.toml). Without it the server is open to anyone
    /// who can connect.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Reference data per symbol for /v1/symbols?ref=1 (TOML: tick_size,
    /// decimals, currency, lot_size; see docs/PROTOCOL.md).
    #[arg(long, value_name = "FILE")]
    symbols_file: Option<PathBuf>,
    /// Serve wss:// and https:// with this certificate chain (PEM, leaf
    /// first). Needs --tls-key; the listener then speaks TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log line format on stderr: `text` for people, `json` (one object per
    /// line) for log collectors. Levels come from RUST_LOG either way.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// NATS server(s) of a multi-node deployment, e.g. nats://127.0.0.1:4222
    /// (comma-separated for a cluster). Needs --role ingest or gateway.
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
    /// This node's part: `standalone` (one process, no bus), `ingest` (owns
    /// the sources and the sequencer, publishes to the bus) or `gateway`
    /// (serves subscribers from the bus; no sources).
    #[arg(long, value_enum, default_value_t = Role::Standalone)]
    role: Role,
    /// Subject prefix on the bus: ticks travel on PREFIX.trade.SYMBOL.
    #[arg(long, default_value = "tickwire", requires = "bus")]
    bus_prefix: String,
    /// JetStream stream holding each key's last value (for snapshots and
    /// for the ingest node's `seq` after a restart).
    #[arg(long, default_value = "TICKWIRE_LAST", requires = "bus")]
    bus_stream: String,
    /// Keep the last values in memory instead of on the NATS server's disk
    /// (faster; lost if NATS restarts).
    #[arg(long, requires = "bus")]
    bus_memory: bool,
    /// A gateway with no heartbeat from the ingest node for this long tells
    /// its clients the feed is stale.
    #[arg(long, default_value = "3s", value_parser = parse_duration, requires = "bus")]
    stale_after: Duration,
    /// CA certificate (PEM) that signed the NATS server's certificate: the
    /// bus connection then requires TLS and verifies the server with it.
    /// Credentials go in the URL (`tls://user:pass@host:4222`) and are
    /// never logged.
    #[arg(long, value_name = "FILE", requires = "bus")]
    bus_tls_ca: Option<PathBuf>,
    /// How long an ingest node waits for NATS at start (it must read every
    /// key's last seq before it assigns the next one).
    #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "bus")]
    bus_connect_timeout: Duration,
}

/// `--log-format`: how the server writes its log lines on stderr.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    /// The server's configuration from the flags (files named by them are
    /// read and checked here), and the `--addr-file` to write once listening.
    pub fn into_config(self) -> Result<(Config, Option<PathBuf>), String> {
        let auth = match &self.config {
            Some(path) => Some(std::sync::Arc::new(
                crate::access::auth::Keys::load(path).map_err(|e| format!("--config: {e}"))?,
            )),
            None => None,
        };
        let bus = match (self.bus, self.role) {
            (None, Role::Standalone) => None,
            (None, role) => {
                return Err(format!(
                    "--role {} needs --bus nats://HOST:PORT",
                    role.as_str()
                ));
            }
            (Some(_), Role::Standalone) => {
                return Err("--bus needs --role ingest or --role gateway".into());
            }
            (Some(url), role) => {
                if role == Role::Gateway && self.replay.is_some() {
                    return Err(
                        "a gateway has no sources (its ticks come from the bus): give --replay to the ingest node"
                            .into(),
                    );
                }
                let mut b = BusConfig::new(&url, role);
                b.prefix = self.bus_prefix;
                b.stream = self.bus_stream;
                b.file_storage = !self.bus_memory;
                b.stale_after = self.stale_after;
                b.connect_timeout = self.bus_connect_timeout;
                if let Some(ca) = &self.bus_tls_ca {
                    std::fs::metadata(ca)
                        .map_err(|e| format!("--bus-tls-ca {}: {e}", ca.display()))?;
                }
                b.tls_ca = self.bus_tls_ca;
                Some(b)
            }
        };
        let reference = std::sync::Arc::new(match &self.symbols_file {
            Some(path) => {
                crate::server::reference::Reference::load(path).map_err(|e| e.to_string())?
            }
            None => crate::server::reference::Reference::default(),
        });
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::net::tls::load(cert, key).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let feed = match (self.replay, self.no_feed) {
            (Some(path), _) => FeedSource::Recording {
                path,
                speed: self.speed,
                looping: self.looping,
            },
            (None, true) => FeedSource::None,
            (None, false) => FeedSource::Embedded { speed: self.speed },
        };
        let binance = match self.binance_listen {
            Some(listen) => Some(crate::binance::BinanceConfig {
                listen,
                limits: crate::binance::limits::Limits {
                    messages_per_sec: self.binance_messages_per_sec,
                    max_streams: self.binance_max_streams,
                    ping_interval: self.binance_ping_interval,
                    pong_timeout: self.binance_pong_timeout,
                    queue_len: self.binance_queue_len as usize,
                    kline_rows: self.binance_kline_rows as usize,
                },
                symbols: std::sync::Arc::new(
                    crate::binance::streams::SymbolMap::parse(&self.binance_symbol)
                        .map_err(|e| format!("--binance-symbol: {e}"))?,
                ),
            }),
            None => None,
        };
        let coalesce = crate::pipeline::fanout::CoalesceConfig {
            max_window: self.coalesce_max_window,
            busy: self.coalesce_busy,
            paying_busy: self.coalesce_paying_busy,
            min_yield: self.coalesce_min_yield,
        };
        coalesce.validate()?;
        let config = Config {
            coalesce,
            huge_pages: self.huge_pages,
            binance,
            listen: self.listen,
            workers: self.workers,
            ring_capacity: self.ring_capacity,
            max_message_bytes: self.max_message_bytes,
            max_keys_per_connection: self.max_keys_per_connection,
            max_symbols: self.max_symbols,
            max_book_levels: self.max_book_levels,
            bars: !self.no_bars,
            client_buffer_bytes: self.client_buffer_bytes,
            history: crate::pipeline::history::HistoryLimits {
                max_bytes: self.history_bytes,
                max_age: self.history_age,
            },
            socket_send_buffer: self.socket_send_buffer,
            evict_after: self.evict_after,
            control_rate_per_sec: self.control_rate,
            control_burst: self.control_burst,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_publishers: self.max_publishers,
            idle_timeout: self.idle_timeout,
            echo_listen: self.echo_listen,
            echo_max_message_bytes: self.echo_max_message_bytes,
            sse_heartbeat: self.sse_heartbeat,
            sse_retry: self.sse_retry,
            feed,
            journal: self
                .journal
                .map(|dir| crate::recordings::journal::JournalConfig {
                    dir,
                    file_bytes: self.journal_file_bytes,
                    file_age: self.journal_file_age,
                    max_bytes: self.journal_bytes,
                    sync_every: self.journal_sync,
                    readers: self.journal_readers,
                }),
            reference,
            auth,
            bus,
            tls,
            proxy_protocol_from: crate::net::proxy_protocol::ProxyTrust::parse(
                &self.proxy_protocol_from,
            )
            .map_err(|e| format!("--proxy-protocol-from: {e}"))?,
        };
        Ok((config, self.addr_file))
    }
}
