//! How `replay` and `record` reach a server: the URL they accept and the
//! WebSocket connection (`ws://`, or `wss://` verified against the system's
//! trust store and `--ca-file`), with the errors both report the same way.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A client connection to a tickwire server.
pub type ServerSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("`{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("--ca-file {path}: {message}")]
    CaFile { path: String, message: String },
}

/// How `wss://` servers are verified (`--ca-file`; the system's trust store
/// is always used too).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTls {
    /// For wss:// URLs: also trust this CA certificate (PEM; e.g. the one
    /// that signed `serve --tls-cert`), besides the system's trust store.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ClientTls {
    /// A TLS connector for `wss://` set up as `replay` and `record` use it;
    /// `tickwire bench`'s own WebSocket client takes it too, so that all
    /// three trust the same roots.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, ConnectError> {
        Ok(tokio_rustls::TlsConnector::from(Arc::new(self.config()?)))
    }

    /// The rustls client configuration: the ring provider (as the server
    /// uses), the system's roots (those that parse) and the `--ca-file`
    /// certificates, which must all parse.
    fn config(&self) -> Result<rustls::ClientConfig, ConnectError> {
        let mut roots = rustls::RootCertStore::empty();
        // A missing or unreadable system store is not fatal: --ca-file
        // may be all that is needed. Certificates that fail to parse are
        // skipped, as browsers do.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = &self.ca_file {
            let bad = |message: String| ConnectError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(bad(
                    "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Connect {
                url: String::new(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// `ws://host:port[/path]` or `wss://…`; an empty path means `default_path`.
pub fn ws_url(url: &str, default_path: &str) -> Result<String, ConnectError> {
    let bad = |why: &str| ConnectError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| {
            bad("only ws:// and wss:// URLs are supported, e.g. ws://127.0.0.1:8080/v1/publish")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("the URL names no host"));
    }
    Ok(if rest.contains('/') {
        url.to_owned()
    } else {
        format!("{url}{default_path}")
    })
}

/// Opens a WebSocket to `url` (already completed by [`ws_url`]); over TLS
/// for `wss://`, verified as `tls` says.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<ServerSocket, ConnectError> {
    let connector = if url.starts_with("wss://") {
        Some(Connector::Rustls(Arc::new(tls.config()?)))
    } else {
        None
    };
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
        .await
        .map_err(|e| ConnectError::Connect {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    Ok(ws)
}
