//! A Binance spot market-stream compatible endpoint (`--binance-listen`),
//! so unmodified Binance clients (python-binance, ccxt, Binance's
//! connector, cryptofeed) stream tickwire's feed: raw `/ws/<stream>`,
//! combined `/stream?streams=a/b`, live requests, and the REST calls they
//! make first. docs/BINANCE.md is the contract.
//!
//! It runs on its own thread with its own listener and ring reader: the
//! [`hub`] turns each tick into Binance frames once per stream and
//! encoding, queues them in each subscribed connection's [`outbox`] and
//! writes those once per batch; a [`session`] reads the connection's
//! requests; [`http`] routes a connection to a WebSocket session or a
//! [`rest`] answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub mod depth;
pub mod encode;
mod http;
pub mod hub;
pub mod klines;
pub mod limits;
pub(crate) mod outbox;
pub mod request;
pub mod rest;
mod session;
pub mod streams;

use crate::pipeline::ingest::{Ingest, IngestReader};
use crate::shutdown::Shutdown;

/// `--binance-listen` and its options.
#[derive(Clone, Debug)]
pub struct BinanceConfig {
    /// Where the endpoint listens; port 0 picks one.
    pub listen: SocketAddr,
    /// Its per-connection limits.
    pub limits: limits::Limits,
    /// tickwire ↔ Binance symbol names.
    pub symbols: Arc<streams::SymbolMap>,
}

impl BinanceConfig {
    /// The endpoint at `listen` with Binance's limits and the default names.
    pub fn at(listen: SocketAddr) -> BinanceConfig {
        BinanceConfig {
            listen,
            limits: limits::Limits::default(),
            symbols: Arc::default(),
        }
    }
}

/// What the endpoint's thread needs.
pub(crate) struct Endpoint {
    pub(crate) config: BinanceConfig,
    /// The bound listener.
    pub(crate) listener: std::net::TcpListener,
    /// Its own end of the ingest ring.
    pub(crate) reader: IngestReader,
    /// For REST snapshots and the symbol list.
    pub(crate) ingest: Arc<Ingest>,
    /// `--tls-cert`: the endpoint speaks TLS too.
    pub(crate) tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `--socket-send-buffer`: SO_SNDBUF of each connection, so what a slow
    /// client holds in the kernel is bounded as on the main listener.
    pub(crate) socket_send_buffer: usize,
    /// Time allowed for a TLS handshake and request head.
    pub(crate) handshake_timeout: std::time::Duration,
    pub(crate) shutdown: Shutdown,
    /// The server's connection limits (`--max-connections`,
    /// `--max-connections-per-ip`): Binance connections count too.
    pub(crate) admission: Arc<crate::access::limits::Admission>,
    /// Streams subscribed, over all connections.
    pub(crate) streams_gauge: Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts the endpoint's thread.
pub(crate) fn spawn(endpoint: Endpoint) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tickwire-binance".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the binance runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, http::serve(endpoint));
        })
}
