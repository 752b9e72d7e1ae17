//! Framing rules fastwebsockets 0.10 does not enforce, checked on the raw
//! bytes before it parses them.
//!
//! RFC 6455 requires a server to fail the connection when a client frame is
//! not masked (§5.1) and when any control frame carries more than 125 bytes
//! (§5.5). fastwebsockets 0.10 checks neither (its `mask` field is private and
//! only pings are length-checked), so [`FrameGuard`] sits between the socket
//! and the reader: it follows frame boundaries in the byte stream, looks at
//! each header, and turns a violation into an I/O error carrying a
//! [`FrameViolation`], which the session maps to close 1002.
//!
//! Bytes before an offending header are still handed on, so messages that
//! arrived whole before the violation are processed in order; the error is
//! returned on the next read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// A framing rule a client broke (RFC 6455 §5.1, §5.5): close with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameViolation {
    #[error("client frames must be masked (RFC 6455 section 5.1)")]
    Unmasked,
    #[error("control frame payload over 125 bytes (RFC 6455 section 5.5)")]
    ControlTooLong,
}

impl FrameViolation {
    /// Finds the violation an I/O error from [`FrameGuard`] carries.
    pub fn from_io(e: &io::Error) -> Option<FrameViolation> {
        e.get_ref()?.downcast_ref::<FrameViolation>().copied()
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Collecting a header: `have` bytes of it so far.
    Header { buf: [u8; 14], have: usize },
    /// Inside a payload: this many bytes still to skip.
    Payload(u64),
}

/// Follows frame boundaries and checks each client frame header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderScanner {
    state: Scan,
}

impl Default for HeaderScanner {
    fn default() -> Self {
        HeaderScanner {
            state: Scan::Header {
                buf: [0; 14],
                have: 0,
            },
        }
    }
}

/// Total header length once its first two bytes are known.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

impl HeaderScanner {
    /// Feeds the next bytes of the stream. On a violation, returns it with
    /// the offset in `bytes` where the offending frame's header started
    /// (`0` when it started in an earlier call).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), (usize, FrameViolation)> {
        let mut i = 0;
        // Where the header being collected started within `bytes`.
        let mut header_start = 0;
        while i < bytes.len() {
            match &mut self.state {
                Scan::Payload(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        header_start = i;
                        self.state = Scan::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                Scan::Header { buf, have } => {
                    if *have == 0 {
                        header_start = i;
                    }
                    buf[*have] = bytes[i];
                    *have += 1;
                    i += 1;
                    if *have == 2 {
                        // Checked as soon as the second byte is in: fail fast.
                        if buf[1] & 0x80 == 0 {
                            return Err((header_start, FrameViolation::Unmasked));
                        }
                        let code = buf[1] & 0x7f;
                        if buf[0] & 0x08 != 0 && code > 125 {
                            return Err((header_start, FrameViolation::ControlTooLong));
                        }
                    }
                    if *have >= 2 && *have == header_len(buf[1]) {
                        let len = match buf[1] & 0x7f {
                            126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                            127 => u64::from_be_bytes(buf[2..10].try_into().unwrap_or([0; 8])),
                            n => u64::from(n),
                        };
                        header_start = i;
                        self.state = if len == 0 {
                            Scan::Header {
                                buf: [0; 14],
                                have: 0,
                            }
                        } else {
                            Scan::Payload(len)
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// An `AsyncRead` that enforces [`FrameViolation`]'s rules on what it reads,
/// and notes when bytes last arrived (the session's idle timeout reads it:
/// a client sending a large message slowly is not idle).
pub struct FrameGuard<S> {
    inner: S,
    scanner: HeaderScanner,
    /// A violation found after bytes that were still handed on.
    pending: Option<FrameViolation>,
    heard: Rc<Cell<Instant>>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S) -> Self {
        FrameGuard {
            inner,
            scanner: HeaderScanner::default(),
            pending: None,
            heard: Rc::new(Cell::new(Instant::now())),
        }
    }

    /// When bytes last arrived from the peer (initially: when created).
    pub fn heard(&self) -> Rc<Cell<Instant>> {
        self.heard.clone()
    }
}

fn violation(v: FrameViolation) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, v)
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(v) = this.pending {
            return Poll::Ready(Err(violation(v)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if buf.filled().len() > before {
            this.heard.set(Instant::now());
        }
        if let Err((at, v)) = this.scanner.feed(&buf.filled()[before..]) {
            if at == 0 {
                return Poll::Ready(Err(violation(v)));
            }
            // Hand on what came before the bad header; fail on the next read.
            buf.set_filled(before + at);
            this.pending = Some(v);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0x55, len));
        f
    }

    #[test]
    fn valid_frames_pass_whatever_the_split() {
        let mut stream = Vec::new();
        for (op, len) in [(1, 0), (1, 5), (2, 126), (2, 70_000), (9, 125), (8, 2)] {
            stream.extend(masked(op, len));
        }
        for chunk in [1, 2, 3, 7, 13, 1000, stream.len()] {
            let mut s = HeaderScanner::default();
            for c in stream.chunks(chunk) {
                assert_eq!(s.feed(c), Ok(()), "chunk size {chunk}");
            }
        }
    }

    #[test]
    fn an_unmasked_frame_is_found_at_its_header() {
        let mut stream = masked(1, 10);
        let at = stream.len();
        stream.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        let mut s = HeaderScanner::default();
        assert_eq!(s.feed(&stream), Err((at, FrameViolation::Unmasked)));
        // Split inside the header: reported at offset 0 of the later chunk.
        let mut s = HeaderScanner::default();
        assert_eq!(s.feed(&stream[..at + 1]), Ok(()));
        assert_eq!(
            s.feed(&stream[at + 1..]),
            Err((0, FrameViolation::Unmasked))
        );
    }

    #[test]
    fn long_control_frames_are_refused_pings_pongs_and_closes() {
        for op in [8, 9, 10] {
            let mut s = HeaderScanner::default();
            assert_eq!(
                s.feed(&masked(op, 126)),
                Err((0, FrameViolation::ControlTooLong))
            );
        }
    }
}
