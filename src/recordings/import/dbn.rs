//! Databento DBN files (versions 1 to 3, plain or zstd), read with the
//! `dbn` crate and upgraded to version 3 records.
//!
//! Schemas: `trades` (each record a trade tick), `mbp-1` and `tbbo` (a
//! record with action `T` is a trade tick; every record carries the top of
//! book, which becomes a quote tick when it changed), `bbo-1s`/`bbo-1m`
//! (top of book samples → quote ticks), `ohlcv-1s/1m/1h/1d` (each record a
//! closed bar: docs/RECORDING.md "Bar records"), `definition` (reference
//! data, joined to the ticks by instrument id: `dbn_definition`). Others
//! are refused.
//!
//! `ts` is `ts_recv`, Databento's index timestamp: files are sorted by it,
//! while `ts_event` (the venue's time) can step back between records.
//! Prices are already 1e-9 fixed point; sizes are whole contracts. A top of
//! book with a missing side (`UNDEF_PRICE`) yields no quote tick. The
//! aggressor side `A` (ask: a seller hit the bid) is `S`, `B` is `B`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use dbn::decode::DbnMetadata;
use dbn::{
    BboMsg, BidAskPair, InstrumentDefMsg, MboMsg, Mbp1Msg, Mbp10Msg, OhlcvMsg, Record, RecordRef,
    Schema, SymbolIndex, TradeMsg, UNDEF_PRICE, VersionUpgradePolicy,
};

use super::dbn_book::BookRebuilder;
use super::dbn_definition::Definitions;
use super::{BadRows, ImportError, OrderCheck};
use crate::model::bar::{Bar, BarInterval};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, Side, validate_symbol};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

fn side(c: std::ffi::c_char) -> Side {
    match c as u8 {
        b'B' => Side::Buy,
        b'A' => Side::Sell,
        _ => Side::Unknown,
    }
}

/// Top of book as a quote, if both sides exist.
fn book(l: &BidAskPair) -> Option<Event> {
    if l.bid_px == UNDEF_PRICE || l.ask_px == UNDEF_PRICE {
        return None;
    }
    Some(Event::Quote {
        bid: Fixed(l.bid_px),
        bsz: Fixed::from_units(l.bid_sz.into())?,
        ask: Fixed(l.ask_px),
        asz: Fixed::from_units(l.ask_sz.into())?,
    })
}

/// A DBN file's bytes, decompressed, after a check of its magic.
struct DbnBytes {
    data: Vec<u8>,
    /// Appended to offsets in errors: they count in the decompressed stream.
    note: &'static str,
}

/// Where zstd decompression failed: the positions a user can look at.
struct ZstdPosition {
    /// Decompressed bytes produced before the error.
    decompressed: u64,
    /// Compressed bytes the decoder had taken in (it reads ahead, so the
    /// fault lies within these).
    compressed: u64,
    /// The compressed file's size.
    total: u64,
}

/// Decompresses a whole zstd file, saying where it failed.
fn decompress(raw: &[u8]) -> Result<Vec<u8>, (std::io::Error, ZstdPosition)> {
    use std::io::Read;
    let mut input = raw;
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    let result = zstd::stream::read::Decoder::with_buffer(&mut input)
        .and_then(|mut d| d.read_to_end(&mut out));
    match result {
        Ok(_) => Ok(out),
        Err(e) => Err((
            e,
            ZstdPosition {
                decompressed: out.len() as u64,
                compressed: (raw.len() - input.len()) as u64,
                total: raw.len() as u64,
            },
        )),
    }
}

/// Reads and, when it is zstd, decompresses a DBN file; refuses what is not
/// DBN with what was found instead.
fn load(path: &Path, file: &str) -> Result<DbnBytes, ImportError> {
    let bad_file = |message: String| ImportError::BadFile {
        file: file.to_owned(),
        message,
    };
    let raw = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.to_owned(),
        source,
    })?;
    let zstd = raw.starts_with(&ZSTD_MAGIC);
    let note = if zstd {
        " (of the decompressed stream)"
    } else {
        ""
    };
    let data = if zstd {
        decompress(&raw).map_err(|(e, at)| {
            bad_file(format!(
                "the zstd data cannot be decompressed ({e}) after byte {} of the decompressed \
                 stream, within the first {} of the file's {} bytes: the file is truncated or corrupt",
                at.decompressed, at.compressed, at.total
            ))
        })?
    } else {
        raw
    };
    if data.len() < 8 || !data.starts_with(b"DBN") || !(1..=3).contains(&data[3]) {
        let found: String = data
            .iter()
            .take(4)
            .map(|&b| {
                if b.is_ascii_graphic() {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect();
        return Err(bad_file(format!(
            "not a DBN file: expected `DBN` and a version byte 1 to 3 at byte 0{note}, found `{found}`"
        )));
    }
    Ok(DbnBytes { data, note })
}

/// Reads one DBN file; returns how many records had no usable top of book.
pub(super) fn read(
    path: &Path,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
    defs: &mut Definitions,
) -> Result<u64, ImportError> {
    let mut books = BookRebuilder::default();
    let n = read_with(path, bad, out, &mut books, defs)?;
    if books.report.records > 0 {
        tracing::info!(file = %path.display(), report = ?books.report, "book rebuilt");
    }
    Ok(n)
}

/// [`read`], rebuilding `mbo`/`mbp-10` books in `books`.
pub(super) fn read_with(
    path: &Path,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
    books: &mut BookRebuilder,
    defs: &mut Definitions,
) -> Result<u64, ImportError> {
    let file = path.display().to_string();
    let bad_file = |message: String| ImportError::BadFile {
        file: file.clone(),
        message,
    };
    let DbnBytes { data, note } = load(path, &file)?;
    let meta_len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as u64;
    let mut decoder = dbn::decode::DbnDecoder::with_upgrade_policy(
        data.as_slice(),
        VersionUpgradePolicy::UpgradeToV3,
    )
    .map_err(|e| bad_file(format!("cannot read the DBN metadata: {e}")))?;
    let metadata = decoder.metadata().clone();
    let schema = match metadata.schema {
        Some(
            s @ (Schema::Trades
            | Schema::Mbp1
            | Schema::Tbbo
            | Schema::Bbo1S
            | Schema::Bbo1M
            | Schema::Mbo
            | Schema::Mbp10
            | Schema::Definition
            | Schema::Ohlcv1S
            | Schema::Ohlcv1M
            | Schema::Ohlcv1H
            | Schema::Ohlcv1D),
        ) => s,
        Some(other) => {
            return Err(ImportError::UnsupportedSchema {
                file,
                schema: other.to_string(),
            });
        }
        None => {
            return Err(ImportError::UnsupportedSchema {
                file,
                schema: "(none: a mixed-schema file)".into(),
            });
        }
    };
    let symbol_map = metadata
        .symbol_map()
        .map_err(|e| bad_file(format!("cannot read the symbol mappings: {e}")))?;
    // Without mappings, a file of a single requested symbol names it.
    let only_symbol = (metadata.symbols.len() == 1).then(|| metadata.symbols[0].clone());
    let mut symbols: HashMap<String, Arc<str>> = HashMap::new();
    let mut last_book: HashMap<u32, Event> = HashMap::new();
    let mut order = OrderCheck::new();
    let mut no_book = 0u64;
    let mut offset = 8 + meta_len;
    loop {
        let rec = match decoder.decode_ref() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                // The record framing is lost: nothing after this can be read.
                return Err(ImportError::BadRecord {
                    file,
                    offset,
                    note,
                    message: format!(
                        "cannot decode a {schema} record: {e} (the file is truncated or corrupt)"
                    ),
                });
            }
        };
        let at = offset;
        offset += rec.record_size() as u64;
        let record_error = |message: String| ImportError::BadRecord {
            file: file.clone(),
            offset: at,
            note,
            message,
        };
        let instrument = rec.header().instrument_id;
        if schema == Schema::Definition {
            let Some(m) = rec.get::<InstrumentDefMsg>() else {
                bad.handle(record_error(format!(
                    "record type 0x{:02x} in a definition file; expected definition records",
                    rec.header().rtype
                )))?;
                continue;
            };
            // Its name: the file's mapping, else the publisher's raw symbol.
            let name = match symbol_map.get_for_rec(&rec) {
                Some(n) => n.clone(),
                None => m.raw_symbol().unwrap_or("").to_owned(),
            };
            let sanitised = super::sanitise_symbol(&name);
            let pushed = match validate_symbol(&sanitised) {
                Ok(()) => defs.push(m, Arc::from(&*sanitised)),
                Err(why) => Err(format!("symbol of instrument {instrument}: {why}")),
            };
            if let Err(m) = pushed {
                bad.handle(record_error(m))?;
            }
            continue;
        }
        let parsed = match schema {
            Schema::Mbo | Schema::Mbp10 => book_record(&rec, schema, books, &mut order),
            _ => match bar_interval(schema) {
                Some(interval) => bar_record(&rec, interval, &mut order),
                None => parse_record(&rec, schema, &mut order),
            },
        };
        let (ts, trade, top) = match parsed {
            Ok(v) => v,
            Err(m) => {
                bad.handle(record_error(m))?;
                continue;
            }
        };
        let name = match symbol_map.get_for_rec(&rec).or(only_symbol.as_ref()) {
            Some(n) => n,
            None => {
                bad.handle(record_error(format!(
                    "instrument {instrument} has no symbol in the file's mappings"
                )))?;
                continue;
            }
        };
        let sym = match symbols.get(name) {
            Some(s) => s.clone(),
            None => {
                let sanitised = super::sanitise_symbol(name);
                if let Err(m) = validate_symbol(&sanitised) {
                    bad.handle(record_error(format!(
                        "symbol of instrument {instrument}: {m}"
                    )))?;
                    continue;
                }
                let s: Arc<str> = Arc::from(&*sanitised);
                symbols.insert(name.to_string(), s.clone());
                s
            }
        };
        defs.name_ticks(instrument, &sym);
        if let Some(event) = trade {
            out.push(NewTick {
                book: None,
                sym: sym.clone(),
                ts,
                event,
            });
        }
        if matches!(schema, Schema::Mbo | Schema::Mbp10) {
            // Book schemas: the book itself is recorded; the server derives
            // the quotes from its top.
            if let Some(change) = books.take_book() {
                out.push(NewTick {
                    book: Some(Arc::new(change)),
                    sym,
                    ts,
                    event: Event::Book(crate::model::book::TopOfBook::default()),
                });
            }
            continue;
        }
        match top {
            Some(q) if last_book.get(&instrument) != Some(&q) => {
                last_book.insert(instrument, q.clone());
                out.push(NewTick {
                    book: None,
                    sym,
                    ts,
                    event: q,
                });
            }
            Some(_) => {}
            None if !matches!(schema, Schema::Trades | Schema::Mbo | Schema::Mbp10)
                && bar_interval(schema).is_none() =>
            {
                no_book += 1
            }
            None => {}
        }
    }
    books.finish();
    // The dbn decoder takes a cut-off last record for the end of the data.
    if offset < data.len() as u64 {
        return Err(ImportError::BadRecord {
            file,
            offset,
            note,
            message: format!(
                "truncated record: the last {} bytes do not make a whole {schema} record (the file is truncated or corrupt)",
                data.len() as u64 - offset
            ),
        });
    }
    Ok(no_book)
}

/// The bar interval of an `ohlcv-*` schema.
fn bar_interval(schema: Schema) -> Option<BarInterval> {
    match schema {
        Schema::Ohlcv1S => Some(BarInterval::S1),
        Schema::Ohlcv1M => Some(BarInterval::M1),
        Schema::Ohlcv1H => Some(BarInterval::H1),
        Schema::Ohlcv1D => Some(BarInterval::D1),
        _ => None,
    }
}

/// An `ohlcv-*` record as a closed bar. `ts_event` is the interval's
/// start (Databento's convention); the tick's `ts` is the interval's end,
/// when the bar is complete, so bars keep their place in time among
/// trades. DBN has no trade count, quote volume or aggressor volume:
/// those are 0.
fn bar_record(
    rec: &RecordRef<'_>,
    interval: BarInterval,
    order: &mut OrderCheck,
) -> Result<(u64, Option<Event>, Option<Event>), String> {
    let m = rec.get::<OhlcvMsg>().ok_or_else(|| {
        format!(
            "record type 0x{:02x} in an ohlcv-{} file; expected ohlcv records",
            rec.header().rtype,
            interval.as_str()
        )
    })?;
    let start = m.hd.ts_event;
    order.check(start)?;
    if start % interval.nanos() != 0 {
        return Err(format!(
            "bar at ts_event {start} does not start a {} interval",
            interval.as_str()
        ));
    }
    if [m.open, m.high, m.low, m.close].contains(&UNDEF_PRICE) {
        return Err("a bar without a price (UNDEF_PRICE)".into());
    }
    if m.low > m.open.min(m.close) || m.high < m.open.max(m.close) {
        return Err(format!(
            "bar prices are inconsistent: open {} high {} low {} close {}",
            Fixed(m.open),
            Fixed(m.high),
            Fixed(m.low),
            Fixed(m.close)
        ));
    }
    let volume = i64::try_from(m.volume)
        .ok()
        .and_then(Fixed::from_units)
        .ok_or_else(|| format!("bar volume {} is out of range", m.volume))?;
    let bar = Bar {
        interval,
        start,
        open: Fixed(m.open),
        high: Fixed(m.high),
        low: Fixed(m.low),
        close: Fixed(m.close),
        volume,
        quote_volume: Fixed::ZERO,
        buy_volume: Fixed::ZERO,
        trades: 0,
        closed: true,
    };
    Ok((bar.end(), Some(Event::Bar(Box::new(bar))), None))
}

/// An `mbo` or `mbp-10` record through the book rebuilder: its receive
/// time, trade and (at an event boundary, if the top moved) quote.
fn book_record(
    rec: &RecordRef<'_>,
    schema: Schema,
    books: &mut BookRebuilder,
    order: &mut OrderCheck,
) -> Result<(u64, Option<Event>, Option<Event>), String> {
    let wrong = || {
        format!(
            "record type 0x{:02x} in an {schema} file",
            rec.header().rtype
        )
    };
    let (ts, snapshot, emitted) = if schema == Schema::Mbo {
        let m = rec.get::<MboMsg>().ok_or_else(wrong)?;
        (m.ts_recv, m.flags.is_snapshot(), books.mbo(m)?)
    } else {
        let m = rec.get::<Mbp10Msg>().ok_or_else(wrong)?;
        (m.ts_recv, m.flags.is_snapshot(), books.mbp10(m))
    };
    // Snapshot records carry the snapshot's generation time, not a
    // receive time in file order.
    if !snapshot {
        order.check(ts)?;
    }
    Ok((ts, emitted.trade, emitted.quote))
}

/// One record's receive time, trade (if it is one) and top of book (if the
/// schema carries one), checked for time order.
fn parse_record(
    rec: &RecordRef<'_>,
    schema: Schema,
    order: &mut OrderCheck,
) -> Result<(u64, Option<Event>, Option<Event>), String> {
    let (ts, trade, top) = match schema {
        Schema::Trades => {
            let m = rec.get::<TradeMsg>().ok_or_else(|| {
                format!(
                    "record type 0x{:02x} in a trades file; expected trade records",
                    rec.header().rtype
                )
            })?;
            (m.ts_recv, Some((m.price, m.size, m.side)), None)
        }
        Schema::Mbp1 | Schema::Tbbo => {
            let m = rec.get::<Mbp1Msg>().ok_or_else(|| {
                format!(
                    "record type 0x{:02x} in an {schema} file; expected mbp-1 records",
                    rec.header().rtype
                )
            })?;
            let trade = (m.action as u8 == b'T').then_some((m.price, m.size, m.side));
            (m.ts_recv, trade, Some(m.levels[0].clone()))
        }
        _ => {
            let m = rec.get::<BboMsg>().ok_or_else(|| {
                format!(
                    "record type 0x{:02x} in a {schema} file; expected bbo records",
                    rec.header().rtype
                )
            })?;
            (m.ts_recv, None, Some(m.levels[0].clone()))
        }
    };
    order.check(ts)?;
    let trade = match trade {
        None => None,
        Some((px, _, _)) if px == UNDEF_PRICE => {
            return Err("a trade without a price (UNDEF_PRICE)".into());
        }
        Some((px, size, s)) => Some(Event::Trade {
            px: Fixed(px),
            qty: Fixed::from_units(size.into()).ok_or("size out of range")?,
            side: side(s),
        }),
    };
    Ok((ts, trade, top.as_ref().and_then(book)))
}
