//! Binance's depth update speeds: `@depth` and `@depthN` every 1000 ms,
//! `@depth@100ms` and `@depthN@100ms` every 100 ms. The hub's copy of each
//! book collects the updates of the current 100 ms window merged per price
//! level (newest size wins, removals kept as size 0); at each 100 ms
//! boundary that batch goes out on `@depth@100ms` and is merged into the
//! 1000 ms batch, which goes out on `@depth` at every tenth boundary.
//!
//! `/api/v3/depth` answers the book as of the last 100 ms boundary: the next
//! `@depth@100ms` event then has `U` = `lastUpdateId` + 1 exactly, and the
//! next `@depth` event spans it (`U` <= `lastUpdateId` + 1 <= `u`, step 5 of
//! Binance's local-book procedure). A snapshot at the last 1000 ms boundary
//! would instead be up to a second old, older than a `@depth@100ms`
//! client's subscription: the events between would never reach it.

use std::sync::Arc;
use std::time::Duration;

use crate::model::book::{Book, Level, MergedLevels};

/// The fast speed's window (`@depth@100ms`, `@depthN@100ms`).
pub const FAST: Duration = Duration::from_millis(100);
/// Fast windows per slow one (`@depth`, `@depthN`: 1000 ms).
pub const FAST_PER_SLOW: u32 = 10;

/// Book updates merged over one window.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `U`: the first update id in the batch (0: the batch is empty).
    pub first: u64,
    /// `u`: the last update id in the batch.
    pub last: u64,
    /// `E`: when tickwire received the newest update (`rx`, ns).
    pub event_ns: u64,
    /// The newest size of each level touched (0: removed), so each level
    /// appears once per event whatever number of updates touched it.
    levels: MergedLevels,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.first == 0
    }

    /// Adds update ids `first..=last` and the levels they set.
    pub fn add(&mut self, first: u64, last: u64, event_ns: u64, levels: &[Level]) {
        if self.is_empty() {
            self.first = first;
        }
        self.last = last;
        self.event_ns = event_ns;
        for l in levels {
            self.levels.set(l);
        }
    }

    /// Merges a later batch into this one.
    pub fn absorb(&mut self, later: &Batch) {
        if later.is_empty() {
            return;
        }
        if self.is_empty() {
            self.first = later.first;
        }
        self.last = later.last;
        self.event_ns = later.event_ns;
        self.levels.absorb(&later.levels);
    }

    /// The merged levels, bids best first then asks best first (as
    /// Binance lists them).
    pub fn levels(&self) -> Vec<Level> {
        self.levels.to_levels()
    }
}

/// Index of a speed in per-speed arrays.
pub fn speed_index(fast: bool) -> usize {
    usize::from(fast)
}

/// The hub's copy of one book and its pending depth batches.
pub struct Mirror {
    /// Uppercase Binance symbol, as flushed payloads carry it.
    pub upper: Arc<str>,
    /// The book after the last update seen.
    pub book: Book,
    /// The book's `seq` after the last update seen; 0 before any.
    pub last_u: u64,
    /// Updates since the last 100 ms boundary.
    pub fast: Batch,
    /// Updates since the last 1000 ms boundary, up to the last 100 ms one.
    pub slow: Batch,
    /// The book as of the last 100 ms flush and its `u`, for
    /// `/api/v3/depth`; `None` before the first.
    pub flushed: Option<(u64, Book)>,
    /// Whether an update touched a level since the last flush of each
    /// speed (`[slow, fast]`): a partial-book stream sends its window only
    /// if something may have changed it.
    pub touched: [bool; 2],
    /// The window last sent on each `@depthN` stream, by (levels, speed),
    /// so an unchanged window is not sent again.
    pub sent: Vec<((u8, bool), Vec<Level>)>,
}

impl Mirror {
    pub fn new(upper: Arc<str>) -> Mirror {
        Mirror {
            upper,
            book: Book::new(),
            last_u: 0,
            fast: Batch::default(),
            slow: Batch::default(),
            flushed: None,
            touched: [false; 2],
            sent: Vec::new(),
        }
    }

    /// Applies one update (levels already applied to `book`): its ids are
    /// `U` = the previous `u` + 1 (or `from` for the book's first update)
    /// to `u` = `seq`, so the chain has no holes even for an update that
    /// changed no level.
    pub fn record(&mut self, from: u64, seq: u64, rx: u64, levels: &[Level]) {
        let first = match self.last_u {
            0 => from,
            last => last + 1,
        };
        self.last_u = seq;
        self.fast.add(first, seq, rx, levels);
        if !levels.is_empty() {
            self.touched = [true; 2];
        }
    }

    /// The book `/api/v3/depth` serves and its `lastUpdateId`: as of the
    /// last 100 ms flush; before the first, the empty book before the
    /// book's first update (when the hub saw it from its start, id 1), which
    /// the first event continues. `None` when neither is known.
    pub fn snapshot(&self) -> Option<(u64, Vec<Level>)> {
        match &self.flushed {
            Some((u, book)) => Some((*u, book.window(usize::MAX))),
            None if [&self.slow, &self.fast].iter().any(|b| b.first == 1) => Some((0, Vec::new())),
            None => None,
        }
    }

    /// Records the 100 ms batch being flushed in the book `/api/v3/depth`
    /// serves.
    pub fn settle(&mut self, fast: &Batch) {
        let (u, book) = self.flushed.get_or_insert_with(|| (0, Book::new()));
        for l in fast.levels.iter() {
            book.set(l.side, l.px, l.sz);
        }
        *u = fast.last;
    }

    /// Whether the `@depthN` window at `(levels, fast)` differs from the
    /// one last sent; remembers it if so.
    pub fn window_changed(&mut self, key: (u8, bool), window: &[Level]) -> bool {
        match self.sent.iter_mut().find(|(k, _)| *k == key) {
            Some((_, w)) if w.as_slice() == window => false,
            Some((_, w)) => {
                *w = window.to_vec();
                true
            }
            None => {
                self.sent.push((key, window.to_vec()));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::book::BookSide;

    fn l(side: BookSide, px: &str, sz: &str) -> Level {
        Level {
            side,
            px: px.parse().unwrap(),
            sz: sz.parse().unwrap(),
        }
    }

    #[test]
    fn a_batch_keeps_the_newest_size_per_level_and_removals() {
        use BookSide::{Ask, Bid};
        let mut b = Batch::default();
        assert!(b.is_empty());
        b.add(5, 5, 10, &[l(Bid, "1", "2"), l(Ask, "3", "1")]);
        b.add(6, 7, 11, &[l(Bid, "1", "4")]);
        b.add(8, 8, 12, &[l(Ask, "3", "0")]);
        assert_eq!((b.first, b.last, b.event_ns), (5, 8, 12));
        assert_eq!(b.levels(), vec![l(Bid, "1", "4"), l(Ask, "3", "0")]);
        let mut slow = Batch::default();
        slow.absorb(&b);
        let mut later = Batch::default();
        later.add(9, 9, 13, &[l(Ask, "3", "5")]);
        slow.absorb(&later);
        slow.absorb(&Batch::default());
        assert_eq!((slow.first, slow.last, slow.event_ns), (5, 9, 13));
        assert_eq!(slow.levels(), vec![l(Bid, "1", "4"), l(Ask, "3", "5")]);
    }

    #[test]
    fn ids_chain_from_the_previous_update_and_the_settled_book_follows_flushes() {
        use BookSide::Bid;
        let mut m = Mirror::new("X".into());
        m.record(3, 3, 1, &[l(Bid, "1", "1")]);
        m.record(9, 4, 2, &[]);
        assert_eq!((m.fast.first, m.fast.last), (3, 4));
        assert_eq!(m.touched, [true, true]);
        assert_eq!(m.snapshot(), None, "the book's first update was not id 1");
        let fast = std::mem::take(&mut m.fast);
        m.settle(&fast);
        assert_eq!(m.snapshot(), Some((4, vec![l(Bid, "1", "1")])));
        let mut fresh = Mirror::new("Y".into());
        fresh.record(1, 1, 1, &[l(Bid, "2", "1")]);
        assert_eq!(fresh.snapshot(), Some((0, vec![])), "the book before id 1");
        assert!(m.window_changed((5, false), &[]));
        assert!(!m.window_changed((5, false), &[]));
        assert!(m.window_changed((5, false), &[l(Bid, "1", "1")]));
    }
}
