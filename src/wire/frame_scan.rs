//! Following client frame boundaries in the raw byte stream: the framing
//! rules fastwebsockets 0.10 skips, and messages over the size cap read
//! through without being buffered.
//!
//! RFC 6455 requires a server to fail the connection when a client frame is
//! not masked (§5.1) and when any control frame carries more than 125 bytes
//! (§5.5); fastwebsockets 0.10 checks neither. And a message over the cap
//! would otherwise be refused from its header with close 1009, which leaves
//! a client that sent one subscribe too many names with no answer. So
//! [`FrameScanner`] looks at each header before fastwebsockets does: frames
//! that break a rule end the scan with a [`FrameViolation`]; data frames of
//! a message over the cap are withheld (header and payload), keeping only
//! the first [`PREFIX_BYTES`] bytes of the message, and reported as one
//! [`Oversized`] when the message ends, so the session can answer it and
//! read on.

/// A framing rule a client broke (RFC 6455 §5.1, §5.4, §5.5): close 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameViolation {
    #[error("client frames must be masked (RFC 6455 section 5.1)")]
    Unmasked,
    #[error("control frame payload over 125 bytes (RFC 6455 section 5.5)")]
    ControlTooLong,
    #[error("new message started inside a fragmented one")]
    Interleaved,
}

/// How much of an oversized message is kept: enough for its `op` and `id`.
pub const PREFIX_BYTES: usize = 4096;

/// A message over the cap, read through and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Text (1) or binary (2).
    pub opcode: u8,
    /// Its whole length, all fragments.
    pub bytes: u64,
    /// Its first bytes, unmasked (at most [`PREFIX_BYTES`]); empty when the
    /// message went over the cap in a later fragment, whose earlier
    /// fragments the reader already holds.
    pub prefix: Vec<u8>,
}

/// What stopped a [`FrameScanner::feed`] before the end of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A rule broken by the frame whose header ends the handed-on bytes.
    Violation(FrameViolation),
    /// An oversized message just ended.
    Oversized(Oversized),
}

/// A frame over the cap being skipped.
#[derive(Debug, Clone)]
struct Skipping {
    /// The message so far (see [`Oversized`]).
    message: Oversized,
    /// Payload bytes of the current frame still to skip.
    left: u64,
    /// Whether this frame's bytes go to the prefix: only a message's
    /// first frame's do (see [`Oversized::prefix`]).
    keep: bool,
    /// Offset within the current frame's payload, for the mask.
    at: u64,
    /// The current frame's mask key.
    mask: [u8; 4],
    /// Whether the current frame ends the message.
    fin: bool,
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone)]
enum Scan {
    /// Collecting a header: `have` bytes of it so far.
    Header { buf: [u8; 14], have: usize },
    /// Inside a payload that is handed on: this many bytes still to go.
    Payload(u64),
    /// Inside a payload of an oversized message.
    Skip(Skipping),
}

const NEW_HEADER: Scan = Scan::Header {
    buf: [0; 14],
    have: 0,
};

/// Follows frame boundaries, checks each client frame header and withholds
/// messages over the cap.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Position in the byte stream.
    state: Scan,
    /// The cap on a whole message; `None`: no cap here (the reader's own
    /// limit closes with 1009).
    max: Option<u64>,
    /// The data message in progress (fragmented, handed on): its opcode and
    /// length so far, to know when a continuation takes it over the cap.
    message: Option<(u8, u64)>,
    /// An oversized fragmented message being skipped across frames.
    skipping: Option<Oversized>,
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

/// The payload length a complete header announces.
fn payload_len(buf: &[u8; 14]) -> u64 {
    match buf[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => u64::from_be_bytes(buf[2..10].try_into().unwrap_or([0; 8])),
        n => u64::from(n),
    }
}

impl FrameScanner {
    /// A scanner withholding messages over `max` bytes (`None`: none).
    pub fn new(max: Option<usize>) -> Self {
        FrameScanner {
            state: NEW_HEADER,
            max: max.map(|m| m as u64),
            message: None,
            skipping: None,
        }
    }

    /// Scans `input`, appending what fastwebsockets may see to `out`.
    /// Returns how much of `input` was consumed and, when it stopped early,
    /// why: after a violation nothing more should be read; after an
    /// oversized message the rest of `input` is fed again.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<ScanEvent>) {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                Scan::Payload(left) => {
                    let take = (*left).min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    *left -= take as u64;
                    i += take;
                    if *left == 0 {
                        self.state = NEW_HEADER;
                    }
                }
                Scan::Skip(s) => {
                    let take = s.left.min((input.len() - i) as u64) as usize;
                    if s.keep {
                        let room = PREFIX_BYTES.saturating_sub(s.message.prefix.len());
                        for &b in &input[i..i + take.min(room)] {
                            s.message.prefix.push(b ^ s.mask[(s.at % 4) as usize]);
                            s.at += 1;
                        }
                    }
                    s.left -= take as u64;
                    i += take;
                    if s.left == 0
                        && let Some(event) = self.end_skipped_frame()
                    {
                        return (i, Some(event));
                    }
                }
                Scan::Header { buf, have } => {
                    buf[*have] = input[i];
                    *have += 1;
                    i += 1;
                    if *have == 2 {
                        // Checked as soon as the second byte is in: fail fast.
                        if buf[1] & 0x80 == 0 {
                            return (i, Some(ScanEvent::Violation(FrameViolation::Unmasked)));
                        }
                        if buf[0] & 0x08 != 0 && buf[1] & 0x7f > 125 {
                            return (
                                i,
                                Some(ScanEvent::Violation(FrameViolation::ControlTooLong)),
                            );
                        }
                    }
                    if *have >= 2 && *have == header_len(buf[1]) {
                        let (buf, have) = (*buf, *have);
                        if let Some(event) = self.header(&buf[..have], &buf, out) {
                            return (i, Some(event));
                        }
                    }
                }
            }
        }
        (i, None)
    }

    /// A complete header: decides whether its frame is handed on.
    fn header(&mut self, header: &[u8], buf: &[u8; 14], out: &mut Vec<u8>) -> Option<ScanEvent> {
        let len = payload_len(buf);
        let opcode = buf[0] & 0x0f;
        let fin = buf[0] & 0x80 != 0;
        let data = matches!(opcode, 0..=2);
        let mask: [u8; 4] = header[header.len() - 4..].try_into().unwrap_or([0; 4]);
        if data && let Some(max) = self.max {
            if opcode != 0 && (self.message.is_some() || self.skipping.is_some()) {
                return Some(ScanEvent::Violation(FrameViolation::Interleaved));
            }
            let skip = if let Some(message) = self.skipping.take() {
                Some(message)
            } else {
                let so_far = if opcode == 0 {
                    self.message.map_or(0, |(_, n)| n)
                } else {
                    0
                };
                match so_far.saturating_add(len) {
                    total if total > max => {
                        let started = self.message.take();
                        Some(Oversized {
                            opcode: started.map_or(opcode, |(op, _)| op),
                            bytes: so_far,
                            prefix: Vec::new(),
                        })
                    }
                    total => {
                        // Handed on; a continuation with nothing to continue
                        // is fastwebsockets' and the reader's to refuse.
                        if !fin {
                            let op = self.message.map_or(opcode, |(op, _)| op);
                            self.message = Some((op, total));
                        } else {
                            self.message = None;
                        }
                        None
                    }
                }
            };
            if let Some(mut message) = skip {
                let keep = message.bytes == 0 && opcode != 0;
                message.bytes = message.bytes.saturating_add(len);
                self.state = Scan::Skip(Skipping {
                    message,
                    left: len,
                    keep,
                    at: 0,
                    mask,
                    fin,
                });
                if len == 0 {
                    return self.end_skipped_frame();
                }
                return None;
            }
        }
        out.extend_from_slice(header);
        self.state = if len == 0 {
            NEW_HEADER
        } else {
            Scan::Payload(len)
        };
        None
    }

    /// The end of a skipped frame's payload: the message's end, or wait
    /// for its next fragment.
    fn end_skipped_frame(&mut self) -> Option<ScanEvent> {
        let Scan::Skip(s) = std::mem::replace(&mut self.state, NEW_HEADER) else {
            return None;
        };
        if s.fin {
            Some(ScanEvent::Oversized(s.message))
        } else {
            self.skipping = Some(s.message);
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame: `first` is its first byte (FIN and opcode).
    pub(crate) fn masked(seed: u8, first: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![first];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = [seed, seed.wrapping_add(7), 3, 0xa5];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Feeds `stream` in chunks of `chunk`, re-feeding after events, and
    /// returns what was handed on and the events.
    fn scan(max: Option<usize>, stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<ScanEvent>) {
        let mut s = FrameScanner::new(max);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for mut c in stream.chunks(chunk) {
            while !c.is_empty() {
                let (used, e) = s.feed(c, &mut out);
                c = &c[used..];
                if let Some(e) = e {
                    let stop = matches!(e, ScanEvent::Violation(_));
                    events.push(e);
                    if stop {
                        return (out, events);
                    }
                }
            }
        }
        (out, events)
    }

    const SPLITS: [usize; 7] = [1, 2, 3, 7, 13, 1000, usize::MAX];

    #[test]
    fn valid_frames_pass_unchanged_whatever_the_split() {
        let mut stream = Vec::new();
        for (op, len) in [
            (0x81, 0),
            (0x81, 5),
            (0x82, 126),
            (0x82, 70_000),
            (0x89, 125),
            (0x88, 2),
        ] {
            stream.extend(masked(1, op, &vec![0x55; len]));
        }
        for chunk in SPLITS {
            assert_eq!(
                scan(Some(70_000), &stream, chunk),
                (stream.clone(), vec![]),
                "{chunk}"
            );
            assert_eq!(
                scan(None, &stream, chunk),
                (stream.clone(), vec![]),
                "{chunk}"
            );
        }
    }

    #[test]
    fn an_unmasked_frame_stops_the_scan_at_its_header() {
        let mut stream = masked(1, 0x81, b"0123456789");
        let before = stream.clone();
        stream.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        for chunk in SPLITS {
            assert_eq!(
                scan(None, &stream, chunk),
                (
                    before.clone(),
                    vec![ScanEvent::Violation(FrameViolation::Unmasked)]
                )
            );
        }
    }

    #[test]
    fn long_control_frames_are_refused_pings_pongs_and_closes() {
        for op in [0x88, 0x89, 0x8a] {
            assert_eq!(
                scan(None, &masked(1, op, &[0; 126]), 1000).1,
                vec![ScanEvent::Violation(FrameViolation::ControlTooLong)]
            );
        }
    }

    #[test]
    fn an_oversized_message_is_withheld_and_reported_with_its_start() {
        let text: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut stream = masked(1, 0x81, b"small");
        // Fragmented, with a ping between the fragments.
        stream.extend(masked(2, 0x01, &text[..6000]));
        stream.extend(masked(3, 0x89, b"p"));
        stream.extend(masked(4, 0x80, &text[6000..]));
        stream.extend(masked(5, 0x81, b"after"));
        let mut want = masked(1, 0x81, b"small");
        want.extend(masked(3, 0x89, b"p"));
        want.extend(masked(5, 0x81, b"after"));
        for chunk in SPLITS {
            let (out, events) = scan(Some(5000), &stream, chunk);
            assert_eq!(out, want, "{chunk}");
            assert_eq!(
                events,
                vec![ScanEvent::Oversized(Oversized {
                    opcode: 1,
                    bytes: 10_000,
                    prefix: text[..PREFIX_BYTES].to_vec(),
                })],
                "{chunk}"
            );
        }
    }

    #[test]
    fn a_message_going_over_in_a_later_fragment_keeps_its_first_fragments() {
        let mut stream = masked(1, 0x02, &[1; 60]);
        stream.extend(masked(2, 0x00, &[2; 60]));
        stream.extend(masked(3, 0x80, &[3; 60]));
        stream.extend(masked(4, 0x82, &[4; 10]));
        let mut want = masked(1, 0x02, &[1; 60]);
        want.extend(masked(4, 0x82, &[4; 10]));
        let (out, events) = scan(Some(100), &stream, 17);
        assert_eq!(out, want);
        assert_eq!(
            events,
            vec![ScanEvent::Oversized(Oversized {
                opcode: 2,
                bytes: 180,
                prefix: vec![],
            })]
        );
    }

    #[test]
    fn a_new_message_inside_a_fragmented_one_is_a_violation() {
        let mut stream = masked(1, 0x01, b"part");
        stream.extend(masked(2, 0x81, b"whole"));
        assert_eq!(
            scan(Some(100), &stream, 1000),
            (
                masked(1, 0x01, b"part"),
                vec![ScanEvent::Violation(FrameViolation::Interleaved)]
            )
        );
    }
}
