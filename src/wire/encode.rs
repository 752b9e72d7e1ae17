//! Encoding: ticks and control messages into complete WebSocket frames.
//!
//! A server frame is written whole (header + payload, FIN set, unmasked) into
//! one buffer, so it can be shared by every subscriber as a `Bytes` and copied
//! or written as is. Tick JSON is written by hand: integers with itoa, prices
//! and sizes with [`Fixed::write_to`], never through `f64`.

use bytes::Bytes;

use crate::wire::frame::{FrameBuilder, OPCODE_TEXT};
use crate::wire::json::push_u64;
use crate::wire::sse;

use crate::model::decimal::Fixed;
use crate::model::epoch::Epoch;
use crate::model::tick::{Event, Tick};
use crate::wire::bar::{bar_record, bar_record_frame};
use crate::wire::ts_format::TsFormat;

fn push_fixed(out: &mut Vec<u8>, key: &[u8], v: Fixed) {
    out.extend_from_slice(key);
    v.write_to(out);
}

/// Writes the protocol JSON of a tick. Symbols are validated at ingest to a
/// character set that needs no JSON escaping.
pub fn tick_json(out: &mut Vec<u8>, t: &Tick, snapshot: bool) {
    tick_json_as(out, t, snapshot, TsFormat::Number)
}

/// `u64` as a JSON number, or as a JSON string of the same digits.
fn push_time(out: &mut Vec<u8>, v: u64, format: TsFormat) {
    match format {
        TsFormat::Number => push_u64(out, v),
        TsFormat::String => {
            out.push(b'"');
            push_u64(out, v);
            out.push(b'"');
        }
    }
}

/// [`tick_json`] with `ts` and `rx` in the given form.
pub fn tick_json_as(out: &mut Vec<u8>, t: &Tick, snapshot: bool, format: TsFormat) {
    match t.event {
        Event::Trade { .. } => out.extend_from_slice(br#"{"type":"trade","sym":""#),
        Event::Quote { .. } => out.extend_from_slice(br#"{"type":"quote","sym":""#),
        Event::Book(_) => out.extend_from_slice(br#"{"type":"book_top","sym":""#),
        Event::Bar(_) => out.extend_from_slice(br#"{"type":"bar","sym":""#),
    }
    out.extend_from_slice(t.sym.as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    push_u64(out, t.seq);
    out.extend_from_slice(br#","ts":"#);
    push_time(out, t.ts, format);
    out.extend_from_slice(br#","rx":"#);
    push_time(out, t.rx, format);
    event_json_fields(out, &t.event);
    if snapshot {
        out.extend_from_slice(br#","snap":true"#);
    }
    out.push(b'}');
}

/// Writes an event's own fields, each with its leading comma:
/// `,"px":189.23,"qty":100,"side":"B"` or `,"bid":…,"bsz":…,"ask":…,"asz":…`.
/// Shared by every writer of tick JSON (the feed, recordings, the bench
/// publisher), so prices are written one way everywhere.
pub fn event_json_fields(out: &mut Vec<u8>, event: &Event) {
    match event {
        &Event::Trade { px, qty, side } => {
            push_fixed(out, br#","px":"#, px);
            push_fixed(out, br#","qty":"#, qty);
            out.extend_from_slice(br#","side":""#);
            out.push(side.as_byte());
            out.push(b'"');
        }
        &Event::Quote { bid, bsz, ask, asz }
        | &Event::Book(crate::model::book::TopOfBook { bid, bsz, ask, asz }) => {
            push_fixed(out, br#","bid":"#, bid);
            push_fixed(out, br#","bsz":"#, bsz);
            push_fixed(out, br#","ask":"#, ask);
            push_fixed(out, br#","asz":"#, asz);
        }
        Event::Bar(b) => crate::wire::bar::bar_json_fields(out, b),
    }
}

/// The tick as one complete text frame.
pub(crate) fn tick_json_frame(t: &Tick, snapshot: bool) -> Bytes {
    tick_json_frame_as(t, snapshot, TsFormat::Number)
}

fn tick_json_frame_as(t: &Tick, snapshot: bool, format: TsFormat) -> Bytes {
    let mut b = FrameBuilder::with_capacity(164);
    tick_json_as(b.payload(), t, snapshot, format);
    b.finish(OPCODE_TEXT)
}

/// A tick as one Server-Sent Events block:
/// `event: trade\ndata: {json}\nid: EPOCH:OFFSET\n\n` for a tick this
/// server sequenced or carried in its history (`position`: the feed epoch
/// and the tick's ingest offset; `Last-Event-ID` then resumes every key of
/// the stream), else `id: SYM:trade:SEQ` (one key's position). A snapshot
/// has no `id:` line: it is not a position in the stream, and the client's
/// last event id stays the one the stream gave before the snapshots. The
/// JSON has no newline, so one `data:` line carries it.
pub(crate) fn tick_sse_event(t: &Tick, snapshot: bool, position: Option<(Epoch, u64)>) -> Bytes {
    tick_sse_event_as(t, snapshot, position, TsFormat::Number)
}

fn tick_sse_event_as(
    t: &Tick,
    snapshot: bool,
    position: Option<(Epoch, u64)>,
    format: TsFormat,
) -> Bytes {
    let channel = t.event.channel().as_str();
    let mut out = Vec::with_capacity(224);
    sse::open_event(&mut out, channel);
    tick_json_as(&mut out, t, snapshot, format);
    if !snapshot {
        sse::open_id(&mut out);
        match position {
            Some((epoch, offset)) => {
                out.extend_from_slice(epoch.to_string().as_bytes());
                out.push(b':');
                push_u64(&mut out, offset);
            }
            None => {
                out.extend_from_slice(t.sym.as_bytes());
                out.push(b':');
                out.extend_from_slice(channel.as_bytes());
                out.push(b':');
                push_u64(&mut out, t.seq);
            }
        }
    }
    sse::close_event(&mut out);
    Bytes::from(out)
}

/// How ticks are encoded for one subscriber, chosen by subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `tickwire.json.v1`: one JSON text frame per tick.
    #[default]
    Json,
    /// `tickwire.bin.v1`: 64-byte records, several per binary frame.
    Binary,
    /// Server-Sent Events on `/v1/sse`: one `event:`/`data:`/`id:` block per
    /// tick, written as plain text (no WebSocket framing).
    Sse,
}

impl Encoding {
    pub const JSON_PROTOCOL: &str = "tickwire.json.v1";
    pub const BIN_PROTOCOL: &str = "tickwire.bin.v1";
    /// Not a WebSocket subprotocol: the name SSE connections log under.
    pub const SSE_PROTOCOL: &str = "sse";
    /// Every encoding, in `as usize` order (metrics label them).
    pub const ALL: [Encoding; 3] = [Encoding::Json, Encoding::Binary, Encoding::Sse];

    /// The subprotocol name, as answered and as `hello.protocol`.
    pub fn protocol(self) -> &'static str {
        match self {
            Encoding::Json => Self::JSON_PROTOCOL,
            Encoding::Binary => Self::BIN_PROTOCOL,
            Encoding::Sse => Self::SSE_PROTOCOL,
        }
    }

    /// Label value in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Binary => "binary",
            Encoding::Sse => "sse",
        }
    }
}

/// Size of one `tickwire.bin.v1` record.
pub(crate) const RECORD_LEN: usize = 64;
/// Offset of the flags byte in a record; bit 0 is "snapshot".
pub(crate) const RECORD_FLAGS: usize = 1;
pub(crate) const FLAG_SNAPSHOT: u8 = 1;
/// The `tickwire.bin.v1` record of a tick (docs/PROTOCOL.md's layout), live.
/// Prices and sizes are the raw 1e-9 fixed-point units.
pub(crate) fn tick_record(t: &Tick) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    let (kind, a, b, c, d) = match t.event {
        Event::Trade { px, qty, side } => (1u8, px.raw(), qty.raw(), i64::from(side.as_byte()), 0),
        Event::Quote { bid, bsz, ask, asz } => (2u8, bid.raw(), bsz.raw(), ask.raw(), asz.raw()),
        // Never sent: a book tick goes out as its book frames.
        Event::Book(t) => (3u8, t.bid.raw(), t.bsz.raw(), t.ask.raw(), t.asz.raw()),
        // Never sent either: a bar goes out as its own frame
        // ([`EncodedTick::bar_frame`]); its first slot is this.
        Event::Bar(ref b) => {
            let mut r = [0u8; RECORD_LEN];
            r.copy_from_slice(&bar_record(t, b)[..RECORD_LEN]);
            return r;
        }
    };
    r[0] = kind;
    // r[1] flags and r[2..4] reserved stay 0 for a live tick.
    r[4..8].copy_from_slice(&t.key.symbol().to_le_bytes());
    r[8..16].copy_from_slice(&t.seq.to_le_bytes());
    r[16..24].copy_from_slice(&t.ts.to_le_bytes());
    r[24..32].copy_from_slice(&t.rx.to_le_bytes());
    r[32..40].copy_from_slice(&a.to_le_bytes());
    r[40..48].copy_from_slice(&b.to_le_bytes());
    r[48..56].copy_from_slice(&c.to_le_bytes());
    r[56..64].copy_from_slice(&d.to_le_bytes());
    r
}

/// A sequenced tick with its frames, encoded once and shared by every
/// subscriber of its key (and by the last-value cache).
#[derive(Debug)]
pub struct EncodedTick {
    pub tick: Tick,
    /// Where ingest put the tick in this server's stream (1, 2, …: its
    /// global ingest offset), for the history and for positions a client
    /// resumes from; 0 for a tick that was never in this server's ring (a
    /// last value read from elsewhere).
    pub offset: u64,
    /// The feed epoch the tick's `seq` belongs to (in SSE event ids).
    pub epoch: Epoch,
    /// The `tickwire.json.v1` text frame.
    pub json: Bytes,
    /// The same tick flagged `"snap":true`, encoded on first use.
    snap_json: std::sync::OnceLock<Bytes>,
    /// The `tickwire.bin.v1` record, encoded when the first binary
    /// subscriber needs it: a feed with no binary client never pays for it.
    record: std::sync::OnceLock<[u8; RECORD_LEN]>,
    /// The Server-Sent Events block, encoded when the first SSE client
    /// needs it, like the record.
    sse: std::sync::OnceLock<Bytes>,
    /// A book update's messages per depth class (`None` for a tick): book
    /// subscribers are sent these instead of the tick's own frames.
    pub book: Option<Box<crate::wire::book::BookFrames>>,
    /// The frames few ticks need (`?ts=string`, a bar's binary frame),
    /// each encoded when the first client needs it; boxed, so a tick no
    /// such client sees costs one pointer, not three frames' slots (ticks
    /// live on in the ring and the history).
    ts_string: std::sync::OnceLock<Box<RareFrames>>,
    /// A quote a book update produced: the journal flags it so that a
    /// replay of the journal, which plays the book update, does not
    /// publish it a second time.
    pub derived: bool,
}

/// A tick's rarely needed frames, encoded on first use.
#[derive(Debug, Default)]
struct RareFrames {
    /// The JSON frame with `ts`/`rx` as strings.
    json: std::sync::OnceLock<Bytes>,
    /// The SSE block with `ts`/`rx` as strings.
    sse: std::sync::OnceLock<Bytes>,
    /// A bar's binary frame (one 128-byte record), live.
    bar: std::sync::OnceLock<Bytes>,
}

impl EncodedTick {
    /// A tick with no place in this server's stream (offset 0).
    pub fn new(tick: Tick) -> EncodedTick {
        EncodedTick::at(tick, 0, Epoch::default())
    }

    /// A tick at `offset` of this server's stream, in `epoch`.
    pub fn at(tick: Tick, offset: u64, epoch: Epoch) -> EncodedTick {
        let json = tick_json_frame(&tick, false);
        EncodedTick {
            tick,
            offset,
            epoch,
            json,
            snap_json: std::sync::OnceLock::new(),
            record: std::sync::OnceLock::new(),
            sse: std::sync::OnceLock::new(),
            ts_string: std::sync::OnceLock::new(),
            book: None,
            derived: false,
        }
    }

    /// A book update at `offset` in `epoch` (0 and the default epoch for a
    /// snapshot built for a subscriber): its tick (channel `book`) and its
    /// messages; it has no tick frame of its own.
    pub fn with_book(
        tick: Tick,
        offset: u64,
        epoch: Epoch,
        frames: crate::wire::book::BookFrames,
    ) -> EncodedTick {
        EncodedTick {
            tick,
            offset,
            epoch,
            json: Bytes::new(),
            snap_json: std::sync::OnceLock::new(),
            record: std::sync::OnceLock::new(),
            sse: std::sync::OnceLock::new(),
            ts_string: std::sync::OnceLock::new(),
            book: Some(Box::new(frames)),
            derived: false,
        }
    }

    /// The JSON frame with `ts`/`rx` as `format` says; snapshots with
    /// strings are built when needed (as SSE snapshots are).
    pub fn json_frame_as(&self, snapshot: bool, format: TsFormat) -> Bytes {
        match (format, snapshot) {
            (TsFormat::Number, _) => self.json_frame(snapshot).clone(),
            (TsFormat::String, true) => tick_json_frame_as(&self.tick, true, format),
            (TsFormat::String, false) => self
                .ts_string
                .get_or_init(Box::default)
                .json
                .get_or_init(|| tick_json_frame_as(&self.tick, false, format))
                .clone(),
        }
    }

    /// The SSE block with `ts`/`rx` as `format` says.
    pub fn sse_event_as(&self, snapshot: bool, format: TsFormat) -> Bytes {
        match (format, snapshot) {
            (TsFormat::Number, _) => self.sse_event(snapshot),
            (TsFormat::String, true) => tick_sse_event_as(&self.tick, true, None, format),
            (TsFormat::String, false) => self
                .ts_string
                .get_or_init(Box::default)
                .sse
                .get_or_init(|| tick_sse_event_as(&self.tick, false, self.position(), format))
                .clone(),
        }
    }

    /// The binary record, live or flagged snapshot. The snapshot variant is
    /// the shared record with one flag bit set in the copy: no second cache.
    pub fn record(&self, snapshot: bool) -> [u8; RECORD_LEN] {
        let mut r = *self.record.get_or_init(|| tick_record(&self.tick));
        if snapshot {
            r[RECORD_FLAGS] |= FLAG_SNAPSHOT;
        }
        r
    }

    /// A bar tick's binary frame (`None` for other ticks): live shared,
    /// a snapshot built when needed.
    pub fn bar_frame(&self, snapshot: bool) -> Option<Bytes> {
        let Event::Bar(b) = &self.tick.event else {
            return None;
        };
        Some(if snapshot {
            bar_record_frame(&self.tick, b, true)
        } else {
            self.ts_string
                .get_or_init(Box::default)
                .bar
                .get_or_init(|| bar_record_frame(&self.tick, b, false))
                .clone()
        })
    }

    /// The SSE event block, live or as a snapshot (snapshots are rare, as
    /// for JSON: built when needed, the live one is shared).
    pub fn sse_event(&self, snapshot: bool) -> Bytes {
        if snapshot {
            tick_sse_event(&self.tick, true, None)
        } else {
            self.sse
                .get_or_init(|| tick_sse_event(&self.tick, false, self.position()))
                .clone()
        }
    }

    /// `(epoch, offset)` when the tick has a place in this server's stream.
    pub fn position(&self) -> Option<(Epoch, u64)> {
        (self.offset != 0).then_some((self.epoch, self.offset))
    }

    /// The JSON frame, live or as a snapshot.
    pub fn json_frame(&self, snapshot: bool) -> &Bytes {
        if snapshot {
            self.snap_json
                .get_or_init(|| tick_json_frame(&self.tick, true))
        } else {
            &self.json
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tick::{Channel, KeyId, Side};

    fn trade(px: i64, qty: i64) -> Tick {
        Tick {
            key: KeyId::new(0, Channel::Trade),
            sym: "AAPL".into(),
            seq: 42,
            ts: 1_700_000_000_123_456_789,
            rx: 1_700_000_000_123_460_001,
            event: Event::Trade {
                px: Fixed(px),
                qty: Fixed(qty),
                side: Side::Buy,
            },
        }
    }

    fn json(t: &Tick, snap: bool) -> String {
        let mut v = Vec::new();
        tick_json(&mut v, t, snap);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn trade_json_matches_the_protocol_example() {
        let t = trade(189_230_000_000, 100_000_000_000);
        assert_eq!(
            json(&t, false),
            r#"{"type":"trade","sym":"AAPL","seq":42,"ts":1700000000123456789,"rx":1700000000123460001,"px":189.23,"qty":100,"side":"B"}"#
        );
        assert!(json(&t, true).ends_with(r#""side":"B","snap":true}"#));
    }

    #[test]
    fn sse_event_carries_the_json_and_a_resumable_id() {
        let e = EncodedTick::new(trade(189_230_000_000, 100_000_000_000));
        assert_eq!(
            std::str::from_utf8(&e.sse_event(false)).unwrap(),
            "event: trade\ndata: {\"type\":\"trade\",\"sym\":\"AAPL\",\"seq\":42,\"ts\":1700000000123456789,\"rx\":1700000000123460001,\"px\":189.23,\"qty\":100,\"side\":\"B\"}\nid: AAPL:trade:42\n\n"
        );
        let snap = e.sse_event(true);
        assert!(
            std::str::from_utf8(&snap)
                .unwrap()
                .contains(r#""side":"B","snap":true}"#)
        );
    }

    #[test]
    fn quote_json_matches_the_protocol_example() {
        let t = Tick {
            key: KeyId::new(0, Channel::Quote),
            sym: "AAPL".into(),
            seq: 43,
            ts: 1_700_000_000_123_456_999,
            rx: 1_700_000_000_123_460_100,
            event: Event::Quote {
                bid: Fixed(189_220_000_000),
                bsz: Fixed(300_000_000_000),
                ask: Fixed(189_240_000_000),
                asz: Fixed(200_000_000_000),
            },
        };
        assert_eq!(
            json(&t, false),
            r#"{"type":"quote","sym":"AAPL","seq":43,"ts":1700000000123456999,"rx":1700000000123460100,"bid":189.22,"bsz":300,"ask":189.24,"asz":200}"#
        );
    }

    #[test]
    fn prices_are_exact_at_the_edges() {
        let cases = [
            (0, "0"),
            (-1, "-0.000000001"),
            (123_456_789, "0.123456789"),
            (-2_500_000_000, "-2.5"),
            (i64::MAX, "9223372036.854775807"),
            (i64::MIN, "-9223372036.854775808"),
        ];
        for (raw, text) in cases {
            let s = json(&trade(raw, 1), false);
            assert!(s.contains(&format!(r#""px":{text},"#)), "{s}");
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert!(v["px"].is_number());
        }
    }

    #[test]
    fn tick_frame_is_header_plus_json() {
        let t = trade(1, 1);
        let f = tick_json_frame(&t, false);
        let body = json(&t, false);
        assert_eq!(&f[4..], body.as_bytes());
        assert_eq!(f[1], 126);
    }

    #[test]
    fn trade_record_follows_the_protocol_layout() {
        let t = trade(189_230_000_000, 100_000_000_000);
        let r = tick_record(&t);
        let u64_at = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap());
        let i64_at = |o: usize| i64::from_le_bytes(r[o..o + 8].try_into().unwrap());
        assert_eq!((r[0], r[1], r[2], r[3]), (1, 0, 0, 0));
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 0);
        assert_eq!(u64_at(8), 42);
        assert_eq!(u64_at(16), 1_700_000_000_123_456_789);
        assert_eq!(u64_at(24), 1_700_000_000_123_460_001);
        assert_eq!(i64_at(32), 189_230_000_000);
        assert_eq!(i64_at(40), 100_000_000_000);
        assert_eq!(i64_at(48), i64::from(b'B'));
        assert_eq!(i64_at(56), 0);
        let e = EncodedTick::new(t);
        assert_eq!(e.record(false), r);
        assert_eq!(e.record(true)[1], FLAG_SNAPSHOT);
        assert_eq!(e.record(true)[2..], r[2..]);
    }

    #[test]
    fn quote_record_carries_raw_fixed_point_and_the_symbol_id() {
        let t = Tick {
            key: KeyId::new(9, Channel::Quote),
            sym: "MSFT".into(),
            seq: 7,
            ts: 1,
            rx: 2,
            event: Event::Quote {
                bid: Fixed(-1),
                bsz: Fixed(i64::MAX),
                ask: Fixed(i64::MIN),
                asz: Fixed(5),
            },
        };
        let r = tick_record(&t);
        let i64_at = |o: usize| i64::from_le_bytes(r[o..o + 8].try_into().unwrap());
        assert_eq!(r[0], 2);
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 9);
        assert_eq!(
            [i64_at(32), i64_at(40), i64_at(48), i64_at(56)],
            [-1, i64::MAX, i64::MIN, 5]
        );
    }
}
