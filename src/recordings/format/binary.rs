//! The binary encoding's byte layout (docs/RECORDING.md): header, symbol,
//! trade, quote, book, bar and end records, all little-endian and fixed-size.

use crate::model::bar::{Bar, BarInterval};
use crate::model::book::{BookChange, BookSide, Level};
use crate::model::decimal::Fixed;
use crate::model::instrument::{Instrument, MAX_CURRENCY_LEN, validate_currency};
use crate::model::tick::{Event, Side};

/// First 12 bytes of a binary recording; then u16 version, u16 flags (0).
pub const MAGIC: &[u8; 12] = b"tickwire.rec";
pub const HEADER_LEN: usize = 16;

pub const TAG_SYMBOL: u8 = 0x01;
pub const TAG_TRADE: u8 = 0x02;
pub const TAG_QUOTE: u8 = 0x03;
/// Format version 2: an order-book snapshot or diff (docs/RECORDING.md
/// "Book records"); tags 0x05–0x07 are reserved for books.
pub const TAG_BOOK: u8 = 0x04;
/// A book record's fixed part; then 16 bytes per level.
pub const BOOK_HEAD_LEN: usize = 24;
pub const BOOK_LEVEL_LEN: usize = 16;
/// Most levels one book record may hold (a corrupt count is refused
/// before anything is allocated for it).
pub const MAX_BOOK_RECORD_LEVELS: usize = 1 << 20;
/// Format version 3: an OHLCV bar (docs/RECORDING.md "Bar records").
pub const TAG_BAR: u8 = 0x0A;
pub const TAG_END: u8 = 0xFF;
/// Journal files (`serve --journal`): the server's position of the next
/// tick or book record (global ingest offset, per-key `seq`, `rx`).
pub const TAG_POSITION: u8 = 0x08;
/// Journal files: the feed epoch of the positions that follow.
pub const TAG_EPOCH: u8 = 0x09;
/// An instrument's reference data (tick size, decimals, lot size,
/// currency): not a tick. Tags 0x0A and 0x0B are left to other records.
pub const TAG_REFERENCE: u8 = 0x0C;
/// A reference record's fixed part; then the currency's bytes.
pub const REFERENCE_HEAD_LEN: usize = 24;
/// `decimals` byte of a reference record whose decimals are not known.
const NO_DECIMALS: u8 = 0xFF;
pub const POSITION_LEN: usize = 32;
pub const EPOCH_LEN: usize = 16;

/// Total record sizes, tag included. A symbol record is 2 + its length.
pub const TRADE_LEN: usize = 32;
pub const QUOTE_LEN: usize = 48;
pub const END_LEN: usize = 16;
pub const BAR_LEN: usize = 88;

pub fn header(version: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..12].copy_from_slice(MAGIC);
    h[12..14].copy_from_slice(&version.to_le_bytes());
    h
}

/// A symbol record: defines the next symbol id (0, 1, 2, … in file order).
pub fn symbol(out: &mut Vec<u8>, sym: &str) {
    out.push(TAG_SYMBOL);
    // Symbols are 1..=32 bytes (validated before they get here).
    out.push(sym.len() as u8);
    out.extend_from_slice(sym.as_bytes());
}

/// Quote record flags (byte 1), bit 0: the quote was produced by the book
/// record before it (journal files); players skip it.
pub const QUOTE_DERIVED: u8 = 0x01;

/// Whether a whole tick record is a quote flagged [`QUOTE_DERIVED`].
pub fn is_derived(rec: &[u8]) -> bool {
    rec[0] == TAG_QUOTE && rec[1] & QUOTE_DERIVED != 0
}

/// Flags the quote record just written at the end of `out` as derived.
pub fn mark_derived(out: &mut [u8]) {
    let at = out.len() - QUOTE_LEN;
    debug_assert_eq!(out[at], TAG_QUOTE);
    out[at + 1] |= QUOTE_DERIVED;
}

pub fn tick(out: &mut Vec<u8>, sym_id: u32, ts: u64, event: &Event) {
    match *event {
        Event::Bar(ref b) => bar(out, sym_id, ts, b),
        Event::Trade { px, qty, side } => {
            out.extend_from_slice(&[TAG_TRADE, side.as_byte(), 0, 0]);
            out.extend_from_slice(&sym_id.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&px.raw().to_le_bytes());
            out.extend_from_slice(&qty.raw().to_le_bytes());
        }
        // A book tick's own levels are not a tick record; its top of book
        // is recorded as the quote it also produced.
        Event::Quote { bid, bsz, ask, asz }
        | Event::Book(crate::model::book::TopOfBook { bid, bsz, ask, asz }) => {
            out.extend_from_slice(&[TAG_QUOTE, 0, 0, 0]);
            out.extend_from_slice(&sym_id.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
            for v in [bid, bsz, ask, asz] {
                out.extend_from_slice(&v.raw().to_le_bytes());
            }
        }
    }
}

/// A bar record: tag, interval code, flags (bit 0 closed), a reserved
/// byte, symbol id, ts, start, open, high, low, close, volume, quote
/// volume, buy volume, trade count.
fn bar(out: &mut Vec<u8>, sym_id: u32, ts: u64, b: &Bar) {
    out.extend_from_slice(&[TAG_BAR, b.interval.code(), u8::from(b.closed), 0]);
    out.extend_from_slice(&sym_id.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&b.start.to_le_bytes());
    for v in [
        b.open,
        b.high,
        b.low,
        b.close,
        b.volume,
        b.quote_volume,
        b.buy_volume,
    ] {
        out.extend_from_slice(&v.raw().to_le_bytes());
    }
    out.extend_from_slice(&b.trades.to_le_bytes());
}

/// Decodes a whole bar record ([`BAR_LEN`] bytes): returns (symbol id, ts,
/// event), or what is wrong with it.
pub fn decode_bar(rec: &[u8]) -> Result<(u32, u64, Event), String> {
    let interval = BarInterval::from_code(rec[1])
        .ok_or_else(|| format!("bar record with interval code {}; expected 1 to 4", rec[1]))?;
    if rec[2] > 1 || rec[3] != 0 {
        return Err("reserved bits of a bar record are not zero".into());
    }
    let start = u64_at(rec, 16);
    if !start.is_multiple_of(interval.nanos()) {
        return Err(format!(
            "bar record starting at {start} ns, not at the start of a {} interval",
            interval.as_str()
        ));
    }
    let b = Bar {
        interval,
        start,
        open: fixed_at(rec, 24),
        high: fixed_at(rec, 32),
        low: fixed_at(rec, 40),
        close: fixed_at(rec, 48),
        volume: fixed_at(rec, 56),
        quote_volume: fixed_at(rec, 64),
        buy_volume: fixed_at(rec, 72),
        trades: u64_at(rec, 80),
        closed: rec[2] == 1,
    };
    if b.volume.raw() < 0 || b.buy_volume.raw() < 0 {
        return Err("a bar volume is negative; volumes are zero or more".into());
    }
    Ok((u32_at(rec, 4), u64_at(rec, 8), Event::Bar(Box::new(b))))
}

/// A book record: tag, flags (bit 0 snapshot), 2 reserved bytes, symbol
/// id, ts, bid count, ask count, then each level's price and size (bids
/// first).
pub fn book(out: &mut Vec<u8>, sym_id: u32, ts: u64, change: &BookChange) {
    let levels = change.levels();
    let snap = matches!(change, BookChange::Snapshot(_));
    let bids = levels.iter().filter(|l| l.side == BookSide::Bid).count() as u32;
    out.extend_from_slice(&[TAG_BOOK, u8::from(snap), 0, 0]);
    out.extend_from_slice(&sym_id.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&bids.to_le_bytes());
    out.extend_from_slice(&(levels.len() as u32 - bids).to_le_bytes());
    for side in [BookSide::Bid, BookSide::Ask] {
        for l in levels.iter().filter(|l| l.side == side) {
            out.extend_from_slice(&l.px.raw().to_le_bytes());
            out.extend_from_slice(&l.sz.raw().to_le_bytes());
        }
    }
}

/// A book record's level count from its fixed part.
pub fn book_levels(head: &[u8]) -> Result<(usize, usize), String> {
    let (b, a) = (u32_at(head, 16) as usize, u32_at(head, 20) as usize);
    if b + a > MAX_BOOK_RECORD_LEVELS {
        return Err(format!(
            "book record with {} levels; at most {MAX_BOOK_RECORD_LEVELS} are allowed",
            b + a
        ));
    }
    if head[1] > 1 || head[2] != 0 || head[3] != 0 {
        return Err("reserved bits of a book record are not zero".into());
    }
    Ok((b, a))
}

/// Decodes a whole book record (fixed part + levels).
pub fn decode_book(rec: &[u8]) -> Result<(u32, u64, BookChange), String> {
    let (bids, _) = book_levels(rec)?;
    let levels: Vec<Level> = rec[BOOK_HEAD_LEN..]
        .chunks_exact(BOOK_LEVEL_LEN)
        .enumerate()
        .map(|(i, l)| Level {
            side: if i < bids {
                BookSide::Bid
            } else {
                BookSide::Ask
            },
            px: fixed_at(l, 0),
            sz: fixed_at(l, 8),
        })
        .collect();
    if let Some(l) = levels.iter().find(|l| l.sz.raw() < 0) {
        return Err(format!("book level at {} has a negative size", l.px));
    }
    let change = if rec[1] & 1 == 1 {
        BookChange::Snapshot(levels)
    } else {
        BookChange::Diff(levels)
    };
    Ok((u32_at(rec, 4), u64_at(rec, 8), change))
}

/// A reference record: tag, decimals (0xFF: not known), currency length
/// (0: not known), a reserved byte, symbol id, tick size, lot size (0: not
/// known), then the currency's ASCII bytes.
pub fn reference(out: &mut Vec<u8>, sym_id: u32, i: &Instrument) {
    let currency = i.currency.as_deref().unwrap_or("");
    out.extend_from_slice(&[
        TAG_REFERENCE,
        i.decimals.unwrap_or(NO_DECIMALS),
        // Validated: at most MAX_CURRENCY_LEN (16) bytes.
        currency.len() as u8,
        0,
    ]);
    out.extend_from_slice(&sym_id.to_le_bytes());
    for v in [i.tick_size, i.lot_size] {
        out.extend_from_slice(&v.map_or(0, |f| f.raw()).to_le_bytes());
    }
    out.extend_from_slice(currency.as_bytes());
}

/// A reference record's currency length from its fixed part.
pub fn reference_len(head: &[u8]) -> Result<usize, String> {
    let n = head[2] as usize;
    if n > MAX_CURRENCY_LEN {
        return Err(format!(
            "reference record with a {n}-byte currency; at most {MAX_CURRENCY_LEN}"
        ));
    }
    if head[3] != 0 {
        return Err("the reserved byte of a reference record is not zero".into());
    }
    Ok(REFERENCE_HEAD_LEN + n)
}

/// Decodes a whole reference record: (symbol id, instrument).
pub fn decode_reference(rec: &[u8]) -> Result<(u32, Instrument), String> {
    let step = |at: usize, name: &str| match fixed_at(rec, at) {
        Fixed(0) => Ok(None),
        f if f.raw() > 0 => Ok(Some(f)),
        f => Err(format!(
            "reference record with {name} {f}; a step is above zero"
        )),
    };
    let decimals = match rec[1] {
        NO_DECIMALS => None,
        d if d <= 9 => Some(d),
        d => return Err(format!("reference record with {d} decimals; at most 9")),
    };
    let currency = match &rec[REFERENCE_HEAD_LEN..] {
        [] => None,
        c => {
            let c = std::str::from_utf8(c).unwrap_or("\u{fffd}");
            validate_currency(c).map_err(|why| format!("reference record: {why}"))?;
            Some(c.to_owned())
        }
    };
    Ok((
        u32_at(rec, 4),
        Instrument {
            tick_size: step(8, "tick size")?,
            decimals,
            currency,
            lot_size: step(16, "lot size")?,
        },
    ))
}

/// A position record: applies to the tick or book record that follows.
pub fn position(out: &mut Vec<u8>, offset: u64, seq: u64, rx: u64) {
    out.extend_from_slice(&[TAG_POSITION, 0, 0, 0, 0, 0, 0, 0]);
    for v in [offset, seq, rx] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An epoch record: the feed epoch of the positions after it.
pub fn epoch(out: &mut Vec<u8>, epoch: u64) {
    out.extend_from_slice(&[TAG_EPOCH, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&epoch.to_le_bytes());
}

pub fn end(out: &mut Vec<u8>, ticks: u64) {
    out.extend_from_slice(&[TAG_END, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&ticks.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn fixed_at(b: &[u8], at: usize) -> Fixed {
    Fixed(u64_at(b, at) as i64)
}

/// Decodes a whole trade or quote record (`rec.len()` is its full size):
/// returns (symbol id, ts, event), or what is wrong with it.
pub fn decode_tick(rec: &[u8]) -> Result<(u32, u64, Event), String> {
    let sym_id = u32_at(rec, 4);
    let ts = u64_at(rec, 8);
    let event = match rec[0] {
        TAG_TRADE => {
            let side = match rec[1] {
                b'B' => Side::Buy,
                b'S' => Side::Sell,
                b'N' => Side::Unknown,
                other => {
                    return Err(format!(
                        "trade record with side byte 0x{other:02x}; expected 'B', 'S' or 'N'"
                    ));
                }
            };
            Event::Trade {
                px: fixed_at(rec, 16),
                qty: fixed_at(rec, 24),
                side,
            }
        }
        _ => Event::Quote {
            bid: fixed_at(rec, 16),
            bsz: fixed_at(rec, 24),
            ask: fixed_at(rec, 32),
            asz: fixed_at(rec, 40),
        },
    };
    if rec[2] != 0 || rec[3] != 0 || (rec[0] == TAG_QUOTE && rec[1] & !QUOTE_DERIVED != 0) {
        return Err("reserved bytes of a tick record are not zero".into());
    }
    // As on the wire (docs/PROTOCOL.md): sizes are zero or more.
    let sizes = match event {
        Event::Trade { qty, .. } => [qty, qty],
        Event::Quote { bsz, asz, .. }
        | Event::Book(crate::model::book::TopOfBook { bsz, asz, .. }) => [bsz, asz],
        // Bars have their own record and decoder.
        Event::Bar(_) => [Fixed::ZERO; 2],
    };
    if sizes.iter().any(|s| s.raw() < 0) {
        return Err("a size is negative; sizes are zero or more".into());
    }
    Ok((sym_id, ts, event))
}
