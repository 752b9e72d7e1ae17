//! How `replay` and `record` reach a server: the URL they accept and the
//! WebSocket connection, with the errors both report the same way.

use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client connection to a tickwire server.
pub type ServerSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("`{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
}

/// `ws://host:port[/path]`; an empty path means `default_path`.
pub fn ws_url(url: &str, default_path: &str) -> Result<String, ConnectError> {
    let bad = |why: &str| ConnectError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| bad("only ws:// URLs are supported, e.g. ws://127.0.0.1:8080/v1/publish"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("the URL names no host"));
    }
    Ok(if rest.contains('/') {
        url.to_owned()
    } else {
        format!("{url}{default_path}")
    })
}

/// Opens a WebSocket to `url` (already completed by [`ws_url`]).
pub async fn connect(url: &str) -> Result<ServerSocket, ConnectError> {
    let (ws, _) =
        tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| ConnectError::Connect {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
    Ok(ws)
}
