//! The endpoint's listener: TLS when configured, then HTTP/1.1 (hyper):
//! `/ws…` and `/stream…` upgrade to a [`session`], REST
//! paths are answered by [`rest`].

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::binance::encode::TimeUnit;
use crate::binance::hub::{Hub, SubscribeError};
use crate::binance::session::{self, Opening};
use crate::binance::streams::StreamName;
use crate::binance::{BinanceConfig, Endpoint, depth, rest};
use crate::net::tls::TlsConn;
use crate::net::transport::Conn;
use crate::pipeline::ingest::{Ingest, IngestReader};
use crate::shutdown::Shutdown;

/// What every connection of the endpoint shares (one thread).
struct Shared {
    config: BinanceConfig,
    hub: Rc<RefCell<Hub>>,
    ingest: Arc<Ingest>,
    shutdown: Shutdown,
    /// Connection limits shared with the main listener.
    admission: Arc<crate::access::limits::Admission>,
}

/// Reads the ring and accepts connections until shutdown.
pub(super) async fn serve(e: Endpoint) {
    let hub = Rc::new(RefCell::new(Hub::new(
        e.config.symbols.clone(),
        e.config.limits.max_streams,
        e.config.limits.kline_rows,
        e.streams_gauge.clone(),
    )));
    tokio::task::spawn_local(read_ring(e.reader, hub.clone(), e.shutdown.clone()));
    let listener = TcpListener::from_std(e.listener).expect("registering the binance listener");
    let tls = e.tls.map(TlsAcceptor::from);
    let shared = Rc::new(Shared {
        config: e.config,
        hub,
        ingest: e.ingest,
        shutdown: e.shutdown.clone(),
        admission: e.admission,
    });
    let mut stop = e.shutdown;
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(error = %err, "binance: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.triggered() => break,
        };
        if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(e.socket_send_buffer)
        {
            tracing::debug!(%peer, error = %err, "binance: cannot set SO_SNDBUF");
        }
        let shared = shared.clone();
        let tls = tls.clone();
        let timeout = e.handshake_timeout;
        tokio::task::spawn_local(async move {
            match tls {
                None => connection(shared, Conn::Plain(stream), peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            connection(shared, Conn::Tls(Box::new(TlsConn::new(s))), peer).await
                        }
                        _ => tracing::debug!(%peer, "binance: TLS handshake failed"),
                    }
                }
            }
        });
    }
}

/// Ticks read from the ring at a time (as a fan-out worker).
const RING_BATCH: usize = 1024;

/// Batches delivered back to back before the reader gives way anyway.
const MAX_UNYIELDED_BATCHES: u32 = 8;

/// The hub's ring reader: every tick, in order, to the hub; and the depth
/// windows' clock: every 100 ms (even while the ring is busy) the hub
/// flushes its depth batches, every tenth time the 1000 ms ones too.
async fn read_ring(mut reader: IngestReader, hub: Rc<RefCell<Hub>>, mut shutdown: Shutdown) {
    let mut batch = Vec::new();
    let mut next_flush = Instant::now() + depth::FAST;
    let mut flushes = 0u32;
    // Batches delivered since the task last gave way to the sessions.
    let mut unyielded = 0;
    loop {
        let now = Instant::now();
        if now >= next_flush {
            flushes = flushes.wrapping_add(1);
            {
                let mut hub = hub.borrow_mut();
                hub.flush_depth(flushes.is_multiple_of(depth::FAST_PER_SLOW));
                hub.write_queued();
            }
            // A late flush (a long batch, a busy machine) moves the clock
            // on rather than flushing twice in a row.
            next_flush = (next_flush + depth::FAST).max(now + depth::FAST / 2);
            tokio::task::yield_now().await;
            continue;
        }
        batch.clear();
        if reader.read_batch(&mut batch, RING_BATCH) == 0 {
            unyielded = 0;
            tokio::select! {
                _ = reader.waker.notified() => continue,
                _ = tokio::time::sleep_until(next_flush) => continue,
                _ = shutdown.triggered() => return,
            }
        }
        {
            let mut hub = hub.borrow_mut();
            for item in &batch {
                hub.deliver(item);
            }
            // One write per connection for the whole batch.
            hub.write_queued();
        }
        // Let the sessions and the listener run between batches, but only
        // when the ring may hold more (as the main fan-out's worker): after
        // a short batch the next read usually finds it empty and the task
        // waits anyway, and an unconditional yield costs one more
        // `epoll_wait` per tick at light load.
        unyielded += 1;
        if batch.len() == RING_BATCH || unyielded >= MAX_UNYIELDED_BATCHES {
            unyielded = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Serves HTTP/1.1 on one connection.
async fn connection(shared: Rc<Shared>, io: Conn, peer: std::net::SocketAddr) {
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(shared, req, peer)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

fn json(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// `{"code":2,"msg":"Invalid request: …"}` with status 400.
fn invalid(msg: &str) -> Response<Full<Bytes>> {
    json(
        400,
        serde_json::json!({ "code": 2, "msg": format!("Invalid request: {msg}") })
            .to_string()
            .into_bytes(),
    )
}

fn route(
    shared: Rc<Shared>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    // Binance's REST time unit is a header (streams take `timeUnit=`).
    let unit = req
        .headers()
        .get("x-mbx-time-unit")
        .and_then(|v| v.to_str().ok())
        .and_then(TimeUnit::parse)
        .unwrap_or(TimeUnit::Millis);
    let hub = shared.hub.borrow();
    let flushed = |lower: &str| hub.depth_snapshot(lower);
    let answer = rest::answer(
        &rest::RestState {
            ingest: &shared.ingest,
            map: &shared.config.symbols,
            klines: hub.klines(),
            flushed: &flushed,
            unit,
        },
        &path,
        &query,
    );
    drop(hub);
    if let Some((status, body)) = answer {
        return json(status, body);
    }
    let opening = match opening(&path, &query) {
        Some(Ok(o)) => o,
        Some(Err(msg)) => return invalid(&msg),
        None => {
            return json(
                404,
                br#"{"code":-1,"msg":"Unknown path; streams are at /ws/<stream> and /stream?streams=, REST at /api/v3/"}"#.to_vec(),
            );
        }
    };
    if opening.streams.len() > shared.config.limits.max_streams {
        return invalid(
            &SubscribeError::TooMany {
                limit: shared.config.limits.max_streams,
                would: opening.streams.len(),
            }
            .to_string(),
        );
    }
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let upgrade = req
        .headers()
        .get("upgrade")
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(accept), true) = (key, upgrade) else {
        return invalid("this path is a WebSocket stream; send an Upgrade: websocket request");
    };
    let permit = match shared.admission.admit(peer.ip(), false, None) {
        Ok(p) => p,
        Err(refused) => {
            return json(
                503,
                serde_json::json!({ "code": -1003, "msg": refused.to_string() })
                    .to_string()
                    .into_bytes(),
            );
        }
    };
    tokio::task::spawn_local(async move {
        // Holds the connection's place until the session ends.
        let _permit = permit;
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        // Take the connection back from hyper, as the main endpoint does:
        // the hub writes shared frames to its socket directly. `read_buf`
        // holds bytes the client sent right after its request (copied: it
        // is a view into hyper's whole read buffer).
        let Ok(parts) = upgraded.downcast::<TokioIo<Conn>>() else {
            tracing::error!("binance: upgraded connection is not a tickwire Conn");
            return;
        };
        let early = Bytes::copy_from_slice(&parts.read_buf);
        drop(parts.read_buf);
        session::run(
            parts.io.into_inner(),
            early,
            shared.hub.clone(),
            shared.config.limits.clone(),
            opening,
            shared.shutdown.clone(),
        )
        .await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// The streams and options a stream URL asks for: `None` when the path is
/// not a stream path, `Err` when a name or option is invalid.
fn opening(path: &str, query: &str) -> Option<Result<Opening, String>> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| decode(v))
    };
    let (combined, list) = if path == "/ws" || path == "/ws/" {
        (false, String::new())
    } else if let Some(rest) = path.strip_prefix("/ws/") {
        (false, decode(rest))
    } else if path == "/stream" || path == "/stream/" {
        (true, param("streams").unwrap_or_default())
    } else {
        return None;
    };
    let unit = match param("timeUnit") {
        None => TimeUnit::Millis,
        Some(u) => match TimeUnit::parse(&u) {
            Some(u) => u,
            None => {
                return Some(Err(format!(
                    "invalid timeUnit `{u}`; expected MILLISECOND or MICROSECOND"
                )));
            }
        },
    };
    // Like Binance, a path segment that names no stream is accepted and
    // carries nothing: ccxt connects to `/ws/<connection number>` and
    // subscribes with SUBSCRIBE.
    let streams = list
        .split('/')
        .filter(|s| StreamName::parse(s).is_some())
        .map(str::to_owned)
        .collect();
    Some(Ok(Opening {
        streams,
        combined,
        unit,
    }))
}
