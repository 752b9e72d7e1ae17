//! The live ticker page at `GET /`: static HTML, JS and CSS compiled into
//! the binary (`include_str!`), no build step. The page speaks the public
//! protocol like any client: `/v1/symbols`, then `/v1/stream` (JSON), or
//! `/v1/sse` when WebSocket fails or `?transport=sse` is given.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{self, HeaderValue};

/// One file of the page; its paths are in [`crate::server::routes`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asset {
    body: &'static str,
    content_type: &'static str,
}

pub(crate) const INDEX: Asset = Asset {
    body: include_str!("web/index.html"),
    content_type: "text/html; charset=utf-8",
};
pub(crate) const TICKER_JS: Asset = Asset {
    body: include_str!("web/ticker.js"),
    content_type: "text/javascript; charset=utf-8",
};
/// Browsers ask for `/favicon.ico` on every page load: an SVG icon (served
/// under that name with its own type, which browsers go by) instead of a 404.
pub(crate) const FAVICON: Asset = Asset {
    body: include_str!("web/favicon.svg"),
    content_type: "image/svg+xml",
};
pub(crate) const TICKER_CSS: Asset = Asset {
    body: include_str!("web/ticker.css"),
    content_type: "text/css; charset=utf-8",
};

impl Asset {
    /// The file as a 200, never cached without asking.
    pub(crate) fn response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(self.body.as_bytes())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}
