//! Order books: price levels with absolute sizes on both sides, the depth
//! windows clients subscribe to, the diffs between two states of a window
//! and the checksum a client verifies its copy with.
//!
//! A book changes by [`BookChange`]s: a snapshot (replaces the whole book)
//! or a diff (absolute size per level; size 0 removes the level). Both are
//! validated whole before anything changes: a refused change leaves the book
//! exactly as it was.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use crate::model::decimal::Fixed;

/// Which side of the book a level is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BookSide {
    Bid = 0,
    Ask = 1,
}

/// One price level: an absolute size at a price (0 = the level is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Level {
    pub side: BookSide,
    pub px: Fixed,
    pub sz: Fixed,
}

/// Book changes merged per price level: the newest size of each level
/// touched (0: removed), so a level appears once however many changes
/// touched it. What a slow book client is sent (`fanout::outbox`) and what
/// a Binance depth window carries (`binance::depth`). Memory is one entry
/// per price level, whatever the update rate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedLevels(BTreeMap<(BookSide, Fixed), Fixed>);

impl MergedLevels {
    /// Sets `l`'s level to its newest size.
    pub fn set(&mut self, l: &Level) {
        self.0.insert((l.side, l.px), l.sz);
    }

    /// Forgets `l`'s level (a merge that replaces a whole book drops a
    /// removed level instead of keeping its 0).
    pub fn remove(&mut self, l: &Level) {
        self.0.remove(&(l.side, l.px));
    }

    /// Folds in levels merged later (theirs win).
    pub fn absorb(&mut self, later: &MergedLevels) {
        self.0.extend(later.0.iter().map(|(k, v)| (*k, *v)));
    }

    /// Price levels held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The levels, by side then price, lowest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Level> + '_ {
        self.0
            .iter()
            .map(|(&(side, px), &sz)| Level { side, px, sz })
    }

    /// The levels, bids best first then asks best first (as messages and
    /// Binance list them).
    pub fn to_levels(&self) -> Vec<Level> {
        let side = |s: BookSide| self.iter().filter(move |l| l.side == s);
        let mut levels: Vec<Level> = side(BookSide::Bid).rev().collect();
        levels.extend(side(BookSide::Ask));
        levels
    }
}

/// What a publisher or importer hands in for one book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookChange {
    /// The whole book (every size > 0): replaces what was there.
    Snapshot(Vec<Level>),
    /// Levels to set (size > 0) or remove (size 0); the rest stay.
    Diff(Vec<Level>),
}

impl BookChange {
    pub fn levels(&self) -> &[Level] {
        match self {
            BookChange::Snapshot(l) | BookChange::Diff(l) => l,
        }
    }
}

/// The depth a book subscriber chooses: the server keeps its copy equal to
/// the top `n` levels per side of the server's book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DepthClass {
    /// Top 10 levels per side (the default).
    #[default]
    D10 = 0,
    /// Top 25 levels per side.
    D25 = 1,
    /// Every level.
    Full = 2,
}

impl DepthClass {
    pub const ALL: [DepthClass; 3] = [DepthClass::D10, DepthClass::D25, DepthClass::Full];

    /// Levels per side in this window (`usize::MAX` for full depth).
    pub fn levels(self) -> usize {
        match self {
            DepthClass::D10 => 10,
            DepthClass::D25 => 25,
            DepthClass::Full => usize::MAX,
        }
    }

    /// The depth as written on the wire: 10, 25 or 0 (full).
    pub fn wire(self) -> u16 {
        match self {
            DepthClass::D10 => 10,
            DepthClass::D25 => 25,
            DepthClass::Full => 0,
        }
    }

    /// From the wire value: 10, 25, or 0 for full depth.
    pub fn from_wire(n: u64) -> Option<DepthClass> {
        match n {
            10 => Some(DepthClass::D10),
            25 => Some(DepthClass::D25),
            0 => Some(DepthClass::Full),
            _ => None,
        }
    }
}

/// Why a book change was refused; the book is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("a book diff for `{0}` before any snapshot: send a snapshot first")]
    DiffBeforeSnapshot(String),
    #[error("level {index}: size {sz} is negative; sizes are zero (remove) or more")]
    NegativeSize { index: usize, sz: Fixed },
    #[error("level {index}: price {px} is not above zero")]
    BadPrice { index: usize, px: Fixed },
    #[error("level {index}: a snapshot level has size 0; a snapshot lists only levels that exist")]
    EmptySnapshotLevel { index: usize },
    #[error("level {index}: price {px} on the {side} side appears twice in one message")]
    DuplicateLevel {
        index: usize,
        px: Fixed,
        side: &'static str,
    },
    #[error(
        "the book would have {levels} levels on one side; the limit (--max-book-levels) is {limit}"
    )]
    TooManyLevels { levels: usize, limit: usize },
    #[error(
        "the book would be {what}: best bid {bid} >= best ask {ask}; crossed and locked books are refused"
    )]
    Crossed {
        what: &'static str,
        bid: Fixed,
        ask: Fixed,
    },
}

/// One symbol's book: both sides, price → absolute size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Bids by price; the best bid is the last entry.
    bids: BTreeMap<Fixed, Fixed>,
    /// Asks by price; the best ask is the first entry.
    asks: BTreeMap<Fixed, Fixed>,
    /// The best bid's and best ask's prices, kept by every `set`: the
    /// crossing check after each update reads them instead of walking to
    /// both trees' far ends (a cache miss per node on a busy server); a
    /// side is walked only when its best level is removed.
    best: [Option<Fixed>; 2],
}

/// Best bid and ask with their sizes (zeros for an empty side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopOfBook {
    pub bid: Fixed,
    pub bsz: Fixed,
    pub ask: Fixed,
    pub asz: Fixed,
}

impl BookSide {
    pub fn as_str(self) -> &'static str {
        match self {
            BookSide::Bid => "bid",
            BookSide::Ask => "ask",
        }
    }
}

impl Book {
    pub fn new() -> Book {
        Book::default()
    }

    /// The best price on `side`, from the tree.
    fn walk_best(&self, side: BookSide) -> Option<Fixed> {
        match side {
            BookSide::Bid => self.bids.keys().next_back().copied(),
            BookSide::Ask => self.asks.keys().next().copied(),
        }
    }

    /// Levels on each side: (bids, asks).
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }

    /// The size at a level, if it exists.
    pub fn get(&self, side: BookSide, px: Fixed) -> Option<Fixed> {
        match side {
            BookSide::Bid => self.bids.get(&px).copied(),
            BookSide::Ask => self.asks.get(&px).copied(),
        }
    }

    /// Best `n` bids, best first.
    pub fn top_bids(&self, n: usize) -> impl Iterator<Item = (Fixed, Fixed)> + '_ {
        self.bids.iter().rev().take(n).map(|(p, s)| (*p, *s))
    }

    /// Best `n` asks, best first.
    pub fn top_asks(&self, n: usize) -> impl Iterator<Item = (Fixed, Fixed)> + '_ {
        self.asks.iter().take(n).map(|(p, s)| (*p, *s))
    }

    /// The top `n` levels per side as levels, bids first then asks.
    pub fn window(&self, n: usize) -> Vec<Level> {
        let bids = self.top_bids(n).map(|(px, sz)| Level {
            side: BookSide::Bid,
            px,
            sz,
        });
        let asks = self.top_asks(n).map(|(px, sz)| Level {
            side: BookSide::Ask,
            px,
            sz,
        });
        bids.chain(asks).collect()
    }

    pub fn top(&self) -> TopOfBook {
        let (bid, bsz) = self
            .bids
            .iter()
            .next_back()
            .map_or((Fixed::ZERO, Fixed::ZERO), |(p, s)| (*p, *s));
        let (ask, asz) = self
            .asks
            .iter()
            .next()
            .map_or((Fixed::ZERO, Fixed::ZERO), |(p, s)| (*p, *s));
        TopOfBook { bid, bsz, ask, asz }
    }

    /// Sets a level (size 0 removes it), without checks: for importers
    /// rebuilding a vendor's book and for clients applying diffs.
    pub fn set(&mut self, side: BookSide, px: Fixed, sz: Fixed) {
        let tree = match side {
            BookSide::Bid => &mut self.bids,
            BookSide::Ask => &mut self.asks,
        };
        let best = self.best[side as usize];
        if sz == Fixed::ZERO {
            if tree.remove(&px).is_some() && best == Some(px) {
                self.best[side as usize] = self.walk_best(side);
            }
        } else {
            tree.insert(px, sz);
            if best.is_none_or(|b| ahead(side, px, b)) {
                self.best[side as usize] = Some(px);
            }
        }
    }

    /// Whether the best bid is at or above the best ask.
    pub fn crossed_or_locked(&self) -> Option<(&'static str, Fixed, Fixed)> {
        let bid = self.best[BookSide::Bid as usize]?;
        let ask = self.best[BookSide::Ask as usize]?;
        match bid.cmp(&ask) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(("locked", bid, ask)),
            std::cmp::Ordering::Greater => Some(("crossed", bid, ask)),
        }
    }

    /// Applies a change after checking it whole: on `Err` the book is as it
    /// was. `has_snapshot` says whether this book has ever been given one
    /// (a diff needs one); `max_levels` bounds each side. Returns whether
    /// the book changed: a diff whose every level already has its size
    /// (a removal of an absent level, a size sent again, no levels at all)
    /// is accepted and changes nothing; a snapshot always counts as a
    /// change (it replaces the book).
    pub fn apply(
        &mut self,
        sym: &str,
        change: &BookChange,
        has_snapshot: bool,
        max_levels: usize,
    ) -> Result<bool, BookError> {
        let levels = change.levels();
        // Most diffs carry a level or two: a scan of the earlier levels
        // finds a repeat without the set's allocation and hashing.
        let mut seen = (levels.len() > SMALL_CHANGE)
            .then(|| std::collections::HashSet::with_capacity(levels.len()));
        for (i, l) in levels.iter().enumerate() {
            let index = i + 1;
            if l.px.raw() <= 0 {
                return Err(BookError::BadPrice { index, px: l.px });
            }
            if l.sz.raw() < 0 {
                return Err(BookError::NegativeSize { index, sz: l.sz });
            }
            let repeated = match &mut seen {
                Some(seen) => !seen.insert((l.side, l.px)),
                None => levels[..i].iter().any(|e| e.side == l.side && e.px == l.px),
            };
            if repeated {
                return Err(BookError::DuplicateLevel {
                    index,
                    px: l.px,
                    side: l.side.as_str(),
                });
            }
        }
        match change {
            BookChange::Snapshot(levels) => {
                if let Some(i) = levels.iter().position(|l| l.sz == Fixed::ZERO) {
                    return Err(BookError::EmptySnapshotLevel { index: i + 1 });
                }
                let mut next = Book::new();
                for l in levels {
                    next.set(l.side, l.px, l.sz);
                }
                next.check(max_levels)?;
                *self = next;
                Ok(true)
            }
            BookChange::Diff(levels) => {
                if !has_snapshot {
                    return Err(BookError::DiffBeforeSnapshot(sym.to_owned()));
                }
                let undo: Vec<(BookSide, Fixed, Option<Fixed>)> = levels
                    .iter()
                    .map(|l| (l.side, l.px, self.get(l.side, l.px)))
                    .collect();
                let unchanged = levels
                    .iter()
                    .zip(&undo)
                    .all(|(l, (_, _, old))| old.unwrap_or(Fixed::ZERO) == l.sz);
                if unchanged {
                    // The book was valid and stays as it is.
                    return Ok(false);
                }
                for l in levels {
                    self.set(l.side, l.px, l.sz);
                }
                if let Err(e) = self.check(max_levels) {
                    for (side, px, old) in undo {
                        self.set(side, px, old.unwrap_or(Fixed::ZERO));
                    }
                    return Err(e);
                }
                Ok(true)
            }
        }
    }

    /// The invariants a published book keeps: bounded, never crossed or
    /// locked.
    fn check(&self, max_levels: usize) -> Result<(), BookError> {
        let most = self.bids.len().max(self.asks.len());
        if most > max_levels {
            return Err(BookError::TooManyLevels {
                levels: most,
                limit: max_levels,
            });
        }
        if let Some((what, bid, ask)) = self.crossed_or_locked() {
            return Err(BookError::Crossed { what, bid, ask });
        }
        Ok(())
    }

    /// The checksum of docs/PROTOCOL.md ("Book checksum"), after Kraken's
    /// WebSocket v2 scheme: CRC-32 (IEEE) of the text made of the top 10
    /// asks (lowest first) then the top 10 bids (highest first), each level
    /// written as its price then its size, each number in its JSON text with
    /// the `.` removed and leading zeros removed.
    pub fn checksum(&self) -> u32 {
        checksum_of(
            self.top_bids(CHECKSUM_LEVELS),
            self.top_asks(CHECKSUM_LEVELS),
        )
    }

    /// The best level on `side` worse than `px` (the next one down a side
    /// listed best first).
    pub fn next_beyond(&self, side: BookSide, px: Fixed) -> Option<(Fixed, Fixed)> {
        let found = match side {
            BookSide::Bid => self.bids.range(..px).next_back(),
            BookSide::Ask => self.asks.range((Excluded(px), Unbounded)).next(),
        };
        found.map(|(p, s)| (*p, *s))
    }

    /// Fills `w` with the top `n` levels per side (reusing its buffers).
    pub fn fill_window(&self, n: usize, w: &mut Window) {
        w.bids.clear();
        w.bids.extend(self.top_bids(n));
        w.asks.clear();
        w.asks.extend(self.top_asks(n));
    }
}

/// Diffs of more levels than this check for repeats with a hash set.
const SMALL_CHANGE: usize = 16;

/// A book's top levels per side, best first, as (price, size): every depth
/// class's window is a prefix of each side. Kept by ingest so that an
/// update's window diffs need no second walk of the book and no allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Best bids, highest price first.
    pub bids: Vec<(Fixed, Fixed)>,
    /// Best asks, lowest price first.
    pub asks: Vec<(Fixed, Fixed)>,
}

impl Window {
    /// The top `n` levels of each side (`n` may exceed what is held).
    fn prefix(&self, side: BookSide, n: usize) -> &[(Fixed, Fixed)] {
        let v = match side {
            BookSide::Bid => &self.bids,
            BookSide::Ask => &self.asks,
        };
        &v[..n.min(v.len())]
    }

    /// Whether the top `n` levels per side are the same in both.
    pub fn same_top(&self, other: &Window, n: usize) -> bool {
        [BookSide::Bid, BookSide::Ask]
            .into_iter()
            .all(|s| self.prefix(s, n) == other.prefix(s, n))
    }

    /// [`window_diff`] of the top `n` levels per side of `before` and
    /// `after` (both must hold at least `n` per side where the book has
    /// them), in the same order, by merging the sorted sides: linear, where
    /// `window_diff` compares every pair.
    pub fn diff(before: &Window, after: &Window, n: usize, out: &mut Vec<Level>) {
        let sides = [BookSide::Bid, BookSide::Ask];
        // Levels new or resized in the window, bids then asks.
        for side in sides {
            let was = before.prefix(side, n);
            let mut j = 0;
            for &(px, sz) in after.prefix(side, n) {
                while j < was.len() && ahead(side, was[j].0, px) {
                    j += 1;
                }
                if was.get(j) != Some(&(px, sz)) {
                    out.push(Level { side, px, sz });
                }
            }
        }
        // Levels that left the window, bids then asks.
        for side in sides {
            let now = after.prefix(side, n);
            let mut i = 0;
            for &(px, _) in before.prefix(side, n) {
                while i < now.len() && ahead(side, now[i].0, px) {
                    i += 1;
                }
                if now.get(i).map(|l| l.0) != Some(px) {
                    out.push(Level {
                        side,
                        px,
                        sz: Fixed::ZERO,
                    });
                }
            }
        }
    }
}

/// Whether price `a` comes before price `b` on `side` (best first).
fn ahead(side: BookSide, a: Fixed, b: Fixed) -> bool {
    match side {
        BookSide::Bid => a > b,
        BookSide::Ask => a < b,
    }
}

/// The levels that change a client's window of `n` levels per side from
/// `before` to `after`: a level new or resized in the window is set, a level
/// that left it is removed (size 0). Bids first, then asks, best first.
pub fn window_diff(before: &[Level], after: &[Level]) -> Vec<Level> {
    let mut out = Vec::new();
    for l in after {
        let same = before
            .iter()
            .any(|b| b.side == l.side && b.px == l.px && b.sz == l.sz);
        if !same {
            out.push(*l);
        }
    }
    for b in before {
        if !after.iter().any(|l| l.side == b.side && l.px == b.px) {
            out.push(Level {
                sz: Fixed::ZERO,
                ..*b
            });
        }
    }
    out
}

mod checksum;
mod kept;
pub use checksum::{CHECKSUM_LEVELS, checksum_of};
pub use kept::{KeptWindow, WindowChange};

#[cfg(test)]
mod tests;
