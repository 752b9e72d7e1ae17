//! Reading a WebSocket connection a whole message at a time, with the
//! framing rules and size cap enforced and every violation turned into its
//! close code.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use fastwebsockets::{OpCode, Role, WebSocketError, WebSocketRead};
use tokio::io::AsyncRead;
use tokio::time::Instant;

use crate::wire::frame::{close_code, frame};
use crate::wire::frame_guard::{FrameGuard, FrameViolation, Oversized, OversizedError};
use crate::wire::frame_scan::PREFIX_BYTES;

/// A complete inbound message.
pub(crate) enum Inbound {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    /// A message over the cap, read through unbuffered: answered, not
    /// closed (when the reader was made to answer them).
    Oversized(Oversized),
    Close,
    /// A ping (already answered through `obligated`), reported only by a
    /// reader made [`MessageReader::reporting_pings`]: the Binance endpoint
    /// counts pings and pongs against its message rate.
    Ping,
    /// A pong: the Binance endpoint's keepalive expects one per ping.
    Pong,
}

/// Why reading stopped.
pub(crate) enum ReadEnd {
    /// The peer went away (EOF, reset).
    Gone,
    /// The peer broke the protocol: close with this code.
    Violation(u16, String),
}

/// Reads whole messages: reassembles fragments under the size cap and
/// turns framing errors into the close code RFC 6455 asks for.
pub(crate) struct MessageReader<S> {
    /// fastwebsockets' reader, over the guard that checks what it skips.
    ws: WebSocketRead<FrameGuard<S>>,
    /// When bytes last arrived (set by the guard): the idle timeout's clock.
    heard: Rc<Cell<Instant>>,
    /// Largest message, after reassembly.
    max: usize,
    /// A fragmented message so far: its opcode and payload.
    partial: Option<(OpCode, Vec<u8>)>,
    /// Return pings and pongs as [`Inbound::Ping`] / [`Inbound::Pong`]
    /// instead of taking them in silently.
    report_pings: bool,
}

impl<S: AsyncRead + Unpin> MessageReader<S> {
    /// A reader of messages up to `max` bytes; a bigger one is returned as
    /// [`Inbound::Oversized`] when `answer_oversized`, else closes 1009.
    /// `busy`: the peer sends continuously (a publisher), so the read
    /// buffers are kept between reads instead of given back.
    pub(crate) fn new(stream: S, max: usize, answer_oversized: bool, busy: bool) -> Self {
        // The guard enforces the framing rules fastwebsockets 0.10 skips
        // (masking, control frame length) before it sees the bytes, and
        // withholds oversized messages.
        let guard = FrameGuard::new(stream, answer_oversized.then_some(max));
        let guard = if busy { guard.keep_buffers() } else { guard };
        let heard = guard.heard();
        let (mut ws, _) =
            fastwebsockets::after_handshake_split(guard, tokio::io::sink(), Role::Server);
        // A single frame larger than the cap is refused from its header,
        // before any of its payload is buffered.
        ws.set_max_message_size(max.saturating_add(1));
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        MessageReader {
            ws,
            heard,
            max,
            partial: None,
            report_pings: false,
        }
    }

    /// Makes [`MessageReader::next`] return pings and pongs too (a ping is
    /// still answered through `obligated` first).
    pub(crate) fn reporting_pings(mut self) -> Self {
        self.report_pings = true;
        self
    }

    /// When bytes last arrived from the peer.
    pub(crate) fn heard(&self) -> Rc<Cell<Instant>> {
        self.heard.clone()
    }

    /// Reads the next message; `obligated` receives the frames the protocol
    /// obliges us to send (pong, close echo) as complete frames.
    pub(crate) async fn next(
        &mut self,
        obligated: &mut impl FnMut(OpCode, Bytes),
    ) -> Result<Inbound, ReadEnd> {
        loop {
            let mut send = |f: fastwebsockets::Frame<'_>| {
                obligated(f.opcode, frame(f.opcode as u8, &f.payload));
                std::future::ready(Ok::<(), std::io::Error>(()))
            };
            let frame = match self.ws.read_frame(&mut send).await {
                Ok(f) => f,
                Err(WebSocketError::IoError(io)) => match OversizedError::take(io) {
                    Ok(mut o) => {
                        // Went over in a later fragment: its start is ours.
                        if let Some((_, start)) = self.partial.take() {
                            o.prefix = start[..start.len().min(PREFIX_BYTES)].to_vec();
                        }
                        return Ok(Inbound::Oversized(o));
                    }
                    Err(io) => return Err(self.classify(WebSocketError::IoError(io))),
                },
                Err(e) => return Err(self.classify(e)),
            };
            match frame.opcode {
                OpCode::Close => return Ok(Inbound::Close),
                OpCode::Ping if self.report_pings => return Ok(Inbound::Ping),
                OpCode::Pong if self.report_pings => return Ok(Inbound::Pong),
                OpCode::Ping | OpCode::Pong => continue,
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadEnd::Violation(
                            close_code::PROTOCOL_ERROR,
                            "new message started inside a fragmented one".into(),
                        ));
                    }
                    if frame.fin {
                        return Ok(match frame.opcode {
                            // fastwebsockets checked UTF-8 of unfragmented text.
                            OpCode::Text => Inbound::Text(frame.payload.to_vec()),
                            _ => Inbound::Binary(frame.payload.to_vec()),
                        });
                    }
                    self.partial = Some((frame.opcode, frame.payload.to_vec()));
                }
                OpCode::Continuation => {
                    let Some((opcode, mut buf)) = self.partial.take() else {
                        return Err(ReadEnd::Violation(
                            close_code::PROTOCOL_ERROR,
                            "continuation frame without a message to continue".into(),
                        ));
                    };
                    if buf.len() + frame.payload.len() > self.max {
                        return Err(ReadEnd::Violation(
                            close_code::TOO_BIG,
                            format!("message larger than {} bytes", self.max),
                        ));
                    }
                    buf.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        self.partial = Some((opcode, buf));
                        continue;
                    }
                    if opcode == OpCode::Text {
                        if std::str::from_utf8(&buf).is_err() {
                            return Err(ReadEnd::Violation(
                                close_code::INVALID_DATA,
                                "text message is not valid UTF-8".into(),
                            ));
                        }
                        return Ok(Inbound::Text(buf));
                    }
                    return Ok(Inbound::Binary(buf));
                }
            }
        }
    }

    fn classify(&self, e: WebSocketError) -> ReadEnd {
        use WebSocketError as E;
        match e {
            E::IoError(io) if FrameViolation::from_io(&io).is_some() => ReadEnd::Violation(
                close_code::PROTOCOL_ERROR,
                FrameViolation::from_io(&io)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
            E::UnexpectedEOF | E::IoError(_) | E::ConnectionClosed => ReadEnd::Gone,
            E::FrameTooLarge => ReadEnd::Violation(
                close_code::TOO_BIG,
                format!("message larger than {} bytes", self.max),
            ),
            E::InvalidUTF8 => ReadEnd::Violation(
                close_code::INVALID_DATA,
                "text message is not valid UTF-8".into(),
            ),
            other => ReadEnd::Violation(close_code::PROTOCOL_ERROR, other.to_string()),
        }
    }
}
