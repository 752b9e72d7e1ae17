//! Databento `mbo` and `mbp-10`: books rebuilt from the records, per
//! Databento's semantics (docs: "State management of resting orders",
//! "MBO snapshots"):
//!
//! - `A` add an order; `C` cancel (fully or partly: `size` is the amount
//!   cancelled); `M` modify (new price and/or size; an unknown order id is
//!   an add, as in Databento's own book example); `R` clear the
//!   instrument's book; `T` trade (a trade tick; does not change the book),
//!   `F` fill and `N` none (no change: every fill is followed by the cancel
//!   that takes the size out).
//! - The book is looked at only at an event boundary: a record with
//!   `F_LAST` (flags bit 0x80). There a top-of-book change becomes a quote
//!   tick, the levels changed since the last boundary are counted as one
//!   book update, and the book is checked: a crossed book at a boundary is
//!   counted (never silently published).
//! - A cancel of an unknown order id, a modify that changes an order's
//!   side, a cancel larger than the order, a record of an unknown side:
//!   skipped and counted, with the byte offset, under `--skip-bad` (else an
//!   error). Records after the last `F_LAST` (the file ends mid-event) are
//!   not applied to what is emitted; they are counted.
//!
//! `mbp-10` records carry the top ten levels after the event: the book is
//! those levels, replaced at each `F_LAST` record.

use std::collections::{BTreeMap, HashMap};

use dbn::{MboMsg, Mbp10Msg, UNDEF_PRICE};

use crate::model::book::{BookChange, BookSide, Level, TopOfBook};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, Side};

/// What a book rebuild saw and produced, per file: pinned by tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookRebuildReport {
    /// Records read.
    pub records: u64,
    /// Event boundaries (`F_LAST` records).
    pub events: u64,
    /// `T` records, each a trade tick.
    pub trades: u64,
    /// Top-of-book changes at boundaries, each a quote tick.
    pub quotes: u64,
    /// Boundaries at which some level changed (one book update each).
    pub book_updates: u64,
    /// Level changes in those updates.
    pub level_changes: u64,
    /// Boundaries at which a rebuilt book was crossed or locked.
    pub crossed_at_boundary: u64,
    /// Records skipped as inconsistent (unknown order id, side change, …).
    pub skipped: u64,
    /// Records after the last `F_LAST` (an event the file never finished).
    pub unfinished_tail: u64,
    /// Most levels one side of one book held at a boundary.
    pub max_depth: usize,
}

/// One resting order.
#[derive(Clone, Copy)]
struct Order {
    side: BookSide,
    px: i64,
    size: u32,
}

/// One instrument's book being rebuilt.
#[derive(Default)]
struct Instrument {
    /// Resting orders by id (`mbo`).
    orders: HashMap<u64, Order>,
    /// Aggregated size per level, in whole contracts.
    levels: BTreeMap<(BookSide, i64), u64>,
    /// The levels as last emitted (at the last boundary).
    emitted: BTreeMap<(BookSide, i64), u64>,
    /// Records applied since the last boundary.
    open: u64,
    /// Whether a book was emitted yet (the first one is a snapshot).
    started: bool,
}

fn book_side(c: std::ffi::c_char) -> Option<BookSide> {
    match c as u8 {
        b'B' => Some(BookSide::Bid),
        b'A' => Some(BookSide::Ask),
        _ => None,
    }
}

fn units(n: u64) -> Fixed {
    Fixed::from_units(n as i64).unwrap_or(Fixed(i64::MAX))
}

impl Instrument {
    fn add_size(&mut self, side: BookSide, px: i64, delta: i64) {
        let e = self.levels.entry((side, px)).or_insert(0);
        *e = (*e as i64 + delta).max(0) as u64;
        if *e == 0 {
            self.levels.remove(&(side, px));
        }
    }

    /// Applies one `mbo` record; `Err` names why it was skipped.
    fn apply_mbo(&mut self, m: &MboMsg) -> Result<(), String> {
        match m.action as u8 {
            b'A' => {
                let side = book_side(m.side)
                    .ok_or_else(|| format!("add of order {} with no side", m.order_id))?;
                if m.price == UNDEF_PRICE {
                    return Err(format!("add of order {} with no price", m.order_id));
                }
                if let Some(old) = self.orders.insert(
                    m.order_id,
                    Order {
                        side,
                        px: m.price,
                        size: m.size,
                    },
                ) {
                    // A repeated id replaces the order it named.
                    self.add_size(old.side, old.px, -i64::from(old.size));
                }
                self.add_size(side, m.price, i64::from(m.size));
            }
            b'C' => {
                let o = self.orders.get_mut(&m.order_id).ok_or_else(|| {
                    format!("cancel of order {}, which is not in the book", m.order_id)
                })?;
                if m.size > o.size {
                    return Err(format!(
                        "cancel of {} from order {}, which has only {}",
                        m.size, m.order_id, o.size
                    ));
                }
                o.size -= m.size;
                let (side, px, left) = (o.side, o.px, o.size);
                if left == 0 {
                    self.orders.remove(&m.order_id);
                }
                self.add_size(side, px, -i64::from(m.size));
            }
            b'M' => {
                let side = book_side(m.side)
                    .ok_or_else(|| format!("modify of order {} with no side", m.order_id))?;
                match self.orders.get(&m.order_id).copied() {
                    None => {
                        self.orders.insert(
                            m.order_id,
                            Order {
                                side,
                                px: m.price,
                                size: m.size,
                            },
                        );
                        self.add_size(side, m.price, i64::from(m.size));
                    }
                    Some(o) if o.side != side => {
                        return Err(format!(
                            "modify of order {} changes its side from {} to {}",
                            m.order_id,
                            o.side.as_str(),
                            side.as_str()
                        ));
                    }
                    Some(o) => {
                        self.add_size(o.side, o.px, -i64::from(o.size));
                        self.add_size(side, m.price, i64::from(m.size));
                        self.orders.insert(
                            m.order_id,
                            Order {
                                side,
                                px: m.price,
                                size: m.size,
                            },
                        );
                    }
                }
            }
            b'R' => {
                self.orders.clear();
                self.levels.clear();
            }
            b'T' | b'F' | b'N' => {}
            other => return Err(format!("unknown action {:?}", other as char)),
        }
        Ok(())
    }

    /// The `mbp-10` record's ten levels become the book.
    fn apply_mbp10(&mut self, m: &Mbp10Msg) {
        self.levels.clear();
        for l in &m.levels {
            if l.bid_px != UNDEF_PRICE && l.bid_sz > 0 {
                self.levels
                    .insert((BookSide::Bid, l.bid_px), u64::from(l.bid_sz));
            }
            if l.ask_px != UNDEF_PRICE && l.ask_sz > 0 {
                self.levels
                    .insert((BookSide::Ask, l.ask_px), u64::from(l.ask_sz));
            }
        }
    }

    /// At a boundary: the levels that changed since the last one (absolute
    /// sizes, 0 = removed); they become the emitted book.
    fn boundary(&mut self) -> Vec<Level> {
        let level = |(side, px): (BookSide, i64), sz: u64| Level {
            side,
            px: Fixed(px),
            sz: units(sz),
        };
        let mut changed = Vec::new();
        for (&k, &sz) in &self.levels {
            if self.emitted.get(&k) != Some(&sz) {
                changed.push(level(k, sz));
            }
        }
        for &k in self.emitted.keys() {
            if !self.levels.contains_key(&k) {
                changed.push(level(k, 0));
            }
        }
        self.emitted.clone_from(&self.levels);
        self.open = 0;
        changed
    }

    /// Levels per side at the last boundary.
    fn depth(&self) -> (usize, usize) {
        let bids = self
            .emitted
            .range((BookSide::Bid, i64::MIN)..=(BookSide::Bid, i64::MAX))
            .count();
        (bids, self.emitted.len() - bids)
    }

    /// Top of the emitted book (zeros for an empty side).
    fn top(&self) -> TopOfBook {
        let bid = self
            .emitted
            .range((BookSide::Bid, i64::MIN)..=(BookSide::Bid, i64::MAX))
            .next_back();
        let ask = self
            .emitted
            .range((BookSide::Ask, i64::MIN)..=(BookSide::Ask, i64::MAX))
            .next();
        let (bid, bsz) = bid.map_or((Fixed::ZERO, Fixed::ZERO), |(k, s)| (Fixed(k.1), units(*s)));
        let (ask, asz) = ask.map_or((Fixed::ZERO, Fixed::ZERO), |(k, s)| (Fixed(k.1), units(*s)));
        TopOfBook { bid, bsz, ask, asz }
    }
}

/// Rebuilds books record by record; yields trades and quotes.
#[derive(Default)]
pub(super) struct BookRebuilder {
    instruments: HashMap<u32, Instrument>,
    pub(super) report: BookRebuildReport,
    /// The book change made at the last boundary, for the caller to take.
    emitted: Option<BookChange>,
}

/// What one record produced.
pub(super) struct Emitted {
    pub(super) trade: Option<Event>,
    pub(super) quote: Option<Event>,
}

impl BookRebuilder {
    fn finish_record(&mut self, instrument: u32, last: bool) -> Option<Event> {
        let inst = self.instruments.entry(instrument).or_default();
        inst.open += 1;
        if !last {
            return None;
        }
        self.report.events += 1;
        let top_before = inst.top();
        let changed = inst.boundary();
        if !changed.is_empty() {
            self.report.book_updates += 1;
            self.report.level_changes += changed.len() as u64;
        }
        let (b, a) = inst.depth();
        self.report.max_depth = self.report.max_depth.max(b).max(a);
        let top = inst.top();
        if top.bid != Fixed::ZERO && top.ask != Fixed::ZERO && top.bid >= top.ask {
            // Never published: the next good boundary restarts with a
            // snapshot.
            self.report.crossed_at_boundary += 1;
            inst.started = false;
            return None;
        }
        if !inst.started {
            inst.started = true;
            let levels = inst
                .emitted
                .iter()
                .map(|(&(side, px), &sz)| Level {
                    side,
                    px: Fixed(px),
                    sz: units(sz),
                })
                .collect();
            self.emitted = Some(BookChange::Snapshot(levels));
        } else if !changed.is_empty() {
            self.emitted = Some(BookChange::Diff(changed));
        }
        if top == top_before || top.bid == Fixed::ZERO || top.ask == Fixed::ZERO {
            return None;
        }
        self.report.quotes += 1;
        let TopOfBook { bid, bsz, ask, asz } = top;
        Some(Event::Quote { bid, bsz, ask, asz })
    }

    /// One `mbo` record. `Err`: skipped as inconsistent (counted here; the
    /// caller reports it with the offset).
    pub(super) fn mbo(&mut self, m: &MboMsg) -> Result<Emitted, String> {
        self.report.records += 1;
        let instrument = m.hd.instrument_id;
        let inst = self.instruments.entry(instrument).or_default();
        if let Err(e) = inst.apply_mbo(m) {
            self.report.skipped += 1;
            // A skipped record still ends its event if it carries F_LAST.
            if m.flags.is_last() {
                self.finish_record(instrument, true);
            }
            return Err(e);
        }
        let trade = (m.action as u8 == b'T').then(|| {
            self.report.trades += 1;
            trade(m.price, m.size, m.side)
        });
        let quote = self.finish_record(instrument, m.flags.is_last());
        Ok(Emitted {
            trade: trade.flatten(),
            quote,
        })
    }

    /// One `mbp-10` record.
    pub(super) fn mbp10(&mut self, m: &Mbp10Msg) -> Emitted {
        self.report.records += 1;
        let instrument = m.hd.instrument_id;
        self.instruments
            .entry(instrument)
            .or_default()
            .apply_mbp10(m);
        let trade = (m.action as u8 == b'T').then(|| {
            self.report.trades += 1;
            trade(m.price, m.size, m.side)
        });
        let quote = self.finish_record(instrument, m.flags.is_last());
        Emitted {
            trade: trade.flatten(),
            quote,
        }
    }

    /// The book change of the record just read, if it ended an event that
    /// changed the book.
    pub(super) fn take_book(&mut self) -> Option<BookChange> {
        self.emitted.take()
    }

    /// At the end of the file: records of an unfinished event.
    pub(super) fn finish(&mut self) {
        self.report.unfinished_tail = self.instruments.values().map(|i| i.open).sum();
    }
}

fn trade(px: i64, size: u32, side: std::ffi::c_char) -> Option<Event> {
    if px == UNDEF_PRICE {
        return None;
    }
    Some(Event::Trade {
        px: Fixed(px),
        qty: units(u64::from(size)),
        side: match side as u8 {
            b'B' => Side::Buy,
            b'A' => Side::Sell,
            _ => Side::Unknown,
        },
    })
}
