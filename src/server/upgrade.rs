//! The WebSocket upgrade: the checks before it (method, headers, shutdown,
//! API key, subprotocol, connection limits), the 101 answer with the
//! negotiated subprotocol (which fastwebsockets leaves to us), and the
//! session started on the connection taken back from hyper.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::net::transport::Conn;
use crate::server::context::Context;
use crate::server::routes::{Body, text};
use crate::server::session;
use crate::server::subscriber::{
    ClientGuard, Front, Presented, Refusal, SessionKind, TakenConn, admit, authorize,
};
use crate::shutdown::Shutdown;
use crate::wire::encode::Encoding;
use crate::wire::ts_format::TsFormat;

/// Answers a request on a WebSocket endpoint: a refusal, or the 101 with
/// the session started in its own task once hyper hands the connection
/// over.
pub(crate) fn upgrade(
    ctx: Rc<Context>,
    mut req: Request<Incoming>,
    kind: SessionKind,
    shutdown: Shutdown,
    // The client (behind a trusted balancer: the one its PROXY header names).
    peer: SocketAddr,
) -> Response<Body> {
    if let Some(refused) = not_an_upgrade(&req, &shutdown) {
        return refused;
    }
    let presented = Presented {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        query: req.uri().query(),
        path: req.uri().path(),
    };
    let identity = match authorize(&ctx, Front::WebSocket, kind, presented, peer.ip()) {
        Ok(identity) => identity,
        Err(refusal) => return respond(&refusal),
    };
    // Only subscribers negotiate; nothing offered means JSON without a
    // header (RFC 6455).
    let chosen = match kind {
        SessionKind::Subscriber => match negotiate(&req) {
            Ok(chosen) => chosen,
            Err(refused) => return refused,
        },
        _ => None,
    };
    let encoding = chosen.unwrap_or_default();
    // `?ts=string`: timestamps as strings in this subscriber's JSON ticks.
    let ts_format = match kind {
        SessionKind::Subscriber => match TsFormat::from_query(req.uri().query()) {
            Ok(f) => f,
            Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
        },
        _ => TsFormat::Number,
    };
    // `?heartbeat=MS`: the server's clock and position every MS.
    let heartbeat = match kind {
        SessionKind::Subscriber => match crate::wire::heartbeat::from_query(req.uri().query()) {
            Ok(every) => every,
            Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
        },
        _ => None,
    };
    // Counted from here until the session ends (the permit moves into it).
    let permit = match admit(&ctx, Front::WebSocket, kind, identity.as_deref(), peer.ip()) {
        Ok(p) => p,
        Err(refusal) => return respond(&refusal),
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => return handshake_refused(&e),
    };
    tokio::task::spawn_local(async move {
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
                let conn = parts.io.into_inner();
                let (client, read) = ClientGuard::open(
                    ctx,
                    TakenConn { conn, peer, early },
                    kind,
                    encoding,
                    identity,
                    permit,
                );
                client.set_ts_format(ts_format);
                match heartbeat {
                    Some(every) => {
                        let beats = crate::server::heartbeat::run(
                            client.context().clone(),
                            client.id(),
                            every,
                        );
                        // The heartbeat never ends by itself: the session does.
                        tokio::select! {
                            _ = session::run(client, read, shutdown) => {}
                            _ = beats => {}
                        }
                    }
                    None => session::run(client, read, shutdown).await,
                }
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

/// A refusal as an HTTP response.
fn respond(r: &Refusal) -> Response<Body> {
    let mut response = text(r.status, format!("{}\n", r.message));
    let headers = response.headers_mut();
    if let Some(challenge) = r.challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if r.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// The answer to a request that is no WebSocket upgrade (or comes while
/// the server shuts down); `None` for a well-formed upgrade request.
fn not_an_upgrade(req: &Request<Incoming>, shutdown: &Shutdown) -> Option<Response<Body>> {
    let path = req.uri().path();
    if req.method() != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} is a WebSocket endpoint: open it with GET and `Upgrade: websocket`\n"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Some(r);
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
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
        return Some(r);
    }
    if shutdown.is_triggered() {
        return Some(shutting_down());
    }
    None
}

/// 503 to an upgrade during shutdown, with `Retry-After` as SSE's refusal
/// has: a client may try again (another node, or this one restarted).
fn shutting_down() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// The subscriber subprotocol to answer with: binary wins when both are
/// offered (docs/PROTOCOL.md); `None` when nothing is offered; a 400 when
/// only unknown ones are.
// The error is the response itself, built once and returned as is; boxing
// it would only add an allocation to a refusal.
#[allow(clippy::result_large_err)]
fn negotiate(req: &Request<Incoming>) -> Result<Option<Encoding>, Response<Body>> {
    let offered = offered_protocols(req);
    if offered.is_empty() {
        return Ok(None);
    }
    for encoding in [Encoding::Binary, Encoding::Json] {
        if offered.iter().any(|p| p == encoding.protocol()) {
            return Ok(Some(encoding));
        }
    }
    Err(text(
        StatusCode::BAD_REQUEST,
        format!(
            "none of the offered subprotocols ({}) is supported; offer {} or {}, or none\n",
            offered.join(", "),
            Encoding::BIN_PROTOCOL,
            Encoding::JSON_PROTOCOL,
        ),
    ))
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

/// fastwebsockets refused the handshake (a bad key or version): 400, or
/// 426 with the version we speak.
fn handshake_refused(e: &fastwebsockets::WebSocketError) -> Response<Body> {
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
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_during_shutdown_is_told_when_to_retry_like_sse() {
        let r = shutting_down();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
