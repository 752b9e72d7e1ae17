//! `wss://` for the runner: the subscribers' connections over TLS, and a
//! loopback relay that puts the (blocking) publisher's socket behind TLS.
//!
//! The TLS setup (the system's roots plus `--ca-file`, the ring provider)
//! is `replay`'s and `record`'s, taken from the tickwire library
//! (`tickwire_lib::ClientTls`), so all of them trust the same servers.
//! It is set once per command ([`init`]): endpoints are parsed in many
//! places, and all of them share one connector.

use std::net::SocketAddr;
use std::sync::OnceLock;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::tickwire_lib::{ClientTls, MaybeTls};
use crate::ws::{Endpoint, WsError};

/// The connector for every `wss://` endpoint of this command.
static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();

/// Builds the connector from `--ca-file` (and the system's roots). Called
/// once, before any connection; a bad `--ca-file` is a clear error.
pub fn init(tls: &ClientTls) -> Result<(), String> {
    let c = tls.connector().map_err(|e| e.to_string())?;
    let _ = CONNECTOR.set(c);
    Ok(())
}

/// A subscriber's connection: plain TCP or TLS over it (the library's
/// stream type, which the server's connections use too).
pub type Stream = MaybeTls<TlsStream<TcpStream>>;

/// Connects to `ep` (TCP_NODELAY), and over TLS for a `wss://` endpoint,
/// verifying the certificate against the endpoint's host name.
pub async fn connect(ep: &Endpoint) -> Result<Stream, WsError> {
    let s = TcpStream::connect(ep.addr)
        .await
        .map_err(|source| WsError::Connect {
            addr: ep.addr,
            source,
        })?;
    s.set_nodelay(true)?;
    if !ep.tls {
        return Ok(Stream::Plain(s));
    }
    let connector = CONNECTOR
        .get()
        .ok_or_else(|| WsError::Tls("no TLS set up for wss:// (a runner bug)".into()))?;
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|e| WsError::Tls(format!("`{}` is not a server name: {e}", ep.host)))?;
    let tls = connector
        .connect(name, s)
        .await
        .map_err(|e| WsError::Tls(format!("TLS handshake failed: {e}")))?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// For a `wss://` publish endpoint: a loopback listener whose one
/// connection is relayed to `ep` over TLS, so the publisher's blocking
/// socket code stays as it is. The relay runs on its own thread until
/// either side closes. Its hop (two loopback copies) is in the latency
/// from intended send time, not in the latency from `rx`.
pub fn publish_relay(ep: &Endpoint) -> Result<SocketAddr, WsError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let ep = ep.clone();
    std::thread::Builder::new()
        .name("bench-tls-relay".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok((mut plain, _)) = listener.accept().await else {
                    return;
                };
                let _ = plain.set_nodelay(true);
                // A failed TLS connect closes the plain side: the
                // publisher then reports the connection as closed.
                if let Ok(mut tls) = connect(&ep).await {
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                }
            })
        })?;
    Ok(addr)
}
