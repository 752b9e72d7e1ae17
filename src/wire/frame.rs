//! WebSocket frames as the server writes them: opcodes, close codes and
//! whole frames (header + payload, FIN set, unmasked) built in one buffer,
//! so one frame can be shared by every subscriber as a `Bytes`.
//!
//! Reading is fastwebsockets' (with [`super::frame_guard`] in front); these
//! are the server's own frames, which it writes without a library so that a
//! tick is encoded once and written by reference.

use bytes::Bytes;

/// Opcodes of the frames the server writes (RFC 6455 §5.2).
pub const OPCODE_CONTINUATION: u8 = 0x0;
pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// Close codes the server sends (docs/PROTOCOL.md, "Close codes").
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke RFC 6455 (unmasked, bad opcode, oversized control…).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message or Close reason that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Control-message flood or idle timeout.
    pub const POLICY: u16 = 1008;
    /// A message over `--max-message-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// A gateway's feed epoch changed (its ingest node restarted `seq`):
    /// reconnect and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The client stayed behind longer than `--evict-after` (after `lagging`).
    pub const SLOW_CONSUMER: u16 = 4000;
}

/// Room reserved in front of a payload for the largest header we write
/// (2 bytes + 8-byte extended length; server frames are never masked).
pub const MAX_HEADER: usize = 10;

/// Builds one server frame: reserve the header, write the payload, then
/// [`FrameBuilder::finish`] moves the payload up against the real header.
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    pub fn with_capacity(payload: usize) -> Self {
        let mut buf = Vec::with_capacity(payload + MAX_HEADER);
        buf.resize(MAX_HEADER, 0);
        FrameBuilder { buf }
    }

    /// The payload being written.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn finish(mut self, opcode: u8) -> Bytes {
        let len = self.buf.len() - MAX_HEADER;
        let mut head = [0u8; MAX_HEADER];
        let n = write_header(&mut head, opcode, len);
        let start = MAX_HEADER - n;
        self.buf[start..MAX_HEADER].copy_from_slice(&head[..n]);
        Bytes::from(self.buf).slice(start..)
    }
}

/// Writes a FIN, unmasked frame header; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A complete frame around `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut b = FrameBuilder::with_capacity(payload.len());
    b.payload().extend_from_slice(payload);
    b.finish(opcode)
}

/// A Close frame with `code` and a reason (truncated to fit 125 bytes).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OPCODE_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_use_the_shortest_length_form() {
        for (len, head) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let f = frame(OPCODE_TEXT, &vec![b'x'; len]);
            assert_eq!(f.len(), len + head, "len {len}");
            assert_eq!(f[0], 0x81);
            match head {
                2 => assert_eq!(f[1] as usize, len),
                4 => assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, len),
                _ => assert_eq!(
                    u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                    len
                ),
            }
        }
    }

    #[test]
    fn close_frames_fit_a_control_frame() {
        let f = close_frame(4000, &"é".repeat(100));
        assert!(f.len() - 2 <= 125);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 4000);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
