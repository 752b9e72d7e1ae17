//! One worker thread: a single-threaded runtime with its own listening
//! sockets, fan-out worker and ring reader. It accepts connections, runs
//! each one's TLS handshake and first request in the connection's own task
//! (`GET /v1/sse` peeked at and answered by [`crate::server::sse`], the
//! rest through hyper and [`crate::server::routes`]), and at shutdown waits
//! for its sessions to close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::access::limits::Admission;
use crate::bus::BusLink;
use crate::net::proxy_protocol;
use crate::net::tls::TlsConn;
use crate::net::transport::Conn;
use crate::pipeline::fanout::{InterestSink, Worker, WorkerState};
use crate::pipeline::ingest::{Ingest, IngestReader};
use crate::pipeline::stats::Stats;
use crate::server::config::Config;
use crate::server::context::Context;
use crate::server::routes::{one_request_per_connection, route};
use crate::server::sse;
use crate::server::subscriber::SessionKind;
use crate::server::upgrade::upgrade;
use crate::shutdown::Shutdown;

/// Everything a worker thread starts with (see [`WorkerThread::run`]).
pub(crate) struct WorkerThread {
    /// The worker's number, in its thread's name and in log lines.
    pub(crate) id: usize,
    /// Its `SO_REUSEPORT` socket of the main listener.
    pub(crate) listener: std::net::TcpListener,
    /// Its socket of the conformance echo listener, when enabled.
    pub(crate) echo: Option<std::net::TcpListener>,
    /// Its reader of the ingest ring.
    pub(crate) reader: IngestReader,
    pub(crate) config: Arc<Config>,
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutdown: Shutdown,
    /// The connection limits, shared by every worker.
    pub(crate) admission: Arc<Admission>,
    /// The bus link, when the node has one (`--bus`).
    pub(crate) bus: Option<Arc<BusLink>>,
}

impl WorkerThread {
    /// Runs the worker on the calling thread until shutdown, and until its
    /// sessions have closed (bounded by the close grace).
    pub(crate) fn run(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a worker runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, self.serve());
    }

    async fn serve(self) {
        let WorkerThread {
            id,
            listener,
            echo,
            reader,
            config,
            ingest,
            stats,
            shutdown,
            admission,
            bus,
        } = self;
        let interest = bus
            .as_ref()
            .and_then(|b| b.interest.clone())
            .map(|i| i as Arc<dyn InterestSink>);
        let mut state = WorkerState::new(ingest.symbols().clone(), interest);
        state.attach_history(ingest.clone());
        let fanout = Rc::new(Worker {
            id,
            state: std::cell::RefCell::new(state),
            ingest,
            stats,
            evict_after: config.evict_after,
            close_timeout: config.close_timeout,
            coalesce: config.coalesce,
            status: bus.as_ref().map(|b| b.status()),
        });
        let ctx = Rc::new(Context {
            fanout,
            config,
            admission,
            bus,
        });
        let listener = TcpListener::from_std(listener).expect("registering the listener");
        let echo = echo.map(|l| TcpListener::from_std(l).expect("registering the echo listener"));
        tokio::task::spawn_local(ctx.fanout.clone().run_fanout(reader, shutdown.clone()));
        let tls = ctx.config.tls.clone().map(TlsAcceptor::from);
        let mut stop = shutdown.clone();
        loop {
            let (accepted, on_echo) = tokio::select! {
                accepted = listener.accept() => (accepted, false),
                accepted = accept_opt(&echo) => (accepted, true),
                _ = stop.triggered() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // The echo listener is always plain.
                    let tls = if on_echo { None } else { tls.clone() };
                    let conn =
                        serve_connection(ctx.clone(), stream, peer, shutdown.clone(), tls, on_echo);
                    tokio::task::spawn_local(conn);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        drop(echo);
        // Sessions close themselves with 1001 on shutdown; wait for them,
        // bounded by the close grace plus a margin.
        let deadline =
            tokio::time::Instant::now() + ctx.config.close_timeout + Duration::from_millis(500);
        while !ctx.fanout.state.borrow().clients.is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Accepts on an optional listener; never completes when there is none.
async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves one HTTP connection, over TLS when `tls` is set; `echo` marks the
/// conformance listener, where every path is the echo endpoint.
async fn serve_connection(
    ctx: Rc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: Shutdown,
    tls: Option<TlsAcceptor>,
    echo: bool,
) {
    let arrived = tokio::time::Instant::now();
    // One budget for the TLS handshake and the request head (slowloris).
    let budget = ctx.config.handshake_timeout;
    let left = || {
        budget
            .saturating_sub(arrived.elapsed())
            .max(Duration::from_millis(1))
    };
    let mut stream = stream;
    // Behind a load balancer: the client named by its PROXY header.
    let peer = if echo {
        peer
    } else {
        match proxy_protocol::client_address(
            &mut stream,
            peer,
            &ctx.config.proxy_protocol_from,
            left(),
        )
        .await
        {
            Ok(client) => client,
            Err(proxy_protocol::ProxyRefusal::Gone) => {
                // Silent within the budget (slowloris), or gone.
                if arrived.elapsed() >= budget {
                    Stats::add(&ctx.fanout.stats.handshake_timeouts, 1);
                    tracing::debug!(%peer, "no request head within the handshake timeout");
                }
                return;
            }
            Err(e) => {
                tracing::info!(%peer, reason = %e, "connection refused");
                return;
            }
        }
    };
    let mut conn = match tls {
        None => Conn::Plain(stream),
        Some(acceptor) => match tokio::time::timeout(left(), acceptor.accept(stream)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(TlsConn::new(s))),
            Ok(Err(e)) => {
                Stats::add(&ctx.fanout.stats.tls_handshakes_failed, 1);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                Stats::add(&ctx.fanout.stats.tls_handshakes_failed, 1);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if !echo {
        // `GET /v1/sse` is answered here, on the connection (see crate::server::sse).
        match sse::peek(&mut conn, left()).await {
            Some(sse::Peeked::Sse) => {
                sse::serve(ctx, conn, peer, shutdown, left()).await;
                return;
            }
            Some(_) => {}
            None => {
                // No request in time (slowloris, or a worker too busy to
                // read it), or the peer went away.
                if arrived.elapsed() >= budget {
                    Stats::add(&ctx.fanout.stats.handshake_timeouts, 1);
                    tracing::debug!(%peer, "no request head within the handshake timeout");
                }
                return;
            }
        }
    }
    let io = TokioIo::new(conn);
    let w = ctx.clone();
    let sd = shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let w = w.clone();
        let sd = sd.clone();
        async move {
            let mut r = if echo {
                upgrade(w, req, SessionKind::Echo, sd, peer)
            } else {
                route(w, req, sd, peer)
            };
            if r.status() != StatusCode::SWITCHING_PROTOCOLS {
                one_request_per_connection(&mut r);
            }
            Ok::<_, Infallible>(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // One budget for the whole head, the peek above included.
        .header_read_timeout(left())
        .max_buf_size(16 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = conn.await {
        if e.is_timeout() {
            Stats::add(&ctx.fanout.stats.handshake_timeouts, 1);
        }
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}
