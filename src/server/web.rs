//! The live ticker page at `GET /`: static HTML, JS and CSS compiled into
//! the binary (`include_str!`), no build step. The page speaks the public
//! protocol like any client: `/v1/symbols`, then `/v1/stream` (JSON), or
//! `/v1/sse` when WebSocket fails or `?transport=sse` is given.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{self, HeaderValue};

pub const INDEX_HTML: &str = include_str!("web/index.html");
pub const TICKER_JS: &str = include_str!("web/ticker.js");
pub const TICKER_CSS: &str = include_str!("web/ticker.css");

/// The asset at `path` (one of the routed paths).
pub fn asset(path: &str) -> Response<Full<Bytes>> {
    let (body, ctype) = match path {
        "/ticker.js" => (TICKER_JS, "text/javascript; charset=utf-8"),
        "/ticker.css" => (TICKER_CSS, "text/css; charset=utf-8"),
        _ => (INDEX_HTML, "text/html; charset=utf-8"),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
