//! The server: listeners, worker threads, HTTP routing and lifecycle.
//!
//! One thread per core runs a single-threaded tokio runtime with its own
//! `SO_REUSEPORT` listener, its own clients and its own ring reader, so
//! per-client state needs no locks. A separate ingest thread runs recorded
//! sources. HTTP is hyper's; WebSocket upgrades are answered here (with the
//! subprotocol negotiated here, which fastwebsockets leaves to us) and the
//! connection ([`Conn`]: TCP, or TLS with `--tls-cert`) is taken back from
//! hyper for the session. The TLS handshake runs in the connection's own
//! task on its worker, under the handshake timeout.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::access::auth::{Identity, Role, presented_key};
use crate::access::limits::Admission;
use crate::bus::Role as NodeRole;
use crate::model::symbols::SymbolTable;
use crate::net::tls::TlsConn;
use crate::net::transport::Conn;
use crate::pipeline::fanout::{InterestSink, Worker, WorkerState};
use crate::pipeline::ingest::{Ingest, IngestReader, TickSource, run_source};
use crate::pipeline::stats::{Refusal, Stats};
use crate::recordings::replay::{RecordedFeed, RecordingError};
use crate::server::config::{Config, FeedSource};
use crate::server::context::Context;
use crate::server::session::{BIN_PROTOCOL, JSON_PROTOCOL, SessionKind};
use crate::shutdown::{Shutdown, ShutdownTrigger, shutdown_pair};
use crate::wire::encode::Encoding;

pub mod config;
pub mod context;
pub mod metrics;
pub mod session;
pub mod sse;
pub mod web;

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
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    echo_addr: Option<SocketAddr>,
    tls: bool,
    trigger: ShutdownTrigger,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
    ingest: Arc<Ingest>,
    admission: Arc<Admission>,
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
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Inherited by accepted sockets on Linux.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
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
    let ring_readers = workers + usize::from(role == NodeRole::Ingest);
    let (ingest, mut readers) =
        Ingest::new(config.ring_capacity, ring_readers, symbols, stats.clone());
    let bus_reader = (role == NodeRole::Ingest)
        .then(|| readers.pop().expect("a reader per worker plus the bus"));
    let (trigger, shutdown) = shutdown_pair();
    let admission = Admission::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.max_publishers,
    );

    // The first listener picks the port (it may be 0); the others share it.
    let first = bind(config.listen).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = first.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(addr).map_err(|source| ServerError::Bind { addr, source })?);
    }
    // The echo listener, like the main one, has one socket per worker.
    let mut echo_listeners: Vec<Option<std::net::TcpListener>> =
        (0..workers).map(|_| None).collect();
    let mut echo_addr = None;
    if let Some(want) = config.echo_listen {
        let mut at = want;
        for slot in &mut echo_listeners {
            let l = bind(at).map_err(|source| ServerError::Bind { addr: at, source })?;
            at = l
                .local_addr()
                .map_err(|source| ServerError::Bind { addr: at, source })?;
            *slot = Some(l);
        }
        echo_addr = Some(at);
    }

    let source: Option<Box<dyn TickSource>> = match &config.feed {
        // A gateway's ticks come from the bus.
        _ if role == NodeRole::Gateway => None,
        FeedSource::Embedded => Some(Box::new(RecordedFeed::embedded_default()?)),
        FeedSource::Recording {
            path,
            speed,
            looping,
        } => Some(Box::new(RecordedFeed::from_file(path, *speed, *looping)?)),
        FeedSource::None => None,
    };

    let mut threads = Vec::new();
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
        .into_iter()
        .zip(echo_listeners)
        .zip(readers)
        .enumerate()
    {
        let ctx = (
            config.clone(),
            ingest.clone(),
            stats.clone(),
            shutdown.clone(),
            admission.clone(),
            link.clone(),
        );
        let t = std::thread::Builder::new()
            .name(format!("tickwire-worker-{i}"))
            .spawn(move || {
                run_worker(
                    i,
                    Listeners {
                        main: listener,
                        echo,
                    },
                    reader,
                    ctx.0,
                    ctx.1,
                    ctx.2,
                    ctx.3,
                    ctx.4,
                    ctx.5,
                )
            })
            .map_err(ServerError::Thread)?;
        threads.push(t);
    }
    if let Some(source) = source {
        let ingest = ingest.clone();
        let shutdown = shutdown.clone();
        let t = std::thread::Builder::new()
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
            .map_err(ServerError::Thread)?;
        threads.push(t);
    }
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
    Ok(ServerHandle {
        addr,
        echo_addr,
        tls: config.tls.is_some(),
        trigger,
        threads,
        stats,
        ingest,
        admission,
    })
}

/// One worker's listening sockets.
struct Listeners {
    main: std::net::TcpListener,
    /// The conformance echo listener, when enabled.
    echo: Option<std::net::TcpListener>,
}

/// Accepts on an optional listener; never completes when there is none.
async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_worker(
    id: usize,
    listeners: Listeners,
    reader: IngestReader,
    config: Arc<Config>,
    ingest: Arc<Ingest>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    admission: Arc<Admission>,
    bus: Option<Arc<crate::bus::BusLink>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a worker runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let interest = bus
            .as_ref()
            .and_then(|b| b.interest.clone())
            .map(|i| i as Arc<dyn InterestSink>);
        let fanout = Rc::new(Worker {
            id,
            state: std::cell::RefCell::new(WorkerState::with_interest(interest)),
            ingest,
            stats,
            evict_after: config.evict_after,
            close_timeout: config.close_timeout,
            status: bus.as_ref().map(|b| b.status()),
        });
        let worker = Rc::new(Context {
            fanout,
            config,
            admission,
            bus,
        });
        let listener = TcpListener::from_std(listeners.main).expect("registering the listener");
        let echo = listeners
            .echo
            .map(|l| TcpListener::from_std(l).expect("registering the echo listener"));
        tokio::task::spawn_local(worker.fanout.clone().run_fanout(reader, shutdown.clone()));
        let tls = worker.config.tls.clone().map(TlsAcceptor::from);
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::task::spawn_local(serve_http(worker.clone(), stream, peer, shutdown.clone(), tls.clone(), false));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                accepted = accept_opt(&echo) => match accepted {
                    Ok((stream, peer)) => {
                        tokio::task::spawn_local(serve_http(worker.clone(), stream, peer, shutdown.clone(), None, true));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = stop.triggered() => break,
            }
        }
        drop(listener);
        drop(echo);
        // Sessions close themselves with 1001 on shutdown; wait for them,
        // bounded by the close grace plus a margin.
        let deadline = tokio::time::Instant::now() + worker.config.close_timeout + std::time::Duration::from_millis(500);
        while !worker.fanout.state.borrow().clients.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
}

/// Serves one HTTP connection, over TLS when `tls` is set; `echo` marks the
/// conformance listener, where every path is the echo endpoint.
async fn serve_http(
    worker: Rc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: Shutdown,
    tls: Option<TlsAcceptor>,
    echo: bool,
) {
    let arrived = tokio::time::Instant::now();
    // One budget for the TLS handshake and the request head (slowloris).
    let budget = worker.config.handshake_timeout;
    let left = || {
        budget
            .saturating_sub(arrived.elapsed())
            .max(std::time::Duration::from_millis(1))
    };
    let mut conn = match tls {
        None => Conn::Plain(stream),
        Some(acceptor) => match tokio::time::timeout(left(), acceptor.accept(stream)).await {
            Ok(Ok(s)) => Conn::Tls(Box::new(TlsConn::new(s))),
            Ok(Err(e)) => {
                Stats::add(&worker.fanout.stats.tls_handshakes_failed, 1);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                Stats::add(&worker.fanout.stats.tls_handshakes_failed, 1);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if !echo {
        // `GET /v1/sse` is answered here, on the connection (see crate::server::sse).
        match crate::server::sse::peek(&mut conn, left()).await {
            Some(crate::server::sse::Peeked::Sse) => {
                crate::server::sse::serve(worker, conn, peer, shutdown, left()).await;
                return;
            }
            Some(_) => {}
            None => {
                // No request in time (slowloris, or a worker too busy to
                // read it), or the peer went away.
                if arrived.elapsed() >= budget {
                    Stats::add(&worker.fanout.stats.handshake_timeouts, 1);
                    tracing::debug!(%peer, "no request head within the handshake timeout");
                }
                return;
            }
        }
    }
    let io = TokioIo::new(conn);
    let w = worker.clone();
    let sd = shutdown.clone();
    let service = hyper::service::service_fn(move |req| {
        let w = w.clone();
        let sd = sd.clone();
        async move {
            let mut r = if echo {
                upgrade(w, req, SessionKind::Echo, sd, peer.ip())
            } else {
                route(w, req, sd, peer.ip())
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
            Stats::add(&worker.fanout.stats.handshake_timeouts, 1);
        }
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

type Body = Full<Bytes>;

/// Adds `close` to a plain HTTP response's `Connection` header, so hyper
/// ends the connection after it: every request is then the first on its
/// connection, which is where `GET /v1/sse` is recognised (crate::server::sse).
/// (Not `keep_alive(false)`: hyper would then also mark a 101 `close`.)
fn one_request_per_connection(r: &mut Response<Body>) {
    let value = match r.headers().get(header::CONNECTION) {
        Some(v) => format!("{}, close", v.to_str().unwrap_or("")),
        None => "close".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::CONNECTION, v);
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(
    worker: Rc<Context>,
    req: Request<Incoming>,
    shutdown: Shutdown,
    peer: IpAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/v1/stream" => upgrade(worker, req, SessionKind::Subscriber, shutdown, peer),
        "/v1/publish"
            if worker
                .bus
                .as_ref()
                .is_some_and(|b| b.role == NodeRole::Gateway) =>
        {
            text(
                StatusCode::MISDIRECTED_REQUEST,
                "this node is a gateway (--role gateway): its ticks come from the bus; publish to the ingest node\n",
            )
        }
        "/v1/publish" => upgrade(worker, req, SessionKind::Publisher, shutdown, peer),
        "/" | "/index.html" | "/ticker.js" | "/ticker.css" if req.method() == Method::GET => {
            crate::server::web::asset(&path)
        }
        "/healthz" if req.method() == Method::GET => {
            if shutdown.is_triggered() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                match worker.bus.as_ref().map(|b| b.current_status()) {
                    // Still serving: every gateway is stale when the ingest
                    // node is down, so a load balancer gains nothing by
                    // failing this one.
                    Some(crate::model::feed::FeedStatus::Stale { reason, .. }) => {
                        text(StatusCode::OK, format!("ok (feed stale: {reason})\n"))
                    }
                    _ => text(StatusCode::OK, "ok\n"),
                }
            }
        }
        "/v1/symbols" if req.method() == Method::GET => {
            let mut o = Vec::with_capacity(256);
            o.push(b'[');
            for (i, (name, _)) in worker.fanout.ingest.symbols().seen().iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                crate::wire::json::json_string(&mut o, name);
            }
            o.push(b']');
            let mut r = Response::new(Full::new(Bytes::from(o)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        "/metrics" if req.method() == Method::GET => {
            let body = crate::server::metrics::render(
                &worker.fanout.stats,
                &worker.fanout.ingest,
                worker.config.ring_capacity,
                worker.admission.counts().0,
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::server::metrics::CONTENT_TYPE),
            );
            r
        }
        crate::server::sse::PATH if req.method() == Method::GET => text(
            StatusCode::BAD_REQUEST,
            "open /v1/sse as the first request of a connection\n",
        ),
        "/healthz"
        | "/v1/symbols"
        | "/metrics"
        | crate::server::sse::PATH
        | "/"
        | "/index.html"
        | "/ticker.js"
        | "/ticker.css" => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} accepts GET only\n"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint: {path}\nendpoints: /v1/stream, /v1/publish (WebSocket), /v1/sse (Server-Sent Events), /v1/symbols, /healthz, /metrics, /\n"
            ),
        ),
    }
}

/// Subprotocols offered in `Sec-WebSocket-Protocol` (all header lines).
fn offered_protocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks the request's API key when the server has keys: `Ok(None)` on an
/// open server (and the echo listener), `Ok(Some(key))` for a key that may
/// use this endpoint, else the 401 or 403 to answer with. The key itself is
/// never logged, only its configured name.
// The error is the response itself, built once and returned as is; boxing
// it would only add an allocation to a refusal.
#[allow(clippy::result_large_err)]
fn authenticate(
    worker: &Context,
    req: &Request<Incoming>,
    kind: SessionKind,
    peer: IpAddr,
) -> Result<Option<Arc<Identity>>, Response<Body>> {
    let Some(keys) = &worker.config.auth else {
        return Ok(None);
    };
    let want = match kind {
        SessionKind::Subscriber => Role::Subscriber,
        SessionKind::Publisher => Role::Publisher,
        SessionKind::Echo => return Ok(None),
    };
    let unauthorized = |challenge: &'static str, why: &str| {
        Stats::add(
            &worker.fanout.stats.upgrades_refused[Refusal::Unauthorized as usize],
            1,
        );
        tracing::debug!(%peer, path = req.uri().path(), why, "upgrade refused: 401");
        let mut r = text(StatusCode::UNAUTHORIZED, format!("{why}\n"));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        r
    };
    let presented = presented_key(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        req.uri().query(),
    );
    let Some(presented) = presented else {
        return Err(unauthorized(
            r#"Bearer realm="tickwire""#,
            "an API key is required: send `Authorization: Bearer KEY` or add `?token=KEY` to the URL",
        ));
    };
    let Some(identity) = keys.find(presented) else {
        return Err(unauthorized(
            r#"Bearer realm="tickwire", error="invalid_token""#,
            "the API key is not valid",
        ));
    };
    if identity.role != want {
        tracing::info!(%peer, key = identity.name, path = req.uri().path(), "upgrade refused: 403");
        Stats::add(
            &worker.fanout.stats.upgrades_refused[Refusal::Forbidden as usize],
            1,
        );
        let why = match identity.role {
            Role::Subscriber => "this API key may subscribe (/v1/stream) but not publish",
            Role::Publisher => "this API key may publish (/v1/publish) but not subscribe",
        };
        return Err(text(StatusCode::FORBIDDEN, format!("{why}\n")));
    }
    Ok(Some(identity))
}

fn upgrade(
    worker: Rc<Context>,
    mut req: Request<Incoming>,
    kind: SessionKind,
    shutdown: Shutdown,
    peer: IpAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} is a WebSocket endpoint: open it with GET and `Upgrade: websocket`\n"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "{path} is a WebSocket endpoint: send `Connection: Upgrade` and `Upgrade: websocket` (a WebSocket client does this)\n"
            ),
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return r;
    }
    if shutdown.is_triggered() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        );
    }
    let identity = match authenticate(&worker, &req, kind, peer) {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    let offered = offered_protocols(&req);
    // Binary wins when both are offered (docs/PROTOCOL.md); nothing offered
    // means JSON without a header (RFC 6455). Only subscribers negotiate.
    let chosen = if kind != SessionKind::Subscriber || offered.is_empty() {
        None
    } else if offered.iter().any(|p| p == BIN_PROTOCOL) {
        Some(Encoding::Binary)
    } else if offered.iter().any(|p| p == JSON_PROTOCOL) {
        Some(Encoding::Json)
    } else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "none of the offered subprotocols ({}) is supported; offer {BIN_PROTOCOL} or {JSON_PROTOCOL}, or none\n",
                offered.join(", ")
            ),
        );
    };
    let encoding = chosen.unwrap_or_default();
    // Counted from here until the session ends (the permit moves into it).
    let permit =
        match worker
            .admission
            .admit_key(peer, kind == SessionKind::Publisher, identity.as_deref())
        {
            Ok(p) => p,
            Err(refused) => {
                tracing::debug!(%peer, %refused, "upgrade refused");
                Stats::add(
                    &worker.fanout.stats.upgrades_refused[Refusal::Limit as usize],
                    1,
                );
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{refused}\n"));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            }
        };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            let version_wrong = matches!(
                e,
                fastwebsockets::WebSocketError::InvalidSecWebsocketVersion
            );
            let mut r = text(
                if version_wrong {
                    StatusCode::UPGRADE_REQUIRED
                } else {
                    StatusCode::BAD_REQUEST
                },
                format!("WebSocket handshake refused: {e}\n"),
            );
            if version_wrong {
                r.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return r;
        }
    };
    tokio::task::spawn_local(async move {
        let _permit = permit;
        let ws = match fut.await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        // Take the connection back from hyper: the session writes
        // pre-encoded frames to it directly. `read_buf` holds bytes the
        // client sent right after its request; they are read first.
        let upgraded = ws.into_inner().into_inner();
        match upgraded.downcast::<TokioIo<Conn>>() {
            Ok(parts) => {
                // A copy: `read_buf` is a view into hyper's whole read
                // buffer, and would keep it alive for the connection's life.
                let early = Bytes::copy_from_slice(&parts.read_buf);
                drop(parts.read_buf);
                session::run(
                    worker,
                    parts.io.into_inner(),
                    early,
                    kind,
                    encoding,
                    identity,
                    shutdown,
                )
                .await;
            }
            Err(_) => tracing::error!("upgraded connection is not a tickwire Conn"),
        }
    });
    let (mut parts, _) = response.into_parts();
    if let Some(e) = chosen {
        parts.headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(e.protocol()),
        );
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}
