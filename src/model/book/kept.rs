//! The window ingest keeps per book: its top levels per side, maintained
//! in place by a one-level change (the common update: a level resized,
//! added or removed) instead of being refilled from the book, with each
//! level's checksum text rendered once when it enters, so an update's
//! depth-class diffs and checksum cost a few entries, not the whole window.

use super::checksum::push_checksum_digits;
use super::{Book, BookSide, CHECKSUM_LEVELS, Level, TopOfBook, Window, ahead};
use crate::model::decimal::Fixed;

/// One level's part of the checksum text: its price's digits then its
/// size's (docs/PROTOCOL.md "Book checksum"), at most 19 digits each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LevelText {
    /// Bytes of `buf` in use.
    len: u8,
    /// The digits.
    buf: [u8; 40],
}

impl LevelText {
    fn of((px, sz): (Fixed, Fixed), digits: &mut itoa::Buffer, scratch: &mut Vec<u8>) -> Self {
        scratch.clear();
        push_checksum_digits(scratch, digits, px);
        push_checksum_digits(scratch, digits, sz);
        let mut t = LevelText {
            len: scratch.len() as u8,
            buf: [0; 40],
        };
        t.buf[..scratch.len()].copy_from_slice(scratch);
        t
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// What a one-level change did to the kept window (one side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowChange {
    /// Nothing a client of any limited depth sees: the size did not change,
    /// or the level is below the kept window.
    Outside,
    /// The level at `rank` (0 = best) has a new size.
    Resized { side: BookSide, rank: usize },
    /// A new level at `rank`; the levels below it moved down one.
    Inserted { side: BookSide, rank: usize },
    /// The level at `rank` left the book; the levels below it moved up one.
    Removed {
        side: BookSide,
        rank: usize,
        px: Fixed,
    },
}

/// A book's top `cap` levels per side with their checksum texts, and the
/// book's checksum over them.
#[derive(Clone, Debug, Default)]
pub struct KeptWindow {
    /// The levels, best first per side: the top `min(cap, side's depth)`.
    levels: Window,
    /// Checksum text of each bid in `levels.bids`, same order.
    bid_text: Vec<LevelText>,
    /// Checksum text of each ask in `levels.asks`, same order.
    ask_text: Vec<LevelText>,
    /// Levels kept per side.
    cap: usize,
    /// The last one removed by a one-level change on the side it left,
    /// for the deepest class's diff: (the level pushed out of the window).
    pushed_out: Option<(Fixed, Fixed)>,
    /// The checksum of the book, over the top [`CHECKSUM_LEVELS`] texts.
    checksum: u32,
    /// Reused buffers for rendering and hashing the text.
    scratch: Vec<u8>,
}

impl KeptWindow {
    /// The kept levels.
    pub fn levels(&self) -> &Window {
        &self.levels
    }

    /// [`Book::top`] of the book the window was last brought up to, from
    /// the window (the book's tree is not walked).
    pub fn top(&self) -> TopOfBook {
        let best = |v: &[(Fixed, Fixed)]| v.first().copied().unwrap_or_default();
        let ((bid, bsz), (ask, asz)) = (best(&self.levels.bids), best(&self.levels.asks));
        TopOfBook { bid, bsz, ask, asz }
    }

    /// [`Book::checksum`] of the book the window was last brought up to.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Rebuilds the window from `book` (after a snapshot or a change of
    /// several levels) keeping its top `cap` levels per side, rendering
    /// only the texts of levels that were not already kept at that size.
    pub fn refill(&mut self, book: &Book, cap: usize) {
        self.cap = cap;
        let mut next = Window::default();
        book.fill_window(cap, &mut next);
        let mut digits = itoa::Buffer::new();
        for side in [BookSide::Bid, BookSide::Ask] {
            let (old, old_text, new) = match side {
                BookSide::Bid => (&self.levels.bids, &self.bid_text, &next.bids),
                BookSide::Ask => (&self.levels.asks, &self.ask_text, &next.asks),
            };
            let mut texts = Vec::with_capacity(new.len());
            let mut j = 0;
            for &l in new {
                while j < old.len() && ahead(side, old[j].0, l.0) {
                    j += 1;
                }
                texts.push(match old.get(j) {
                    Some(&o) if o == l => old_text[j],
                    _ => LevelText::of(l, &mut digits, &mut self.scratch),
                });
            }
            match side {
                BookSide::Bid => self.bid_text = texts,
                BookSide::Ask => self.ask_text = texts,
            }
        }
        self.levels = next;
        self.pushed_out = None;
        self.rehash();
    }

    /// Brings the window up to `book` after one level changed in it: the
    /// level at `px` on `side` went from `old` to `sz` (0: removed). The
    /// window must have been up to date with the book before the change.
    pub fn apply_one(
        &mut self,
        book: &Book,
        side: BookSide,
        px: Fixed,
        old: Option<Fixed>,
        sz: Fixed,
    ) -> WindowChange {
        self.pushed_out = None;
        if old.unwrap_or(Fixed::ZERO) == sz {
            return WindowChange::Outside;
        }
        let cap = self.cap;
        let (levels, texts) = match side {
            BookSide::Bid => (&mut self.levels.bids, &mut self.bid_text),
            BookSide::Ask => (&mut self.levels.asks, &mut self.ask_text),
        };
        let rank = levels.partition_point(|l| ahead(side, l.0, px));
        let kept = levels.get(rank).is_some_and(|l| l.0 == px);
        let mut digits = itoa::Buffer::new();
        let change = if kept && sz == Fixed::ZERO {
            levels.remove(rank);
            texts.remove(rank);
            // The best level below the window moves up into it.
            if let Some(&(last, _)) = levels.last()
                && levels.len() == cap - 1
                && let Some(next) = book.next_beyond(side, last)
            {
                levels.push(next);
                texts.push(LevelText::of(next, &mut digits, &mut self.scratch));
            }
            WindowChange::Removed { side, rank, px }
        } else if kept {
            levels[rank].1 = sz;
            texts[rank] = LevelText::of((px, sz), &mut digits, &mut self.scratch);
            WindowChange::Resized { side, rank }
        } else if sz != Fixed::ZERO && rank < cap {
            levels.insert(rank, (px, sz));
            texts.insert(
                rank,
                LevelText::of((px, sz), &mut digits, &mut self.scratch),
            );
            if levels.len() > cap {
                self.pushed_out = levels.pop();
                texts.pop();
            }
            WindowChange::Inserted { side, rank }
        } else {
            return WindowChange::Outside;
        };
        let rank = match change {
            WindowChange::Resized { rank, .. }
            | WindowChange::Inserted { rank, .. }
            | WindowChange::Removed { rank, .. } => rank,
            WindowChange::Outside => usize::MAX,
        };
        if rank < CHECKSUM_LEVELS {
            self.rehash();
        }
        change
    }

    /// The diff of the top `n` levels per side (`n` at most the cap) that
    /// `change` made: the levels [`Window::diff`] lists for it, in the same
    /// order (set levels first, then removed ones).
    pub fn diff_one(&self, change: WindowChange, n: usize, out: &mut Vec<Level>) {
        let side_levels = |side| match side {
            BookSide::Bid => &self.levels.bids,
            BookSide::Ask => &self.levels.asks,
        };
        let level = |side, (px, sz): (Fixed, Fixed)| Level { side, px, sz };
        match change {
            WindowChange::Outside => {}
            WindowChange::Resized { side, rank } if rank < n => {
                out.push(level(side, side_levels(side)[rank]));
            }
            WindowChange::Inserted { side, rank } if rank < n => {
                let levels = side_levels(side);
                out.push(level(side, levels[rank]));
                // What was the n-th level is now below the class's window.
                let out_of_window = if n < self.cap {
                    levels.get(n).copied()
                } else {
                    self.pushed_out
                };
                if let Some((px, _)) = out_of_window {
                    out.push(level(side, (px, Fixed::ZERO)));
                }
            }
            WindowChange::Removed { side, rank, px } if rank < n => {
                // The level that was just below the class's window is in it.
                if let Some(&entered) = side_levels(side).get(n - 1) {
                    out.push(level(side, entered));
                }
                out.push(level(side, (px, Fixed::ZERO)));
            }
            _ => {}
        }
    }

    /// Recomputes the checksum from the kept texts: asks then bids, the
    /// top [`CHECKSUM_LEVELS`] of each.
    fn rehash(&mut self) {
        self.scratch.clear();
        let top = |t: &[LevelText]| t.len().min(CHECKSUM_LEVELS);
        for t in self.ask_text[..top(&self.ask_text)]
            .iter()
            .chain(&self.bid_text[..top(&self.bid_text)])
        {
            self.scratch.extend_from_slice(t.bytes());
        }
        self.checksum = crc32fast::hash(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::book::BookChange;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// On thousands of random one-level changes (resizes, adds, removals,
    /// inside and below the window, books thinner and deeper than it), the
    /// window kept in place equals a refill from the book, its checksum
    /// equals the book's, and each class's diff equals `Window::diff` of
    /// the refilled windows before and after.
    #[test]
    fn one_level_changes_match_a_full_refill_and_its_diffs() {
        for (seed, spread) in [(7u64, 8u64), (11, 30), (13, 60)] {
            let mut rng = Rng(seed);
            let mut book = Book::new();
            let levels = (0..spread / 2)
                .map(|i| Level {
                    side: BookSide::Bid,
                    px: Fixed::from_units(1000 - i as i64).unwrap(),
                    sz: Fixed::from_units(1).unwrap(),
                })
                .chain((0..spread / 2).map(|i| Level {
                    side: BookSide::Ask,
                    px: Fixed::from_units(1001 + i as i64).unwrap(),
                    sz: Fixed::from_units(2).unwrap(),
                }))
                .collect();
            book.apply("X", &BookChange::Snapshot(levels), false, 10_000)
                .unwrap();
            let mut kept = KeptWindow::default();
            kept.refill(&book, 25);
            for _ in 0..4000 {
                let side = if rng.below(2) == 0 {
                    BookSide::Bid
                } else {
                    BookSide::Ask
                };
                let off = rng.below(spread) as i64;
                let px = match side {
                    BookSide::Bid => 1000 - off,
                    BookSide::Ask => 1001 + off,
                };
                let px = Fixed(px * 1_000_000_000 + rng.below(2) as i64 * 5_000_000);
                let sz = if rng.below(3) == 0 {
                    Fixed::ZERO
                } else {
                    Fixed(rng.below(5) as i64 * 250_000_000 + 10_000_000)
                };
                let before = kept.levels().clone();
                let old = book.get(side, px);
                book.set(side, px, sz);
                let change = kept.apply_one(&book, side, px, old, sz);
                let mut refilled = Window::default();
                book.fill_window(25, &mut refilled);
                assert_eq!(kept.levels(), &refilled, "after {change:?}");
                assert_eq!(kept.checksum(), book.checksum());
                assert_eq!(kept.top(), book.top());
                for n in [10, 25] {
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    kept.diff_one(change, n, &mut got);
                    Window::diff(&before, &refilled, n, &mut want);
                    assert_eq!(got, want, "depth {n} after {change:?}");
                }
            }
        }
    }

    #[test]
    fn a_refill_reuses_texts_and_matches_the_book_checksum() {
        let mut rng = Rng(3);
        let mut book = Book::new();
        let mut kept = KeptWindow::default();
        for _ in 0..500 {
            let mut levels = Vec::new();
            for (side, base, dir) in [(BookSide::Bid, 500, -1), (BookSide::Ask, 501, 1)] {
                for i in 0..rng.below(40) as i64 {
                    levels.push(Level {
                        side,
                        px: Fixed::from_units(base + dir * i).unwrap(),
                        sz: Fixed::from_units(1 + rng.below(3) as i64).unwrap(),
                    });
                }
            }
            book.apply("X", &BookChange::Snapshot(levels), false, 10_000)
                .unwrap();
            kept.refill(&book, 25);
            let mut refilled = Window::default();
            book.fill_window(25, &mut refilled);
            assert_eq!(kept.levels(), &refilled);
            assert_eq!(kept.checksum(), book.checksum());
            assert_eq!(kept.top(), book.top());
        }
    }
}
