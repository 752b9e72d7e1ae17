//! QuantConnect Lean equity tick zips: one header-less CSV per zip,
//! `<yyyymmdd>_<sym>_Trade_Tick.csv` (ms since New York midnight,
//! price×10000, size, exchange, condition, suspicious) or
//! `<yyyymmdd>_<sym>_Quote_Tick.csv` (ms, bid×10000, bid size, ask×10000,
//! ask size, exchange, condition, suspicious).
//!
//! Times are New York wall-clock times, converted to UTC with the tz
//! database (EST/EDT). Rows flagged suspicious are skipped and counted.
//!
//! Quote rows are one-sided: in AlgoSeek's data each row is the national
//! best on one side, so a row replaces that side of a running best bid and
//! offer (the previous venue on that side is no longer at the best). Rows
//! with the same millisecond are applied together, and a quote tick is
//! written when bid, bid size, ask or ask size changed and both sides exist.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::{BadRows, ImportError, OrderCheck};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, Side, validate_symbol};

const NAME_HELP: &str = "expected a Lean tick zip holding one <yyyymmdd>_<symbol>_Trade_Tick.csv or <yyyymmdd>_<symbol>_Quote_Tick.csv";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Trade,
    Quote,
}

/// New York wall-clock milliseconds of one day → UTC ns.
struct DayClock {
    date: jiff::civil::Date,
    tz: jiff::tz::TimeZone,
    /// UTC ns of local midnight, when the UTC offset is the same all day
    /// (every day but the two DST changes): then conversion is one add.
    fixed_midnight: Option<i128>,
}

impl DayClock {
    fn new(date: jiff::civil::Date) -> Result<DayClock, String> {
        let tz = jiff::tz::TimeZone::get("America/New_York").map_err(|e| e.to_string())?;
        let at = |h: i8| {
            date.at(h, 0, 0, 0)
                .to_zoned_datetime(tz.clone())
                .map_err(|e| e.to_string())
        };
        let midnight = at(0)?;
        let last = date
            .at(23, 59, 59, 999_000_000)
            .to_zoned_datetime(tz.clone())
            .map_err(|e| e.to_string())?;
        let fixed_midnight =
            (midnight.offset() == last.offset()).then(|| midnight.timestamp().as_nanosecond());
        Ok(DayClock {
            date,
            tz,
            fixed_midnight,
        })
    }

    fn utc_ns(&self, ms: u64) -> Result<u64, String> {
        if ms >= 86_400_000 {
            return Err(format!(
                "{ms} ms since midnight is not within a day (0 to 86399999)"
            ));
        }
        let ns = match self.fixed_midnight {
            Some(m) => m + i128::from(ms) * 1_000_000,
            None => {
                let span = jiff::Span::new().milliseconds(ms as i64);
                let local = self
                    .date
                    .to_datetime(jiff::civil::Time::midnight())
                    .checked_add(span)
                    .map_err(|e| e.to_string())?;
                local
                    .to_zoned_datetime(self.tz.clone())
                    .map_err(|e| e.to_string())?
                    .timestamp()
                    .as_nanosecond()
            }
        };
        u64::try_from(ns).map_err(|_| "time before 1970".to_owned())
    }
}

/// Reads one Lean zip; returns how many rows the source flagged suspicious.
pub(super) fn read(
    path: &Path,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
) -> Result<u64, ImportError> {
    let file_name = path.display().to_string();
    let bad_file = |message: String| ImportError::BadFile {
        file: file_name.clone(),
        message,
    };
    let file = File::open(path).map_err(|source| ImportError::Io {
        file: file_name.clone(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| bad_file(format!("not a readable zip archive ({e}); {NAME_HELP}")))?;
    let names: Vec<String> = zip
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let csvs: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].to_ascii_lowercase().ends_with(".csv"))
        .collect();
    let index = match csvs.as_slice() {
        [i] => *i,
        [] => {
            let held = if names.is_empty() {
                "nothing".to_owned()
            } else {
                names.join(", ")
            };
            return Err(bad_file(format!(
                "the zip holds no CSV file (it holds {held}); {NAME_HELP}"
            )));
        }
        _ => {
            return Err(bad_file(format!(
                "the zip holds {} CSV files; {NAME_HELP}",
                csvs.len()
            )));
        }
    };
    let inner = names[index].clone();
    let (date, sym, kind) = parse_csv_name(&inner).map_err(|m| {
        bad_file(format!(
            "cannot tell date, symbol and kind from `{inner}`: {m}; {NAME_HELP}"
        ))
    })?;
    let clock = DayClock::new(date).map_err(|m| bad_file(format!("New York time zone: {m}")))?;
    let mut entry = zip
        .by_index(index)
        .map_err(|e| bad_file(format!("cannot open `{inner}` in the zip: {e}")))?;
    // Decompressed and checked against its CRC-32 before any row is read:
    // damaged data is reported as a damaged zip, not as the bad rows it
    // would decode to (the check only happens at the entry's end). One
    // Lean entry is one symbol's day: tens of MB at most.
    let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 28));
    std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| {
        bad_file(format!(
            "the zip is corrupt: `{inner}` does not decompress to what the archive recorded ({e})"
        ))
    })?;
    drop(entry);
    let entry = &data[..];
    let ctx = Ctx {
        file: &file_name,
        inner: &inner,
        sym: Arc::from(sym.as_str()),
        clock,
    };
    match kind {
        Kind::Trade => read_trades(&ctx, entry, bad, out),
        Kind::Quote => read_quotes(&ctx, entry, bad, out),
    }
}

fn parse_csv_name(inner: &str) -> Result<(jiff::civil::Date, String, Kind), String> {
    let base = inner.rsplit('/').next().unwrap_or(inner);
    let lower = base.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('_').collect();
    let [date, sym, kind, "tick.csv"] = parts.as_slice() else {
        return Err("the name does not have the form <yyyymmdd>_<symbol>_<kind>_Tick.csv".into());
    };
    let kind = match *kind {
        "trade" => Kind::Trade,
        "quote" => Kind::Quote,
        other => return Err(format!("kind `{other}` is neither Trade nor Quote")),
    };
    let date = if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        jiff::civil::Date::strptime("%Y%m%d", date).map_err(|e| e.to_string())?
    } else {
        return Err(format!("`{date}` is not a yyyymmdd date"));
    };
    let sym = sym.to_ascii_uppercase();
    validate_symbol(&sym)?;
    Ok((date, sym, kind))
}

struct Ctx<'a> {
    file: &'a str,
    inner: &'a str,
    sym: Arc<str>,
    clock: DayClock,
}

impl Ctx<'_> {
    fn row_error(&self, line: u64, message: String) -> ImportError {
        ImportError::BadRow {
            file: format!("{} ({})", self.file, self.inner),
            line,
            message,
        }
    }
}

/// Iterates the CSV rows of a zip entry: (line, fields), or a row error,
/// or a file-level error when the entry cannot be read (corrupt deflate
/// data, CRC mismatch, not text).
fn rows<R: Read>(
    ctx: &Ctx<'_>,
    entry: R,
    mut each: impl FnMut(u64, &csv::ByteRecord) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(entry);
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = rec.position().map_or(line, |p| p.line());
                each(line, &rec)?;
            }
            Err(e) => {
                return Err(ImportError::BadFile {
                    file: ctx.file.to_owned(),
                    message: format!(
                        "`{}` cannot be read near line {line}: {e} (the zip is corrupt or truncated)",
                        ctx.inner
                    ),
                });
            }
        }
    }
}

fn field<T: std::str::FromStr>(rec: &csv::ByteRecord, i: usize, name: &str) -> Result<T, String> {
    let raw = rec
        .get(i)
        .ok_or_else(|| format!("field {} ({name}) is missing", i + 1))?;
    let text =
        std::str::from_utf8(raw).map_err(|_| format!("field {} ({name}) is not text", i + 1))?;
    text.trim().parse::<T>().map_err(|_| {
        format!(
            "field {} ({name}) is `{}`; expected a non-negative integer",
            i + 1,
            text.chars().take(20).collect::<String>()
        )
    })
}

fn check_width(rec: &csv::ByteRecord, want: usize, layout: &str) -> Result<(), String> {
    if rec.len() != want {
        return Err(format!("{} fields; expected {want}: {layout}", rec.len()));
    }
    Ok(())
}

/// Lean prices are integers of 1e-4; tickwire's unit is 1e-9.
fn price(p: i64, name: &str) -> Result<Fixed, String> {
    p.checked_mul(100_000)
        .map(Fixed)
        .ok_or_else(|| format!("{name} {p} is out of range"))
}

fn size(s: u64, name: &str) -> Result<Fixed, String> {
    i64::try_from(s)
        .ok()
        .and_then(Fixed::from_units)
        .ok_or_else(|| format!("{name} {s} is out of range"))
}

fn suspicious(rec: &csv::ByteRecord, i: usize) -> Result<bool, String> {
    match field::<u8>(rec, i, "suspicious")? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!(
            "field {} (suspicious) is {v}; expected 0 or 1",
            i + 1
        )),
    }
}

const TRADE_LAYOUT: &str = "ms since midnight, price×10000, size, exchange, condition, suspicious";
const QUOTE_LAYOUT: &str =
    "ms since midnight, bid×10000, bid size, ask×10000, ask size, exchange, condition, suspicious";

fn read_trades<R: Read>(
    ctx: &Ctx<'_>,
    entry: R,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
) -> Result<u64, ImportError> {
    let mut order = OrderCheck::new();
    let mut flagged = 0;
    rows(ctx, entry, |line, rec| {
        let parsed = (|| {
            check_width(rec, 6, TRADE_LAYOUT)?;
            let ms: u64 = field(rec, 0, "ms since midnight")?;
            let raw_px: i64 = field(rec, 1, "price×10000")?;
            let raw_qty: u64 = field(rec, 2, "size")?;
            // A trade happened at a price and for some shares: a price at
            // or below zero or a size of zero is a broken row, not a tick.
            if raw_px <= 0 {
                return Err(format!(
                    "price is {raw_px}×10000; a Lean equity trade's price must be positive"
                ));
            }
            if raw_qty == 0 {
                return Err("size is 0; a trade's size must be positive".to_owned());
            }
            let px = price(raw_px, "price")?;
            let qty = size(raw_qty, "size")?;
            let susp = suspicious(rec, 5)?;
            let ts = ctx.clock.utc_ns(ms)?;
            order.check(ts)?;
            Ok::<_, String>((ts, px, qty, susp))
        })();
        match parsed {
            Ok((_, _, _, true)) => flagged += 1,
            Ok((ts, px, qty, false)) => out.push(NewTick {
                book: None,
                sym: ctx.sym.clone(),
                ts,
                event: Event::Trade {
                    px,
                    qty,
                    side: Side::Unknown,
                },
            }),
            Err(m) => bad.handle(ctx.row_error(line, m))?,
        }
        Ok(())
    })?;
    Ok(flagged)
}

/// One side of the running best bid and offer: (price, size).
type Level = Option<(Fixed, Fixed)>;

fn read_quotes<R: Read>(
    ctx: &Ctx<'_>,
    entry: R,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
) -> Result<u64, ImportError> {
    let mut order = OrderCheck::new();
    let mut flagged = 0;
    let (mut bid, mut ask): (Level, Level) = (None, None);
    let mut last_written: Option<(Level, Level)> = None;
    // The millisecond whose rows are being applied, as UTC ns.
    let mut group: Option<u64> = None;
    let mut emit = |ts: u64, bid: Level, ask: Level, out: &mut Vec<NewTick>| {
        if let (Some((b, bs)), Some((a, as_))) = (bid, ask)
            && last_written != Some((bid, ask))
        {
            last_written = Some((bid, ask));
            out.push(NewTick {
                book: None,
                sym: ctx.sym.clone(),
                ts,
                event: Event::Quote {
                    bid: b,
                    bsz: bs,
                    ask: a,
                    asz: as_,
                },
            });
        }
    };
    rows(ctx, entry, |line, rec| {
        let parsed = (|| {
            check_width(rec, 8, QUOTE_LAYOUT)?;
            let ms: u64 = field(rec, 0, "ms since midnight")?;
            let bpx: i64 = field(rec, 1, "bid×10000")?;
            let bsz: u64 = field(rec, 2, "bid size")?;
            let apx: i64 = field(rec, 3, "ask×10000")?;
            let asz: u64 = field(rec, 4, "ask size")?;
            let susp = suspicious(rec, 7)?;
            let side = |px: i64, sz: u64, name: &str| -> Result<Level, String> {
                match (px, sz) {
                    (0, 0) => Ok(None),
                    (p, s) if p > 0 && s > 0 => Ok(Some((price(p, name)?, size(s, name)?))),
                    (p, s) => Err(format!(
                        "{name} is {p}×10000 for size {s}; expected both positive, or both 0 for no {name}"
                    )),
                }
            };
            let b = side(bpx, bsz, "bid")?;
            let a = side(apx, asz, "ask")?;
            if b.is_none() && a.is_none() && !susp {
                return Err("neither bid nor ask is quoted; expected at least one side".into());
            }
            let ts = ctx.clock.utc_ns(ms)?;
            order.check(ts)?;
            Ok::<_, String>((ts, b, a, susp))
        })();
        match parsed {
            Ok((ts, b, a, susp)) => {
                if group.is_some_and(|g| g != ts) {
                    emit(group.unwrap_or(ts), bid, ask, out);
                }
                group = Some(ts);
                if susp {
                    flagged += 1;
                } else {
                    if b.is_some() {
                        bid = b;
                    }
                    if a.is_some() {
                        ask = a;
                    }
                }
            }
            Err(m) => bad.handle(ctx.row_error(line, m))?,
        }
        Ok(())
    })?;
    if let Some(ts) = group {
        emit(ts, bid, ask, out);
    }
    Ok(flagged)
}
