//! A client connection as the server holds it: plain TCP, or TLS when
//! `--tls-cert` is set.
//!
//! Owns the three shapes a connection takes: [`Conn`] while hyper or the
//! SSE head reader has it (`AsyncRead + AsyncWrite`, [`MaybeTls`]), and once a streaming
//! session takes it over, [`ReadHalf`] for the session's reader and
//! [`Transport`] for the fan-out's non-blocking writes. Plain connections
//! write with `send(2)` on tokio's TCP write half, through tokio only when
//! the socket is full ([`try_send`]): one `match` per write, no copy, no
//! dynamic dispatch; TLS goes through [`crate::net::tls`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net::read_ahead;
use crate::net::stream::MaybeTls;
use crate::net::tls::{TlsConn, TlsReader, TlsWriter};

/// An accepted connection (after its TLS handshake, if any).
pub type Conn = MaybeTls<TlsConn>;

impl Conn {
    /// Splits for a streaming session; `prefix` (bytes the HTTP layer read
    /// past the request) is read first.
    pub(crate) fn into_split(self, prefix: Bytes) -> (ReadHalf, Transport) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(prefix, r), Transport::Plain(w))
            }
            Conn::Tls(t) => {
                let (r, w) = t.into_split(prefix);
                (ReadHalf::Tls(r), Transport::Tls(w))
            }
        }
    }
}

/// A session's read side.
pub enum ReadHalf {
    /// Bytes read past the request (served first), then the socket.
    Plain(Bytes, OwnedReadHalf),
    Tls(TlsReader),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(prefix, r) => {
                if read_ahead::serve_first(prefix, buf) {
                    return Poll::Ready(Ok(()));
                }
                Pin::new(r).poll_read(cx, buf)
            }
            ReadHalf::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

/// The fan-out's write side of a client: non-blocking writes of whole
/// batches, and a way to wait for room.
pub enum Transport {
    Plain(OwnedWriteHalf),
    Tls(TlsWriter),
}

impl Transport {
    /// Writes what the socket takes now (`WouldBlock` if nothing). For TLS
    /// the count is plaintext handed to rustls, whose ciphertext has been
    /// written unless [`Transport::is_flushed`] says otherwise.
    #[inline]
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(w) => try_send(w, buf),
            Transport::Tls(w) => w.try_write(buf),
        }
    }

    /// Writes bytes held below the outbox (TLS records); `true` when none
    /// are left, always for plain TCP.
    #[inline]
    pub fn try_flush(&self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(w) => w.try_flush(),
        }
    }

    /// Whether nothing is held below the outbox.
    #[inline]
    pub fn is_flushed(&self) -> bool {
        match self {
            Transport::Plain(_) => true,
            Transport::Tls(w) => w.is_flushed(),
        }
    }

    /// Before our side is shut down: TLS sends close_notify (best effort).
    pub fn finish(&self) {
        if let Transport::Tls(w) = self {
            w.close_notify();
        }
    }

    /// Waits until the socket can take more.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Plain(w) => w.writable().await,
            Transport::Tls(w) => w.writable().await,
        }
    }
}

/// A non-blocking `send(2)` straight on the socket, and tokio's `try_write`
/// only when the socket is full.
///
/// Why: tokio's `try_write` first reads the connection's cached readiness
/// (its `ScheduledIo`, an allocation of its own per socket), and at S1, with
/// 1,000 clients written in turn, that is a cache miss per write (~3% of
/// the server's CPU in `perf`). The socket is non-blocking, so the direct
/// call is just as safe; what tokio's path adds is clearing the cached
/// readiness when the socket is full, which `writable()` relies on to wait
/// for the next edge. So a `WouldBlock` is retried through tokio: if the
/// socket is still full, tokio's own call fails and clears its readiness
/// under the readiness tick it read first, exactly as if only tokio had
/// written (no edge can be lost between the two calls); if room appeared
/// meanwhile, the retry writes.
fn try_send(w: &OwnedWriteHalf, buf: &[u8]) -> io::Result<usize> {
    let tcp: &tokio::net::TcpStream = w.as_ref();
    match socket2::SockRef::from(tcp).send_with_flags(buf, libc::MSG_NOSIGNAL) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.try_write(buf),
        done => done,
    }
}
