//! The byte stream a WebSocket session's reader sees: the client's, with
//! [`FrameScanner`] applied (framing rules enforced, oversized messages
//! withheld and reported), and the time bytes last arrived noted.
//!
//! Bytes before an offending header are still handed on, so messages that
//! arrived whole before a violation are processed in order; the error is
//! returned on the next read. An oversized message is reported the same
//! way, as an error on the read after the last byte before it: at a frame
//! boundary, so fastwebsockets holds no partial frame and reads on after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use super::frame_scan::{FrameScanner, ScanEvent};
pub use super::frame_scan::{FrameViolation, Oversized};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl FrameViolation {
    /// Finds the violation an I/O error from [`FrameGuard`] carries.
    pub fn from_io(e: &io::Error) -> Option<FrameViolation> {
        e.get_ref()?.downcast_ref::<FrameViolation>().copied()
    }
}

/// An oversized message as the I/O error [`FrameGuard`] reports it with.
#[derive(Debug, thiserror::Error)]
#[error("message of {} bytes over the cap", .0.bytes)]
pub struct OversizedError(pub Oversized);

impl OversizedError {
    /// Takes the oversized message out of an I/O error from [`FrameGuard`].
    pub fn take(e: io::Error) -> Result<Oversized, io::Error> {
        if e.get_ref().is_some_and(|i| i.is::<OversizedError>()) {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<OversizedError>() {
                Ok(o) => return Ok(o.0),
                Err(other) => return Err(io::Error::other(other)),
            }
        }
        Err(e)
    }
}

/// An `AsyncRead` that applies a [`FrameScanner`] to what it reads, and
/// notes when bytes last arrived (the session's idle timeout reads it: a
/// client sending a large message slowly is not idle).
pub struct FrameGuard<S> {
    /// The client's stream.
    inner: S,
    /// Frame boundaries, rules and the size cap.
    scanner: FrameScanner,
    /// Bytes read from `inner`, `raw[raw_at..raw_len]` not yet scanned.
    /// Empty while the peer is silent: a connection that waits on its
    /// socket holds no read buffer (10,000 idle subscribers would otherwise
    /// hold 160 MiB of them; the soak measures bytes per connection).
    raw: Vec<u8>,
    /// End of what `raw` holds.
    raw_len: usize,
    /// Start of what is not yet scanned in `raw`.
    raw_at: usize,
    /// Scanned bytes not yet handed on, from `out_at`.
    out: Vec<u8>,
    /// Start of what is not yet handed on in `out`.
    out_at: usize,
    /// A violation: returned on every read once `out` is drained.
    violation: Option<FrameViolation>,
    /// An oversized message: returned once, when `out` is drained.
    oversized: Option<Oversized>,
    /// When bytes last arrived (shared with the session).
    heard: Rc<Cell<Instant>>,
}

impl<S> FrameGuard<S> {
    /// A guard withholding messages over `max` bytes (`None`: handing them
    /// on, for the reader's own limit to close with 1009).
    pub fn new(inner: S, max: Option<usize>) -> Self {
        FrameGuard {
            inner,
            scanner: FrameScanner::new(max),
            raw: Vec::new(),
            raw_len: 0,
            raw_at: 0,
            out: Vec::new(),
            out_at: 0,
            violation: None,
            oversized: None,
            heard: Rc::new(Cell::new(Instant::now())),
        }
    }

    /// When bytes last arrived from the peer (initially: when created).
    pub fn heard(&self) -> Rc<Cell<Instant>> {
        self.heard.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(v) = this.violation {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v)));
            }
            if let Some(o) = this.oversized.take() {
                return Poll::Ready(Err(io::Error::other(OversizedError(o))));
            }
            if this.raw_at < this.raw_len {
                let (used, event) = this
                    .scanner
                    .feed(&this.raw[this.raw_at..this.raw_len], &mut this.out);
                this.raw_at += used;
                match event {
                    Some(ScanEvent::Violation(v)) => this.violation = Some(v),
                    Some(ScanEvent::Oversized(o)) => this.oversized = Some(o),
                    None => {}
                }
                continue;
            }
            if this.raw.is_empty() {
                this.raw = vec![0; READ_CHUNK];
            }
            let mut read = ReadBuf::new(&mut this.raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => {
                    // Everything read so far is scanned and handed on:
                    // give both buffers back while the peer is silent.
                    this.raw = Vec::new();
                    this.out = Vec::new();
                    this.raw_len = 0;
                    this.raw_at = 0;
                    return Poll::Pending;
                }
                other => return other,
            }
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.heard.set(Instant::now());
            this.raw_len = n;
            this.raw_at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame_scan::tests::masked;
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_oversized_message_is_an_error_between_the_frames_around_it() {
        let mut stream = masked(1, 0x81, b"before");
        stream.extend(masked(1, 0x82, &[b'x'; 300]));
        let after = masked(1, 0x81, b"after");
        stream.extend(&after);
        let mut guard = FrameGuard::new(&stream[..], Some(100));
        let mut got = vec![0; 1000];
        let n = guard.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], &masked(1, 0x81, b"before")[..]);
        let e = guard.read(&mut got).await.unwrap_err();
        let o = OversizedError::take(e).unwrap();
        assert_eq!((o.opcode, o.bytes, o.prefix.len()), (2, 300, 300));
        let mut rest = Vec::new();
        guard.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, after);
    }

    #[tokio::test]
    async fn a_silent_peer_releases_the_buffers_and_later_frames_still_arrive_whole() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guard = FrameGuard::new(server, Some(100));
        let first = masked(1, 0x81, b"first");
        let second = masked(1, 0x81, b"second, sent after a pause");
        let writer = {
            let (first, second) = (first.clone(), second.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                client.write_all(&first).await.unwrap();
                // Half of the next frame, then a pause: the guard's read
                // waits (Pending) with nothing left to scan.
                client.write_all(&second[..5]).await.unwrap();
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                client.write_all(&second[5..]).await.unwrap();
            })
        };
        let mut got = Vec::new();
        let mut chunk = vec![0; 256];
        while got.len() < first.len() + second.len() {
            let n = guard.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream ended early");
            got.extend_from_slice(&chunk[..n]);
            if got.len() == first.len() + 5 {
                // Everything read is handed on; the next read waits.
                let pending = would_wait(&mut guard).await;
                assert!(pending, "the peer has sent nothing more yet");
                assert!(
                    guard.raw.is_empty() && guard.out.capacity() == 0,
                    "buffers released while waiting"
                );
            }
        }
        writer.await.unwrap();
        assert_eq!(got, [first, second].concat());
    }

    /// Polls one read of `guard` once; true when it would wait.
    async fn would_wait(guard: &mut FrameGuard<tokio::io::DuplexStream>) -> bool {
        let mut byte = [0u8; 0];
        std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut byte);
            Poll::Ready(Pin::new(&mut *guard).poll_read(cx, &mut rb).is_pending())
        })
        .await
    }
}
