//! HTTP routing: every endpoint in one table ([`ROUTES`]), from which the
//! dispatch, the 405 answers and the 404's list of endpoints all come.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::bus::Role as NodeRole;
use crate::model::feed::FeedStatus;
use crate::server::context::Context;
use crate::server::subscriber::SessionKind;
use crate::server::upgrade::upgrade;
use crate::server::web::{self, Asset};
use crate::server::{metrics, sse};
use crate::shutdown::Shutdown;

/// Every plain HTTP response's body.
pub(crate) type Body = Full<Bytes>;

/// What answers a path.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    /// A WebSocket endpoint; every method goes to the upgrade, which
    /// answers a non-GET itself.
    WebSocket(SessionKind),
    /// Server-Sent Events: answered before hyper sees the connection (see
    /// [`crate::server::sse`]), so reaching here means it was not the
    /// connection's first request.
    Sse,
    /// A file of the live ticker page.
    Page(Asset),
    /// `GET /healthz`.
    Health,
    /// `GET /v1/symbols`: every symbol seen, as a JSON array.
    Symbols,
    /// `GET /metrics`, for Prometheus.
    Metrics,
}

/// One path and what answers it.
struct Route {
    path: &'static str,
    endpoint: Endpoint,
    /// How the 404 answer lists it: after the path (e.g. ` (WebSocket)`);
    /// `None`: not listed.
    listed: Option<&'static str>,
}

/// Every endpoint; the 404 answer lists the `listed` ones in this order.
const ROUTES: &[Route] = &[
    Route {
        path: "/v1/stream",
        endpoint: Endpoint::WebSocket(SessionKind::Subscriber),
        listed: Some(""),
    },
    Route {
        path: "/v1/publish",
        endpoint: Endpoint::WebSocket(SessionKind::Publisher),
        listed: Some(" (WebSocket)"),
    },
    Route {
        path: sse::PATH,
        endpoint: Endpoint::Sse,
        listed: Some(" (Server-Sent Events)"),
    },
    Route {
        path: "/v1/symbols",
        endpoint: Endpoint::Symbols,
        listed: Some(""),
    },
    Route {
        path: "/healthz",
        endpoint: Endpoint::Health,
        listed: Some(""),
    },
    Route {
        path: "/metrics",
        endpoint: Endpoint::Metrics,
        listed: Some(""),
    },
    Route {
        path: "/",
        endpoint: Endpoint::Page(web::INDEX),
        listed: Some(""),
    },
    Route {
        path: "/index.html",
        endpoint: Endpoint::Page(web::INDEX),
        listed: None,
    },
    Route {
        path: "/ticker.js",
        endpoint: Endpoint::Page(web::TICKER_JS),
        listed: None,
    },
    Route {
        path: "/ticker.css",
        endpoint: Endpoint::Page(web::TICKER_CSS),
        listed: None,
    },
    Route {
        path: "/favicon.ico",
        endpoint: Endpoint::Page(web::FAVICON),
        listed: None,
    },
];

/// Answers one request on the main listener.
pub(crate) fn route(
    ctx: Rc<Context>,
    req: Request<Incoming>,
    shutdown: Shutdown,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
        return text(StatusCode::NOT_FOUND, not_found(path));
    };
    match route.endpoint {
        Endpoint::WebSocket(SessionKind::Publisher)
            if ctx
                .bus
                .as_ref()
                .is_some_and(|b| b.role == NodeRole::Gateway) =>
        {
            text(
                StatusCode::MISDIRECTED_REQUEST,
                "this node is a gateway (--role gateway): its ticks come from the bus; publish to the ingest node\n",
            )
        }
        Endpoint::WebSocket(kind) => upgrade(ctx, req, kind, shutdown, peer),
        _ if req.method() != Method::GET => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} accepts GET only\n", route.path),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            r
        }
        Endpoint::Sse => text(
            StatusCode::BAD_REQUEST,
            "open /v1/sse as the first request of a connection\n",
        ),
        Endpoint::Page(asset) => asset.response(),
        Endpoint::Health => health(&ctx, &shutdown),
        Endpoint::Symbols => {
            // `?ref=1`: objects with each symbol's reference data.
            let with_ref = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "ref=1"));
            let reference = &ctx.config.reference;
            let mut o = Vec::with_capacity(256);
            o.push(b'[');
            for (i, (name, _)) in ctx.fanout.ingest.symbols().seen().iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                if with_ref {
                    reference.write_json(&mut o, name);
                } else {
                    crate::wire::json::json_string(&mut o, name);
                }
            }
            o.push(b']');
            with_type(o, "application/json")
        }
        Endpoint::Metrics => {
            let body = metrics::render(
                &ctx.fanout.stats,
                &ctx.fanout.ingest,
                ctx.config.ring_capacity,
                ctx.admission.counts().0,
            );
            with_type(body, metrics::CONTENT_TYPE)
        }
    }
}

/// `/healthz`: 503 while shutting down, else 200 (saying so when the
/// feed is stale).
fn health(ctx: &Context, shutdown: &Shutdown) -> Response<Body> {
    if shutdown.is_triggered() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match ctx.bus.as_ref().map(|b| b.current_status()) {
        // Still serving: every gateway is stale when the ingest node is
        // down, so a load balancer gains nothing by failing this one.
        Some(FeedStatus::Stale { reason, .. }) => {
            text(StatusCode::OK, format!("ok (feed stale: {reason})\n"))
        }
        _ => text(StatusCode::OK, "ok\n"),
    }
}

/// The 404 body: the path, then every listed endpoint.
fn not_found(path: &str) -> String {
    let endpoints: Vec<String> = ROUTES
        .iter()
        .filter_map(|r| r.listed.map(|note| format!("{}{note}", r.path)))
        .collect();
    format!(
        "no such endpoint: {path}\nendpoints: {}\n",
        endpoints.join(", ")
    )
}

/// A 200 with `body` of `content_type`.
fn with_type(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = with_type(body.into(), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

/// Adds `close` to a plain HTTP response's `Connection` header, so hyper
/// ends the connection after it: every request is then the first on its
/// connection, which is where `GET /v1/sse` is recognised
/// ([`crate::server::sse`]). (Not `keep_alive(false)`: hyper would then
/// also mark a 101 `close`.)
pub(crate) fn one_request_per_connection(r: &mut Response<Body>) {
    let value = match r.headers().get(header::CONNECTION) {
        Some(v) => format!("{}, close", v.to_str().unwrap_or("")),
        None => "close".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::CONNECTION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_404_lists_the_endpoints_of_the_table() {
        assert_eq!(
            not_found("/nope"),
            "no such endpoint: /nope\nendpoints: /v1/stream, /v1/publish (WebSocket), /v1/sse (Server-Sent Events), /v1/symbols, /healthz, /metrics, /\n"
        );
    }

    #[test]
    fn every_path_is_routed_once() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(r.path.starts_with('/'), "{}", r.path);
            assert!(
                ROUTES[i + 1..].iter().all(|o| o.path != r.path),
                "{} twice",
                r.path
            );
        }
    }
}
