//! Book messages on the wire (docs/PROTOCOL.md "Order books"): one depth
//! class's snapshot or diff at one `seq`, in JSON, as one binary frame, or
//! as an SSE event. Each is encoded once per update per depth class per
//! encoding ([`ClassFrames`]) and shared by every subscriber of that class;
//! a slow client's merged diff is encoded for it alone with the same code.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::model::book::{BookSide, DepthClass, Level};
use crate::model::tick::Tick;
use crate::wire::encode::Encoding;
use crate::wire::frame::{FrameBuilder, OPCODE_BINARY, OPCODE_TEXT};
use crate::wire::json::push_u64;
use crate::wire::sse;

/// `kind` byte of a binary book frame's header record.
pub(crate) const BOOK_RECORD_KIND: u8 = 3;
/// Length of a binary book frame's header record.
pub(crate) const BOOK_HEADER_LEN: usize = 64;
/// Length of each level record after it.
pub(crate) const BOOK_LEVEL_LEN: usize = 16;

/// What one depth class's subscribers are sent for one book update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookMessage {
    /// Replaces the client's book (else: levels to set, size 0 removes).
    pub snapshot: bool,
    /// The first `seq` this message covers: a client holding the book at
    /// any `seq` from `from - 1` on applies it (absolute sizes make a
    /// repeated level harmless). Equal to `seq` for a snapshot.
    pub from: u64,
    /// Bids (best first), then asks (best first).
    pub levels: Vec<Level>,
    /// [`crate::model::book::Book::checksum`] of the book after it.
    pub checksum: u32,
}

/// One depth class's message for an update, with its encodings made on
/// first use and shared.
#[derive(Debug, Default)]
pub struct ClassFrames {
    /// `None`: the update did not change this class's window, so its
    /// subscribers are sent nothing.
    pub msg: Option<BookMessage>,
    /// JSON text frame.
    json: OnceLock<Bytes>,
    /// The binary frame and the SSE event, boxed on first use: nearly every
    /// book update has a JSON subscriber, fewer have the others, and the
    /// history keeps each update's frames for minutes (two empty cells
    /// per class would be a third of a book update's memory).
    others: OnceLock<Box<OtherFrames>>,
}

/// A class's frames for the encodings other than JSON.
#[derive(Debug, Default)]
struct OtherFrames {
    /// The binary frame (header record + one record per level).
    binary: OnceLock<Bytes>,
    /// The SSE event.
    sse: OnceLock<Bytes>,
}

/// A book update's messages, one per depth class (indexed by
/// `DepthClass as usize`).
#[derive(Debug, Default)]
pub struct BookFrames {
    pub classes: [ClassFrames; 3],
}

impl BookFrames {
    pub fn new(msgs: [Option<BookMessage>; 3]) -> BookFrames {
        let [a, b, c] = msgs;
        let class = |msg| ClassFrames {
            msg,
            ..ClassFrames::default()
        };
        BookFrames {
            classes: [class(a), class(b), class(c)],
        }
    }

    pub fn class(&self, d: DepthClass) -> &ClassFrames {
        &self.classes[d as usize]
    }

    /// What these messages hold in memory while the history keeps them, in
    /// bytes, from what is fixed when the update is sequenced (the history
    /// adds it when the update comes in and takes the same away when it
    /// leaves): the messages and their levels, plus each message's JSON
    /// frame, estimated (JSON is encoded lazily, but nearly every book
    /// update has a JSON subscriber; binary and SSE frames are left out, as
    /// they are for ticks).
    pub fn held_bytes(&self) -> usize {
        /// A JSON book message: `type`, `sym`, `seq`, `from`, `depth`,
        /// `cs`, … and about 40 bytes per `[side, px, sz]` level.
        const JSON_BASE: usize = 120;
        const JSON_PER_LEVEL: usize = 40;
        std::mem::size_of::<BookFrames>()
            + self
                .classes
                .iter()
                .filter_map(|c| c.msg.as_ref())
                .map(|m| {
                    m.levels.len() * (std::mem::size_of::<Level>() + JSON_PER_LEVEL) + JSON_BASE
                })
                .sum::<usize>()
    }
}

impl ClassFrames {
    /// The frame (or SSE block) for `encoding`, encoded on first use.
    /// Borrowed, not cloned: every subscriber copies it into its write
    /// buffer, and a clone per delivery would bump one shared reference
    /// count from every fan-out worker.
    pub fn frame(&self, tick: &Tick, depth: DepthClass, encoding: Encoding) -> Option<&Bytes> {
        let msg = self.msg.as_ref()?;
        let cell = match encoding {
            Encoding::Json => &self.json,
            Encoding::Binary => &self.others.get_or_init(Box::default).binary,
            Encoding::Sse => &self.others.get_or_init(Box::default).sse,
        };
        Some(cell.get_or_init(|| encode(tick, depth, msg, encoding)))
    }
}

/// Encodes a book message for one encoding (`tick` gives sym, seq, ts, rx).
pub fn encode(tick: &Tick, depth: DepthClass, msg: &BookMessage, encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => {
            let mut b = FrameBuilder::with_capacity(160 + msg.levels.len() * 32);
            book_json(b.payload(), tick, depth, msg);
            b.finish(OPCODE_TEXT)
        }
        Encoding::Binary => {
            let mut b =
                FrameBuilder::with_capacity(BOOK_HEADER_LEN + msg.levels.len() * BOOK_LEVEL_LEN);
            book_binary(b.payload(), tick, depth, msg);
            b.finish(OPCODE_BINARY)
        }
        Encoding::Sse => {
            let mut out = Vec::with_capacity(200 + msg.levels.len() * 32);
            sse::open_event(&mut out, "book");
            book_json(&mut out, tick, depth, msg);
            sse::open_id(&mut out);
            out.extend_from_slice(tick.sym.as_bytes());
            out.extend_from_slice(b":book:");
            push_u64(&mut out, tick.seq);
            sse::close_event(&mut out);
            Bytes::from(out)
        }
    }
}

/// `{"type":"book","sym":…,"seq":…,"from":…,"ts":…,"rx":…,"depth":10,
/// ["snap":true,]"bids":[[px,sz],…],"asks":[[px,sz],…],"cs":…}`.
pub fn book_json(out: &mut Vec<u8>, t: &Tick, depth: DepthClass, msg: &BookMessage) {
    out.extend_from_slice(br#"{"type":"book","sym":""#);
    out.extend_from_slice(t.sym.as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    push_u64(out, t.seq);
    out.extend_from_slice(br#","from":"#);
    push_u64(out, msg.from);
    out.extend_from_slice(br#","ts":"#);
    push_u64(out, t.ts);
    out.extend_from_slice(br#","rx":"#);
    push_u64(out, t.rx);
    out.extend_from_slice(br#","depth":"#);
    push_u64(out, u64::from(depth.wire()));
    if msg.snapshot {
        out.extend_from_slice(br#","snap":true"#);
    }
    for (name, side) in [
        (&br#","bids":["#[..], BookSide::Bid),
        (br#"],"asks":["#, BookSide::Ask),
    ] {
        out.extend_from_slice(name);
        let mut first = true;
        for l in msg.levels.iter().filter(|l| l.side == side) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'[');
            l.px.write_to(out);
            out.push(b',');
            l.sz.write_to(out);
            out.push(b']');
        }
    }
    out.extend_from_slice(br#"],"cs":"#);
    push_u64(out, u64::from(msg.checksum));
    out.push(b'}');
}

/// The binary book frame's payload: a 64-byte header record, then one
/// 16-byte record per level (bids first, then asks). Layout in
/// docs/PROTOCOL.md "Binary book frames".
pub fn book_binary(out: &mut Vec<u8>, t: &Tick, depth: DepthClass, msg: &BookMessage) {
    let bids = msg
        .levels
        .iter()
        .filter(|l| l.side == BookSide::Bid)
        .count() as u32;
    let asks = msg.levels.len() as u32 - bids;
    let mut h = [0u8; BOOK_HEADER_LEN];
    h[0] = BOOK_RECORD_KIND;
    h[1] = u8::from(msg.snapshot);
    h[2..4].copy_from_slice(&depth.wire().to_le_bytes());
    h[4..8].copy_from_slice(&t.key.symbol().to_le_bytes());
    h[8..16].copy_from_slice(&t.seq.to_le_bytes());
    h[16..24].copy_from_slice(&t.ts.to_le_bytes());
    h[24..32].copy_from_slice(&t.rx.to_le_bytes());
    h[32..40].copy_from_slice(&msg.from.to_le_bytes());
    h[40..44].copy_from_slice(&msg.checksum.to_le_bytes());
    h[44..48].copy_from_slice(&bids.to_le_bytes());
    h[48..52].copy_from_slice(&asks.to_le_bytes());
    out.extend_from_slice(&h);
    for side in [BookSide::Bid, BookSide::Ask] {
        for l in msg.levels.iter().filter(|l| l.side == side) {
            out.extend_from_slice(&l.px.raw().to_le_bytes());
            out.extend_from_slice(&l.sz.raw().to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::book::TopOfBook;
    use crate::model::decimal::Fixed;
    use crate::model::tick::{Channel, Event, KeyId};

    fn tick() -> Tick {
        Tick {
            key: KeyId::new(5, Channel::Book),
            sym: "BTCUSDT".into(),
            seq: 9,
            ts: 1,
            rx: 2,
            event: Event::Book(TopOfBook::default()),
        }
    }

    fn msg() -> BookMessage {
        let l = |side, px: &str, sz: &str| Level {
            side,
            px: Fixed::parse(px).unwrap(),
            sz: Fixed::parse(sz).unwrap(),
        };
        BookMessage {
            snapshot: false,
            from: 7,
            levels: vec![
                l(BookSide::Bid, "100.5", "2"),
                l(BookSide::Bid, "100", "0"),
                l(BookSide::Ask, "101", "0.25"),
            ],
            checksum: 3_000_000_000,
        }
    }

    #[test]
    fn json_lists_bids_then_asks_with_the_checksum() {
        let mut v = Vec::new();
        book_json(&mut v, &tick(), DepthClass::D10, &msg());
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            r#"{"type":"book","sym":"BTCUSDT","seq":9,"from":7,"ts":1,"rx":2,"depth":10,"bids":[[100.5,2],[100,0]],"asks":[[101,0.25]],"cs":3000000000}"#
        );
    }

    #[test]
    fn a_binary_diff_of_k_levels_is_one_frame() {
        let f = encode(&tick(), DepthClass::Full, &msg(), Encoding::Binary);
        let payload = &f[2..];
        assert_eq!(f[0], 0x80 | OPCODE_BINARY);
        assert_eq!(payload.len(), BOOK_HEADER_LEN + 3 * BOOK_LEVEL_LEN);
        assert_eq!(payload[0], BOOK_RECORD_KIND);
        assert_eq!(u16::from_le_bytes([payload[2], payload[3]]), 0);
        assert_eq!(u32::from_le_bytes(payload[4..8].try_into().unwrap()), 5);
        assert_eq!(u64::from_le_bytes(payload[32..40].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_le_bytes(payload[40..44].try_into().unwrap()),
            3_000_000_000
        );
        assert_eq!(u32::from_le_bytes(payload[44..48].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(payload[48..52].try_into().unwrap()), 1);
        let px = i64::from_le_bytes(payload[64..72].try_into().unwrap());
        assert_eq!(px, 100_500_000_000);
    }
}
