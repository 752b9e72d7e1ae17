//! Binance depth CSV (as nautilus_trader keeps Binance USD-M futures depth
//! samples): `symbol,timestamp,first_update_id,last_update_id,side,
//! update_type,price,qty[,pu]`, one row per level. Consecutive rows of one
//! (symbol, timestamp, update ids, type) are one message: `snap` rows a
//! snapshot, `set` rows a diff (absolute `qty`, 0 removes the level).
//! `timestamp` is ms since the epoch.
//!
//! Update ids are checked as Binance documents for a local book: diffs
//! wholly older than the snapshot (`last_update_id` < the snapshot's) are
//! dropped; the first applied diff must straddle it (`first_update_id` ≤
//! snapshot + 1 and `last_update_id` ≥ snapshot); each later one must
//! continue the previous (`pu` = previous `last_update_id` where the file
//! has `pu`, else `first_update_id` = previous + 1). A jump is an error
//! naming the line (under `--skip-bad`: skipped and counted, and so is
//! every diff of that symbol until its next snapshot, since its book would
//! be wrong). The state carries across the inputs of one import, so a
//! snapshot file and an update file are checked as one stream.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::{BadRows, ImportError};
use crate::model::book::{BookChange, BookSide, Level, TopOfBook};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, validate_symbol};

const COLUMNS: [&str; 8] = [
    "symbol",
    "timestamp",
    "first_update_id",
    "last_update_id",
    "side",
    "update_type",
    "price",
    "qty",
];

/// Per symbol: where its update ids stand.
#[derive(Default)]
pub(crate) struct Continuity {
    symbols: HashMap<String, SymbolIds>,
}

#[derive(Clone, Copy)]
struct SymbolIds {
    /// `last_update_id` of the snapshot or of the last diff applied.
    last: i64,
    /// Whether a diff was applied since the snapshot.
    continued: bool,
    /// After a jump (under `--skip-bad`): diffs wait for a snapshot.
    broken: bool,
}

/// One message being gathered from consecutive rows.
struct Message {
    line: u64,
    sym: String,
    ts_ms: u64,
    first: i64,
    last: i64,
    pu: Option<i64>,
    snap: bool,
    levels: Vec<Level>,
}

/// Reads one Binance depth CSV; returns how many diffs were dropped as
/// older than their snapshot.
pub(super) fn read(
    path: &Path,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
    ids: &mut Continuity,
) -> Result<u64, ImportError> {
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(f);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::BadFile {
            file: file.clone(),
            message: format!("cannot read the CSV header: {e}"),
        })?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let mut at = [0usize; 8];
    for (i, name) in COLUMNS.iter().enumerate() {
        at[i] = col(name).ok_or_else(|| ImportError::BadFile {
            file: file.clone(),
            message: format!(
                "not a Binance depth CSV: no `{name}` column; expected {}[,pu]",
                COLUMNS.join(",")
            ),
        })?;
    }
    let pu_at = col("pu");
    let mut dropped = 0u64;
    let mut open: Option<Message> = None;
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let bad_row = |message: String| ImportError::BadRow {
            file: file.clone(),
            line,
            message,
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                bad.handle(bad_row(format!("not a CSV row: {e}")))?;
                continue;
            }
        };
        let field = |k: usize| row.get(at[k]).unwrap_or("").trim();
        let parsed = (|| {
            let int = |k: usize| {
                field(k)
                    .parse::<i64>()
                    .map_err(|_| format!("`{}` is `{}`; expected an integer", COLUMNS[k], field(k)))
            };
            let side = match field(4) {
                "b" => BookSide::Bid,
                "a" => BookSide::Ask,
                other => return Err(format!("`side` is `{other}`; expected b or a")),
            };
            let snap = match field(5) {
                "snap" => true,
                "set" => false,
                other => return Err(format!("`update_type` is `{other}`; expected snap or set")),
            };
            let px = Fixed::parse(field(6)).map_err(|e| format!("`price`: {e}"))?;
            let sz = Fixed::parse(field(7)).map_err(|e| format!("`qty`: {e}"))?;
            if px.raw() <= 0 {
                return Err(format!("`price` is {px}; prices are above zero"));
            }
            if sz.raw() < 0 || (snap && sz.raw() == 0) {
                return Err(format!(
                    "`qty` is {sz}; a snapshot level has a size above zero, a diff one of zero or more"
                ));
            }
            validate_symbol(field(0))?;
            let pu = match pu_at.map(|k| row.get(k).unwrap_or("").trim()) {
                None | Some("" | "-1") => None,
                Some(t) => Some(
                    t.parse::<i64>()
                        .map_err(|_| format!("`pu` is `{t}`; expected an integer"))?,
                ),
            };
            Ok((
                int(1)? as u64,
                int(2)?,
                int(3)?,
                pu,
                snap,
                Level { side, px, sz },
            ))
        })();
        let (ts_ms, first, last, pu, snap, level) = match parsed {
            Ok(v) => v,
            Err(m) => {
                bad.handle(bad_row(m))?;
                continue;
            }
        };
        let same = open.as_ref().is_some_and(|m| {
            m.sym == field(0)
                && m.ts_ms == ts_ms
                && m.first == first
                && m.last == last
                && m.snap == snap
        });
        if !same && let Some(m) = open.take() {
            dropped += finish(&file, m, bad, out, ids)?;
        }
        open.get_or_insert_with(|| Message {
            line,
            sym: field(0).to_owned(),
            ts_ms,
            first,
            last,
            pu,
            snap,
            levels: Vec::new(),
        })
        .levels
        .push(level);
    }
    if let Some(m) = open.take() {
        dropped += finish(&file, m, bad, out, ids)?;
    }
    Ok(dropped)
}

/// Checks a whole message's update ids and emits it; returns 1 if it was
/// dropped as older than the snapshot.
fn finish(
    file: &str,
    m: Message,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
    ids: &mut Continuity,
) -> Result<u64, ImportError> {
    let bad_row = |message: String| ImportError::BadRow {
        file: file.to_owned(),
        line: m.line,
        message,
    };
    let change = if m.snap {
        ids.symbols.insert(
            m.sym.clone(),
            SymbolIds {
                last: m.last,
                continued: false,
                broken: false,
            },
        );
        BookChange::Snapshot(m.levels)
    } else {
        let Some(s) = ids.symbols.get_mut(&m.sym) else {
            bad.handle(bad_row(format!(
                "a diff for {} before any snapshot of it: its book is unknown",
                m.sym
            )))?;
            return Ok(0);
        };
        if s.broken {
            bad.handle(bad_row(format!(
                "a diff for {} after an update-id jump, before a new snapshot",
                m.sym
            )))?;
            return Ok(0);
        }
        if !s.continued && m.last < s.last {
            return Ok(1);
        }
        let continues = if s.continued {
            match m.pu {
                Some(pu) => pu == s.last,
                None => m.first == s.last + 1,
            }
        } else {
            m.first <= s.last + 1 && m.last >= s.last
        };
        if !continues {
            let was = s.last;
            s.broken = true;
            bad.handle(bad_row(format!(
                "update ids jump for {}: the book is at update {was}, this diff covers {}..{}{}; applying it would give a wrong book",
                m.sym,
                m.first,
                m.last,
                m.pu.map(|p| format!(" (pu {p})")).unwrap_or_default()
            )))?;
            return Ok(0);
        }
        s.last = m.last;
        s.continued = true;
        BookChange::Diff(m.levels)
    };
    out.push(NewTick {
        book: Some(Arc::new(change)),
        sym: Arc::from(m.sym.as_str()),
        ts: m.ts_ms.saturating_mul(1_000_000),
        event: Event::Book(TopOfBook::default()),
    });
    Ok(0)
}
