//! TLS (`serve --tls-cert FILE --tls-key FILE`): `wss://` and `https://`.
//!
//! Owns everything rustls: loading the PEM certificate chain and key into a
//! `ServerConfig` (ring provider, ALPN `http/1.1`), the connection while
//! hyper serves it ([`TlsConn`], a tokio-rustls stream plus any bytes read
//! ahead to recognise `GET /v1/sse`), and the two halves a streaming session
//! is split into ([`TlsReader`], [`TlsWriter`]).
//!
//! The halves drive one `rustls::ServerConnection` by hand (shared through
//! an `Rc<RefCell>`: a worker's tasks all run on one thread) instead of
//! going through tokio-rustls' `AsyncWrite`, because the fan-out writes
//! without awaiting: [`TlsWriter::try_write`] encrypts one record budget of
//! a client's batch at a time and writes the ciphertext straight to the
//! socket with `try_write`, so ciphertext never waits in rustls for a later
//! flush, and at most [`TLS_BUFFER_LIMIT`] bytes of it wait there when the
//! socket is full. A slow TLS reader is therefore bounded, coalesced and
//! evicted by the same outbox rules as a plaintext one.
//!
//! Records rustls produces while reading (a reply to a peer's TLS 1.3
//! `KeyUpdate`) are not written by the reader: they go out ahead of the
//! next batch the client is sent (ticks, pings, the Close). The reader
//! never writes, so the writer task alone waits on the socket's
//! writability.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig, ServerConnection};

/// Most ciphertext rustls may hold for one streaming client (its
/// `set_buffer_limit`): one full record. The fan-out hands rustls no more
/// plaintext until that is written, so this is all a slow TLS client costs
/// beyond its outbox cap.
pub(crate) const TLS_BUFFER_LIMIT: usize = 16 * 1024 + 256;

/// Ciphertext read from the socket at once (a little over one record).
const READ_CHUNK: usize = 17 * 1024;

/// Why the TLS files could not be used. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path} is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {path} holds no certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error(
        "--tls-key {path} holds no private key (expected a PKCS#8, PKCS#1 or SEC1 PEM private key)"
    )]
    NoKey { path: PathBuf },
    #[error("--tls-cert {cert} and --tls-key {key} cannot be used together: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Loads a PEM certificate chain (leaf first) and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "--tls-cert",
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            });
        }
        Err(source) => {
            return Err(TlsError::Pem {
                what: "--tls-key",
                path: key.to_owned(),
                source,
            });
        }
    };
    server_config(chain, private).map_err(|source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// A server config for a chain and key (rustls checks that they match).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/1.1 only: WebSocket upgrades and SSE need it (no h2 here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection while hyper (or the SSE head reader) has it: the
/// tokio-rustls stream, with plaintext read ahead to classify the request
/// served again first.
pub(crate) struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    ahead: Vec<u8>,
    pos: usize,
}

impl TlsConn {
    pub fn new(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        TlsConn {
            stream,
            ahead: Vec::new(),
            pos: 0,
        }
    }

    /// Plaintext read ahead and not yet consumed.
    pub fn ahead(&self) -> &[u8] {
        &self.ahead[self.pos..]
    }

    /// Reads more plaintext into the read-ahead (kept for the next reads);
    /// `Ok(0)` at EOF.
    pub async fn read_ahead(&mut self) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut tmp = [0u8; 512];
        let n = self.stream.read(&mut tmp).await?;
        self.ahead.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Splits the connection for a streaming session. `prefix` is plaintext
    /// already read (hyper's leftover); it is read first.
    pub fn into_split(self, prefix: Bytes) -> (TlsReader, TlsWriter) {
        // hyper read the read-ahead first: what it left of it comes after
        // what it read (in practice hyper has read it all).
        let mut first = prefix.to_vec();
        first.extend_from_slice(&self.ahead[self.pos..]);
        let (tcp, mut conn) = self.stream.into_inner();
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let conn = Rc::new(RefCell::new(conn));
        let (read, write) = tcp.into_split();
        (
            TlsReader {
                tcp: read,
                conn: conn.clone(),
                plain_ahead: Bytes::from(first),
                cipher: Vec::new(),
                cipher_pos: 0,
            },
            TlsWriter { tcp: write, conn },
        )
    }
}

impl crate::net::stream::OverTcp for TlsConn {
    fn tcp(&self) -> &TcpStream {
        self.stream.get_ref().0
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.ahead.len() {
            let n = buf.remaining().min(this.ahead.len() - this.pos);
            buf.put_slice(&this.ahead[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.ahead.len() {
                this.ahead = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A session's read side of a TLS connection: reads ciphertext from the
/// socket and hands out the plaintext rustls decrypts.
pub(crate) struct TlsReader {
    tcp: OwnedReadHalf,
    conn: Rc<RefCell<ServerConnection>>,
    /// Plaintext read before the split; served first.
    plain_ahead: Bytes,
    /// Ciphertext read from the socket that rustls did not take yet: it is
    /// fed only while rustls holds no unread plaintext, so rustls' received
    /// plaintext buffer never overflows (`read_tls` refuses past its limit).
    /// Usually empty (socket reads go through a stack buffer), so an idle
    /// connection holds no read buffer of its own.
    cipher: Vec<u8>,
    cipher_pos: usize,
}

impl AsyncRead for TlsReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if crate::net::read_ahead::serve_first(&mut this.plain_ahead, buf) {
            return Poll::Ready(Ok(()));
        }
        loop {
            {
                let mut conn = this.conn.borrow_mut();
                match conn.reader().read(buf.initialize_unfilled()) {
                    // 0: the peer's close_notify (a clean EOF).
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // UnexpectedEof: TCP ended without close_notify.
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if this.cipher_pos < this.cipher.len() {
                    let mut rd = &this.cipher[this.cipher_pos..];
                    let n = conn.read_tls(&mut rd)?;
                    this.cipher_pos += n;
                    // 0: after close_notify rustls takes nothing more.
                    if n == 0 || this.cipher_pos == this.cipher.len() {
                        this.cipher.clear();
                        this.cipher_pos = 0;
                    }
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
            }
            let mut tmp = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n > 0 {
                let mut conn = this.conn.borrow_mut();
                let mut rd = &tmp[..n];
                conn.read_tls(&mut rd)?;
                this.cipher.extend_from_slice(rd);
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                continue;
            }
            // EOF: rustls decides whether it was clean (close_notify).
            let mut conn = this.conn.borrow_mut();
            conn.read_tls(&mut io::empty())?;
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Poll::Ready(match conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            });
        }
    }
}

/// The fan-out's write side of a TLS connection.
pub(crate) struct TlsWriter {
    tcp: OwnedWriteHalf,
    conn: Rc<RefCell<ServerConnection>>,
}

/// `io::Write` over a non-blocking socket: `WouldBlock` when it is full.
struct TryWrite<'a>(&'a OwnedWriteHalf);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what rustls holds until it is empty (`true`) or the socket is
/// full (`false`).
fn drain(conn: &mut ServerConnection, tcp: &OwnedWriteHalf) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut TryWrite(tcp)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl TlsWriter {
    /// Encrypts `plain` one record budget at a time, writing each record's
    /// ciphertext to the socket at once; returns how much plaintext was
    /// taken. Stops early when the socket is full, leaving at most
    /// [`TLS_BUFFER_LIMIT`] bytes in rustls ([`TlsWriter::is_flushed`] says
    /// whether any are). Call only when [`TlsWriter::try_flush`] is `true`.
    pub fn try_write(&self, plain: &[u8]) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        let mut taken = 0;
        while taken < plain.len() {
            let n = conn.writer().write(&plain[taken..])?;
            taken += n;
            if !drain(&mut conn, &self.tcp)? || n == 0 {
                break;
            }
        }
        if taken == 0 && !plain.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Writes the ciphertext rustls still holds; `true` once none is left.
    pub fn try_flush(&self) -> io::Result<bool> {
        drain(&mut self.conn.borrow_mut(), &self.tcp)
    }

    /// Whether rustls holds no ciphertext.
    pub fn is_flushed(&self) -> bool {
        !self.conn.borrow().wants_write()
    }

    /// Queues close_notify and writes it if the socket takes it now.
    pub fn close_notify(&self) {
        let mut conn = self.conn.borrow_mut();
        conn.send_close_notify();
        let _ = drain(&mut conn, &self.tcp);
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }
}
