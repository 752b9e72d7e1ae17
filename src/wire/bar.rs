//! Bars on the wire (docs/PROTOCOL.md "Bars"): the JSON fields of a bar
//! message and the 128-byte `tickwire.bin.v1` bar record, alone in its
//! binary frame.

use bytes::Bytes;

use crate::model::bar::Bar;
use crate::model::decimal::Fixed;
use crate::model::tick::Tick;
use crate::wire::encode::{FLAG_SNAPSHOT, RECORD_FLAGS, RECORD_LEN};
use crate::wire::frame::FrameBuilder;
use crate::wire::json::push_u64;

fn push_fixed(out: &mut Vec<u8>, key: &[u8], v: Fixed) {
    out.extend_from_slice(key);
    v.write_to(out);
}

/// A bar's fields, each with its leading comma (docs/PROTOCOL.md "Bars").
pub(crate) fn bar_json_fields(out: &mut Vec<u8>, b: &Bar) {
    out.extend_from_slice(br#","interval":""#);
    out.extend_from_slice(b.interval.as_str().as_bytes());
    out.extend_from_slice(br#"","start":"#);
    push_u64(out, b.start);
    out.extend_from_slice(br#","end":"#);
    push_u64(out, b.end());
    push_fixed(out, br#","open":"#, b.open);
    push_fixed(out, br#","high":"#, b.high);
    push_fixed(out, br#","low":"#, b.low);
    push_fixed(out, br#","close":"#, b.close);
    push_fixed(out, br#","volume":"#, b.volume);
    push_fixed(out, br#","quote_volume":"#, b.quote_volume);
    push_fixed(out, br#","buy_volume":"#, b.buy_volume);
    out.extend_from_slice(br#","trades":"#);
    push_u64(out, b.trades);
    out.extend_from_slice(if b.closed {
        br#","closed":true"#
    } else {
        br#","closed":false"#
    });
}

/// Flags bit 1 of a bar record: the bar is closed.
pub(crate) const FLAG_BAR_CLOSED: u8 = 2;
/// Record kind of a bar (trade 1, quote 2, book 3).
pub(crate) const KIND_BAR: u8 = 4;
/// Size of a bar record: two 64-byte slots.
pub(crate) const BAR_RECORD_LEN: usize = 2 * RECORD_LEN;

/// The `tickwire.bin.v1` record of a bar tick (docs/PROTOCOL.md "Binary bar
/// records"): the tick header of every record, open/high/low/close where
/// ticks have their four values, then a second 64-byte slot.
pub(crate) fn bar_record(t: &Tick, b: &Bar) -> [u8; BAR_RECORD_LEN] {
    let mut r = [0u8; BAR_RECORD_LEN];
    r[0] = KIND_BAR;
    r[1] = if b.closed { FLAG_BAR_CLOSED } else { 0 };
    r[2..4].copy_from_slice(&u16::from(b.interval.code()).to_le_bytes());
    r[4..8].copy_from_slice(&t.key.symbol().to_le_bytes());
    let words: [u64; 14] = [
        t.seq,
        t.ts,
        t.rx,
        b.open.raw() as u64,
        b.high.raw() as u64,
        b.low.raw() as u64,
        b.close.raw() as u64,
        b.volume.raw() as u64,
        b.quote_volume.raw() as u64,
        b.buy_volume.raw() as u64,
        b.trades,
        b.start,
        b.end(),
        0,
    ];
    for (i, w) in words.iter().enumerate() {
        r[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    r
}

/// A bar record as one binary frame of its own (never joined with 64-byte
/// tick records, so every frame still holds whole records of one size).
pub(crate) fn bar_record_frame(t: &Tick, b: &Bar, snapshot: bool) -> Bytes {
    let mut rec = bar_record(t, b);
    if snapshot {
        rec[RECORD_FLAGS] |= FLAG_SNAPSHOT;
    }
    let mut f = FrameBuilder::with_capacity(BAR_RECORD_LEN);
    f.payload().extend_from_slice(&rec);
    f.finish(crate::wire::frame::OPCODE_BINARY)
}
