//! Tardis.dev order-book CSVs, as documented on tardis.dev ("Downloadable
//! CSV files"):
//!
//! - `incremental_book_L2`: `exchange,symbol,timestamp,local_timestamp,
//!   is_snapshot,side,price,amount`, one row per level, `amount` the
//!   absolute size (0 removes the level). A run of `is_snapshot=true` rows
//!   for a symbol is a whole book: when a snapshot row follows a
//!   non-snapshot one, the book is discarded and rebuilt from the run. The
//!   rows of one symbol with one `timestamp` are one update.
//! - `book_snapshot_25` / `book_snapshot_5` (any N): `exchange,symbol,
//!   timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,
//!   bids[0].amount,asks[1].price,…`, one row per top-N book; a level the
//!   book does not have is left empty.
//!
//! Each update becomes one book record: the symbol's first (and the first
//! after a snapshot run) a snapshot, the rest diffs of the levels that
//! changed (for `book_snapshot_*` rows, the levels that differ from the
//! previous row's). A book that the server would refuse (crossed or locked,
//! deeper than the server's default `--max-book-levels`) is an error naming
//! the update's line; under `--skip-bad` it is skipped and counted and the
//! symbol's next good update is written as a whole snapshot, so a replayed
//! book always equals the vendor's at the updates written. A bad row of a
//! symbol (unparseable price, negative amount, unknown side) leaves its
//! book unknown: under `--skip-bad` its diffs are skipped (and counted)
//! until its next snapshot run.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::sync::Arc;

use super::{BadRows, ImportError, OrderCheck};
use crate::model::book::{Book, BookChange, BookSide, Level, TopOfBook};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, validate_symbol};
use crate::pipeline::ingest::DEFAULT_MAX_BOOK_LEVELS;

/// Columns an `incremental_book_L2` file must have.
pub(super) const INCREMENTAL_COLUMNS: [&str; 6] = [
    "symbol",
    "timestamp",
    "is_snapshot",
    "side",
    "price",
    "amount",
];

/// Which Tardis book layout a header names.
pub(super) enum Layout {
    /// `incremental_book_L2`.
    Incremental,
    /// `book_snapshot_N`: the column indexes of each level, best first:
    /// (ask price, ask amount, bid price, bid amount).
    Snapshots(Vec<[usize; 4]>),
}

/// The book layout of a Tardis header, if it is one; `Err` for a
/// `book_snapshot_*` header with a level's column missing.
pub(super) fn layout(col: &HashMap<&str, usize>) -> Result<Option<Layout>, String> {
    if INCREMENTAL_COLUMNS.iter().all(|c| col.contains_key(c)) {
        return Ok(Some(Layout::Incremental));
    }
    if !col.contains_key("asks[0].price") || !col.contains_key("symbol") {
        return Ok(None);
    }
    if !col.contains_key("timestamp") {
        return Err("a book_snapshot header without a `timestamp` column".to_owned());
    }
    let mut levels = Vec::new();
    for i in 0.. {
        let names = [
            format!("asks[{i}].price"),
            format!("asks[{i}].amount"),
            format!("bids[{i}].price"),
            format!("bids[{i}].amount"),
        ];
        if names.iter().all(|n| !col.contains_key(n.as_str())) {
            break;
        }
        let mut at = [0usize; 4];
        for (k, n) in names.iter().enumerate() {
            at[k] = *col.get(n.as_str()).ok_or_else(|| {
                format!("a book_snapshot header with level {i} but no `{n}` column")
            })?;
        }
        levels.push(at);
    }
    Ok(Some(Layout::Snapshots(levels)))
}

/// One symbol's book as the rows build it, and what was written of it.
#[derive(Default)]
struct SymbolBook {
    /// The vendor's book after the rows read so far (unchecked).
    book: Book,
    /// Levels set since the last record written: the next diff.
    touched: BTreeSet<(BookSide, Fixed)>,
    /// Whether the records written so far rebuild `book` as of the last
    /// update: false before the first snapshot and after an update that
    /// could not be written; then the next record is a whole snapshot.
    in_sync: bool,
    /// Whether the book is known (a snapshot was read and no bad row of
    /// this symbol since): diffs of an unknown book are refused.
    known: bool,
    /// Line of the bad row that made the book unknown, for the message.
    lost_at: Option<u64>,
    /// The update being read: its rows are not yet all in.
    open: Option<OpenUpdate>,
}

/// The rows of one update read so far.
#[derive(Clone, Copy)]
struct OpenUpdate {
    /// Line of its first row: where an error about the update points.
    line: u64,
    /// Byte offset of its first row.
    byte: u64,
    /// `timestamp` of its last row (µs): the record's `ts`.
    ts_us: u64,
    /// Whether its rows are snapshot rows (a run may span timestamps).
    snapshot: bool,
}

/// Every symbol's book of one input.
struct Books {
    file: String,
    symbols: HashMap<Arc<str>, SymbolBook>,
}

impl Books {
    /// Ends `sym`'s open update: pushes its record, or reports why the book
    /// it leaves cannot be written.
    fn close(&mut self, sym: &Arc<str>, out: &mut Vec<NewTick>) -> Result<(), ImportError> {
        let s = self.symbols.get_mut(sym).expect("symbol of an open update");
        let Some(open) = s.open.take() else {
            return Ok(());
        };
        let (bids, asks) = s.book.depth();
        let refused = if bids.max(asks) > DEFAULT_MAX_BOOK_LEVELS {
            Some(format!(
                "the {sym} book would have {} levels on one side; the server's limit (--max-book-levels) is {DEFAULT_MAX_BOOK_LEVELS}",
                bids.max(asks)
            ))
        } else {
            s.book.crossed_or_locked().map(|(what, bid, ask)| {
                format!(
                    "the {sym} book after this update is {what} (best bid {bid} >= best ask {ask}); crossed and locked books are refused"
                )
            })
        };
        if let Some(message) = refused {
            s.in_sync = false;
            s.touched.clear();
            return Err(ImportError::BadRow {
                file: self.file.clone(),
                line: open.line,
                message: format!("(byte {}) {message}", open.byte),
            });
        }
        let change = if !s.in_sync {
            BookChange::Snapshot(s.book.window(usize::MAX))
        } else if s.touched.is_empty() {
            return Ok(());
        } else {
            BookChange::Diff(
                s.touched
                    .iter()
                    .map(|&(side, px)| Level {
                        side,
                        px,
                        sz: s.book.get(side, px).unwrap_or(Fixed::ZERO),
                    })
                    .collect(),
            )
        };
        s.touched.clear();
        s.in_sync = true;
        out.push(NewTick {
            book: Some(Arc::new(change)),
            sym: sym.clone(),
            ts: open.ts_us * 1_000,
            event: Event::Book(TopOfBook::default()),
        });
        Ok(())
    }

    /// Ends every open update (at the end of the file).
    fn close_all(&mut self, bad: &mut BadRows, out: &mut Vec<NewTick>) -> Result<(), ImportError> {
        let mut open: Vec<(u64, Arc<str>)> = self
            .symbols
            .iter()
            .filter_map(|(k, s)| s.open.map(|o| (o.line, k.clone())))
            .collect();
        open.sort();
        for (_, sym) in open {
            if let Err(e) = self.close(&sym, out) {
                bad.handle(e)?;
            }
        }
        Ok(())
    }

    /// A bad row of `sym`: its book is unknown until its next snapshot.
    fn lose(&mut self, sym: &Arc<str>, line: u64) {
        let s = self.symbols.entry(sym.clone()).or_default();
        *s = SymbolBook {
            lost_at: Some(line),
            ..SymbolBook::default()
        };
    }
}

/// One parsed row's position, symbol and time.
struct RowHead {
    line: u64,
    byte: u64,
    sym: Arc<str>,
    ts_us: u64,
}

/// Reads the rows of a Tardis book CSV whose header (`names`) was read.
pub(super) fn read(
    mut reader: csv::Reader<File>,
    layout: Layout,
    names: &[String],
    file: &str,
    bad: &mut BadRows,
    out: &mut Vec<NewTick>,
) -> Result<(), ImportError> {
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut books = Books {
        file: file.to_owned(),
        symbols: HashMap::new(),
    };
    let mut order = OrderCheck::new();
    let mut rec = csv::ByteRecord::new();
    loop {
        let before = reader.position().clone();
        match reader.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(ImportError::BadFile {
                    file: file.to_owned(),
                    message: format!(
                        "cannot read near line {} (byte {}): {e}",
                        before.line(),
                        before.byte()
                    ),
                });
            }
        }
        let pos = rec.position().unwrap_or(&before);
        let (line, byte) = (pos.line(), pos.byte());
        let text = |c: usize| std::str::from_utf8(&rec[c]).unwrap_or("").trim();
        let sym = super::sanitise_symbol(text(col["symbol"]));
        let sym_ok = validate_symbol(&sym).is_ok();
        let sym: Arc<str> = Arc::from(&*sym);
        let head = (|| -> Result<RowHead, String> {
            if rec.len() != names.len() {
                return Err(format!(
                    "{} fields; expected {} as in the header",
                    rec.len(),
                    names.len()
                ));
            }
            validate_symbol(&sym).map_err(|m| format!("`symbol`: {m}"))?;
            let t = text(col["timestamp"]);
            let ts_us: u64 = t
                .parse()
                .map_err(|_| format!("`timestamp` is `{t}`; expected µs since the epoch"))?;
            if ts_us.checked_mul(1_000).is_none() {
                return Err(format!("`timestamp` {ts_us} is out of range"));
            }
            order.check(ts_us * 1_000)?;
            Ok(RowHead {
                line,
                byte,
                sym: sym.clone(),
                ts_us,
            })
        })();
        let done = head.and_then(|head| match &layout {
            Layout::Incremental => incremental_row(&mut books, &head, &text, &col, out),
            Layout::Snapshots(levels) => snapshot_row(&mut books, &head, &text, levels, out),
        });
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bad.handle(e)?,
            Err(message) => {
                if sym_ok {
                    books.lose(&sym, line);
                }
                bad.handle(ImportError::BadRow {
                    file: file.to_owned(),
                    line,
                    message: format!("(byte {byte}) {message}"),
                })?;
            }
        }
    }
    books.close_all(bad, out)
}

/// A price and an amount from their text: price above zero, amount zero or
/// more.
fn level(side: BookSide, px: &str, amount: &str) -> Result<Level, String> {
    let px = Fixed::parse(px).map_err(|e| format!("`price` `{px}`: {e}"))?;
    if px.raw() <= 0 {
        return Err(format!("`price` is {px}; prices are above zero"));
    }
    let sz = Fixed::parse(amount).map_err(|e| format!("`amount` `{amount}`: {e}"))?;
    if sz.raw() < 0 {
        return Err(format!(
            "`amount` is {sz}; sizes are zero (the level is removed) or more"
        ));
    }
    Ok(Level { side, px, sz })
}

/// One `incremental_book_L2` row. Outer `Err`: the row is bad; inner: the
/// update it ended could not be written.
fn incremental_row<'r>(
    books: &mut Books,
    head: &RowHead,
    text: &dyn Fn(usize) -> &'r str,
    col: &HashMap<&str, usize>,
    out: &mut Vec<NewTick>,
) -> Result<Result<(), ImportError>, String> {
    let snapshot = match text(col["is_snapshot"]) {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "`is_snapshot` is `{other}`; expected true or false"
            ));
        }
    };
    let side = match text(col["side"]) {
        "bid" => BookSide::Bid,
        "ask" => BookSide::Ask,
        other => return Err(format!("`side` is `{other}`; expected bid or ask")),
    };
    let l = level(side, text(col["price"]), text(col["amount"]))?;
    let s = books.symbols.entry(head.sym.clone()).or_default();
    if !snapshot && !s.known {
        return Err(match s.lost_at {
            Some(at) => format!(
                "a diff row for {} while its book is unknown (after the bad row at line {at}); waiting for its next snapshot (is_snapshot=true rows)",
                head.sym
            ),
            None => format!(
                "a diff row for {} before any snapshot of it (is_snapshot=true rows): its book is unknown",
                head.sym
            ),
        });
    }
    // Does this row continue the open update? A snapshot run continues
    // across timestamps; a diff is the rows of one timestamp.
    let continues = s
        .open
        .is_some_and(|o| o.snapshot == snapshot && (snapshot || o.ts_us == head.ts_us));
    let mut closed = Ok(());
    if !continues && s.open.is_some() {
        closed = books.close(&head.sym, out);
    }
    let s = books.symbols.get_mut(&head.sym).expect("entry made above");
    if snapshot && !continues {
        // A new snapshot run: the book so far is discarded.
        s.book = Book::new();
        s.touched.clear();
        s.known = true;
        s.lost_at = None;
        s.in_sync = false;
    }
    s.book.set(l.side, l.px, l.sz);
    s.touched.insert((l.side, l.px));
    let open = s.open.get_or_insert(OpenUpdate {
        line: head.line,
        byte: head.byte,
        ts_us: head.ts_us,
        snapshot,
    });
    open.ts_us = head.ts_us;
    Ok(closed)
}

/// One `book_snapshot_N` row: the symbol's top-N book, replacing the last.
fn snapshot_row<'r>(
    books: &mut Books,
    head: &RowHead,
    text: &dyn Fn(usize) -> &'r str,
    columns: &[[usize; 4]],
    out: &mut Vec<NewTick>,
) -> Result<Result<(), ImportError>, String> {
    let mut levels = Vec::with_capacity(columns.len() * 2);
    for (i, at) in columns.iter().enumerate() {
        for (side, name, px, sz) in [
            (BookSide::Ask, "asks", at[0], at[1]),
            (BookSide::Bid, "bids", at[2], at[3]),
        ] {
            match (text(px), text(sz)) {
                ("", "") => {}
                (p, a) if p.is_empty() || a.is_empty() => {
                    return Err(format!(
                        "{name}[{i}] has a price `{p}` and an amount `{a}`; both or neither"
                    ));
                }
                (p, a) => {
                    let l = level(side, p, a).map_err(|m| format!("{name}[{i}]: {m}"))?;
                    if l.sz == Fixed::ZERO {
                        return Err(format!(
                            "{name}[{i}]: `amount` is 0; a snapshot lists only levels that exist"
                        ));
                    }
                    levels.push(l);
                }
            }
        }
    }
    let mut next = Book::new();
    for l in &levels {
        if next.get(l.side, l.px).is_some() {
            return Err(format!(
                "price {} appears twice on the {} side",
                l.px,
                l.side.as_str()
            ));
        }
        next.set(l.side, l.px, l.sz);
    }
    let s = books.symbols.entry(head.sym.clone()).or_default();
    // The levels that differ from the previous row's: the next diff.
    let was = s.book.window(usize::MAX);
    let changed = |l: &Level, other: &Book| other.get(l.side, l.px) != Some(l.sz);
    let gone = was.iter().filter(|l| changed(l, &next));
    let new = levels.iter().filter(|l| changed(l, &s.book));
    let touched: Vec<(BookSide, Fixed)> = gone.chain(new).map(|l| (l.side, l.px)).collect();
    s.touched.extend(touched);
    s.book = next;
    s.known = true;
    s.open = Some(OpenUpdate {
        line: head.line,
        byte: head.byte,
        ts_us: head.ts_us,
        snapshot: true,
    });
    Ok(books.close(&head.sym, out))
}
