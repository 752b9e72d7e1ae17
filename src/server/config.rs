//! Server configuration: every tunable with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access::auth::Keys;

use crate::model::speed::Speed;

/// Where ticks come from besides `/v1/publish`.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedSource {
    /// The recording compiled into the binary, looped, with `ts` rebased
    /// to the wall clock.
    Embedded {
        /// Recorded pace (the default), a multiple of it, or as fast as possible.
        speed: Speed,
    },
    /// A recording on disk (any encoding `recording` reads).
    Recording {
        path: PathBuf,
        /// Recorded pace, a multiple of it, or as fast as possible.
        speed: Speed,
        /// Start again from the top at the end.
        looping: bool,
    },
    /// Publishers only.
    None,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The main listener (`ws://`, `http://`, or TLS); port 0 picks one.
    pub listen: SocketAddr,
    /// Fan-out workers (one thread and runtime each); 0 = one per core.
    pub workers: usize,
    /// Ticks the ingest ring holds (rounded up to a power of two).
    pub ring_capacity: usize,
    /// Largest inbound WebSocket message, after reassembly.
    pub max_message_bytes: usize,
    /// Most (symbol, channel) keys one connection may subscribe to by name.
    pub max_keys_per_connection: usize,
    /// Most distinct symbols the server tracks.
    pub max_symbols: usize,
    /// Most price levels per side one order book may hold; a book update
    /// that would exceed it is refused (`bad_book`). Default 5000.
    pub max_book_levels: usize,
    /// Build OHLCV bars from trades (`--no-bars` turns it off): bars take
    /// ring slots and history offsets beside the trades.
    pub bars: bool,
    /// Byte cap on one client's queued-for-socket frames.
    pub client_buffer_bytes: usize,
    /// Bounds of the shared history of recent ticks (`--history-bytes`,
    /// `--history-age`); default 256 MiB and 5 minutes.
    pub history: crate::pipeline::history::HistoryLimits,
    /// SO_SNDBUF for subscriber sockets (the kernel doubles it).
    pub socket_send_buffer: usize,
    /// A client behind for longer than this gets `lagging` and close 4000.
    pub evict_after: Duration,
    /// The coalescing window of a busy worker's fan-out passes
    /// (`--coalesce-max-window`, `--coalesce-busy`): off at light load.
    pub coalesce: crate::pipeline::fanout::CoalesceConfig,
    /// Leave transparent huge pages on (`--huge-pages`); off by default
    /// (`sys::disable_transparent_huge_pages`): a latency stall, not a gain.
    pub huge_pages: bool,
    /// Control messages per second per connection, sustained.
    pub control_rate_per_sec: u32,
    /// Control messages a connection may send in a burst.
    pub control_burst: u32,
    /// Time allowed to send a complete HTTP request head.
    pub handshake_timeout: Duration,
    /// After sending a Close, how long to wait for the peer before dropping it.
    pub close_timeout: Duration,
    /// WebSocket connections the server holds at once (503 beyond).
    pub max_connections: usize,
    /// WebSocket connections from one client IP address (503 beyond).
    pub max_connections_per_ip: usize,
    /// Publishers connected at once (503 beyond).
    pub max_publishers: usize,
    /// A connection silent this long is pinged at half of it and closed
    /// with 1008 at the end of it; zero turns the check off.
    pub idle_timeout: Duration,
    /// Conformance echo listener (Autobahn); `None` (the default) = off.
    pub echo_listen: Option<SocketAddr>,
    /// Largest message on the echo listener, after reassembly: Autobahn's
    /// cases 9.x send up to 16 MiB, far more than `/v1/stream` accepts.
    pub echo_max_message_bytes: usize,
    /// SSE streams get a `: heartbeat` comment this often.
    pub sse_heartbeat: Duration,
    /// The `retry:` field sent first on every SSE stream: how long a
    /// browser's `EventSource` waits before reconnecting after a drop (its
    /// own default is ~3 s, too long for a price feed; zero is sent as is).
    pub sse_retry: Duration,
    /// Where ticks come from besides publishers.
    pub feed: FeedSource,
    /// `--journal DIR` and its bounds: every tick written to disk, and read
    /// back at start-up; `None` (the default): a restart is a new epoch.
    pub journal: Option<crate::recordings::journal::JournalConfig>,
    /// Reference data for `/v1/symbols?ref=1`: loaded from `--symbols-file`
    /// (or empty), then replaced per symbol by publishers' `ref` messages.
    pub reference: Arc<crate::server::reference::Reference>,
    /// API keys and entitlements (`--config`); `None` = open server.
    pub auth: Option<Arc<Keys>>,
    /// The NATS bus and this node's role (`--bus`, `--role`); `None` = standalone.
    pub bus: Option<crate::bus::BusConfig>,
    /// Load balancers whose PROXY protocol header (v1 or v2) names the
    /// client (`--proxy-protocol-from`); empty (the default) = none: every
    /// connection is its own client, and a PROXY header is refused.
    pub proxy_protocol_from: crate::net::proxy_protocol::ProxyTrust,
    /// TLS for the main listener (`--tls-cert`/`--tls-key`); `None` =
    /// plain `ws://` and `http://`. The echo listener is always plain.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The Binance-compatible endpoint (`--binance-listen`); `None` = off.
    pub binance: Option<crate::binance::BinanceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid literal address"),
            workers: 0,
            // The ring keeps its last `capacity` ticks alive (a slot frees
            // its tick only when overwritten): 16 Ki ticks is ~6 MB, and
            // absorbs a 16 ms burst at 1 M ticks/s before publishers wait.
            ring_capacity: 16_384,
            max_message_bytes: 64 * 1024,
            max_keys_per_connection: 10_000,
            max_symbols: 1_000_000,
            max_book_levels: crate::pipeline::ingest::DEFAULT_MAX_BOOK_LEVELS,
            bars: true,
            client_buffer_bytes: 256 * 1024,
            history: crate::pipeline::history::HistoryLimits::default(),
            socket_send_buffer: 32 * 1024,
            evict_after: Duration::from_secs(5),
            coalesce: crate::pipeline::fanout::CoalesceConfig::default(),
            huge_pages: false,
            control_rate_per_sec: 50,
            control_burst: 100,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_publishers: 16,
            idle_timeout: Duration::from_secs(60),
            echo_listen: None,
            echo_max_message_bytes: 16 * 1024 * 1024,
            sse_heartbeat: Duration::from_secs(15),
            // 1 s: a reconnect within a second of a restart, and with
            // `Last-Event-ID` nothing is lost while waiting; a whole
            // audience reconnecting is spread by the browsers' own jitter.
            sse_retry: Duration::from_secs(1),
            feed: FeedSource::Embedded {
                speed: Speed::Factor(1.0),
            },
            journal: None,
            reference: Arc::default(),
            auth: None,
            bus: None,
            tls: None,
            binance: None,
            proxy_protocol_from: Default::default(),
        }
    }
}

impl Config {
    /// The largest message a subscriber may send: `max_message_bytes` plus
    /// room for a subscribe naming as many symbols (of the longest kind)
    /// as the connection may hold keys, so that a subscribe over the key
    /// limit is parsed and answered `too_many_symbols` with its count.
    /// Still a per-connection bound: about 400 KiB with the defaults.
    pub fn subscriber_max_message_bytes(&self) -> usize {
        let per_name = crate::model::tick::MAX_SYMBOL_LEN + 3; // quotes and comma
        self.max_message_bytes
            .saturating_add(self.max_keys_per_connection.saturating_mul(per_name))
    }

    /// The number of workers: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}
