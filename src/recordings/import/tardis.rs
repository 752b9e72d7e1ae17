//! Tardis.dev CSV: order books (`incremental_book_L2`, `book_snapshot_N`)
//! are read by [`super::tardis_book`]; `trades` (`exchange,symbol,timestamp,local_timestamp,
//! id,side,price,amount`) and `quotes` (`exchange,symbol,timestamp,
//! local_timestamp,ask_amount,ask_price,bid_price,bid_amount`), told apart
//! by the header. `timestamp` (exchange time, µs since the epoch) becomes
//! `ts`; the taker `side` (buy/sell/unknown) becomes B/S/N. Prices and
//! amounts are parsed exactly from their decimal text.
//!
//! A quote row with an empty price or amount (Tardis writes that when a
//! side of the book is empty) has no top of book to report: it is skipped
//! and counted with the rows the source flags.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::{BadRows, ImportError, OrderCheck};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, Side, validate_symbol};

const TRADE_COLUMNS: [&str; 5] = ["symbol", "timestamp", "side", "price", "amount"];
const QUOTE_COLUMNS: [&str; 6] = [
    "symbol",
    "timestamp",
    "ask_amount",
    "ask_price",
    "bid_price",
    "bid_amount",
];

/// Reads one Tardis CSV; returns how many one-sided quote rows it skipped.
pub(super) fn read(
    path: &Path,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
) -> Result<u64, ImportError> {
    let file_name = path.display().to_string();
    let file = File::open(path).map_err(|source| ImportError::Io {
        file: file_name.clone(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(file);
    let bad_file = |message: String| ImportError::BadFile {
        file: file_name.clone(),
        message,
    };
    let header = reader
        .byte_headers()
        .map_err(|e| bad_file(format!("cannot read the CSV header: {e}")))?
        .clone();
    // A binary file's "header" is raw bytes: say what it is instead of
    // printing them to the terminal.
    let is_text = |field: &[u8]| {
        std::str::from_utf8(field).is_ok_and(|s| !s.chars().any(|c| c.is_control() && c != '\t'))
    };
    if !header.iter().all(is_text) {
        return Err(bad_file(
            "not a text CSV file: its first line holds binary data; expected a Tardis trades or quotes CSV".to_owned(),
        ));
    }
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_owned())
        .collect();
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    if let Some(layout) = super::tardis_book::layout(&col).map_err(bad_file)? {
        super::tardis_book::read(reader, layout, &names, &file_name, bad, out)?;
        return Ok(0);
    }
    let is_trades = TRADE_COLUMNS.iter().all(|c| col.contains_key(c));
    let is_quotes = QUOTE_COLUMNS.iter().all(|c| col.contains_key(c));
    if !is_trades && !is_quotes {
        return Err(bad_file(format!(
            "the header is `{}`; expected Tardis trades ({}), quotes ({}), incremental_book_L2 ({}) or book_snapshot_N (asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,…) columns",
            names.join(","),
            TRADE_COLUMNS.join(","),
            QUOTE_COLUMNS.join(","),
            super::tardis_book::INCREMENTAL_COLUMNS.join(",")
        )));
    }
    let idx = |c: &str| col[c];
    let mut order = OrderCheck::new();
    let mut symbols: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
    let mut one_sided = 0u64;
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(bad_file(format!("cannot read near line {line}: {e}")));
            }
        }
        let line = rec.position().map_or(line, |p| p.line());
        let parsed = (|| -> Result<Option<NewTick>, String> {
            if rec.len() != names.len() {
                return Err(format!(
                    "{} fields; expected {} as in the header ({})",
                    rec.len(),
                    names.len(),
                    names.join(",")
                ));
            }
            let text = |c: &str| -> Result<&str, String> {
                std::str::from_utf8(&rec[idx(c)]).map_err(|_| format!("`{c}` is not text"))
            };
            let sym_raw = &rec[idx("symbol")];
            let sym = match symbols.get(sym_raw) {
                Some(s) => s.clone(),
                None => {
                    let s = super::sanitise_symbol(text("symbol")?);
                    validate_symbol(&s).map_err(|m| format!("`symbol`: {m}"))?;
                    let s: Arc<str> = Arc::from(&*s);
                    symbols.insert(sym_raw.to_vec(), s.clone());
                    s
                }
            };
            let us: u64 = text("timestamp")?.parse().map_err(|_| {
                format!(
                    "`timestamp` is `{}`; expected µs since the epoch",
                    text("timestamp").unwrap_or("?")
                )
            })?;
            let ts = us
                .checked_mul(1_000)
                .ok_or_else(|| format!("`timestamp` {us} is out of range"))?;
            order.check(ts)?;
            let number = |c: &str| -> Result<Option<Fixed>, String> {
                let t = text(c)?;
                if t.is_empty() {
                    return Ok(None);
                }
                let v = Fixed::parse(t).map_err(|e| format!("`{c}`: {e}"))?;
                if v.raw() < 0 {
                    return Err(format!("`{c}` is negative ({t})"));
                }
                Ok(Some(v))
            };
            let required = |c: &str| -> Result<Fixed, String> {
                number(c)?.ok_or_else(|| format!("`{c}` is empty; expected a decimal number"))
            };
            let event = if is_trades {
                let side = match text("side")? {
                    "buy" => Side::Buy,
                    "sell" => Side::Sell,
                    "unknown" | "" => Side::Unknown,
                    other => {
                        return Err(format!(
                            "`side` is `{other}`; expected buy, sell or unknown"
                        ));
                    }
                };
                Event::Trade {
                    px: required("price")?,
                    qty: required("amount")?,
                    side,
                }
            } else {
                match (
                    number("bid_price")?,
                    number("bid_amount")?,
                    number("ask_price")?,
                    number("ask_amount")?,
                ) {
                    (Some(bid), Some(bsz), Some(ask), Some(asz)) => {
                        Event::Quote { bid, bsz, ask, asz }
                    }
                    _ => return Ok(None),
                }
            };
            Ok(Some(NewTick {
                book: None,
                sym,
                ts,
                event,
            }))
        })();
        match parsed {
            Ok(Some(t)) => out.push(t),
            Ok(None) => one_sided += 1,
            Err(message) => bad.handle(ImportError::BadRow {
                file: file_name.clone(),
                line,
                message,
            })?,
        }
    }
    Ok(one_sided)
}
