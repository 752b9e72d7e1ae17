//! Books at ingest: each book key's server-side book, the per-depth-class
//! messages of each update (computed once, under the sequencer lock, so
//! every depth class sees the same `seq`), the snapshots new subscribers
//! start from, and the `quote` tick a change of best bid or ask produces.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{FeedClock, Ingest, KeyState, RingItem};
use crate::model::book::{
    Book, BookChange, BookError, DepthClass, KeptWindow, Level, Window, WindowChange,
};
use crate::model::decimal::Fixed;
use crate::model::tick::{Channel, Event, KeyId, Tick, wall_clock_ns};
use crate::pipeline::stats::{Origin, Stats};
use crate::wire::book::{BookFrames, BookMessage};
use crate::wire::encode::EncodedTick;

/// Default for `--max-book-levels`: levels per side one book may hold.
pub const DEFAULT_MAX_BOOK_LEVELS: usize = 5000;

/// A book key's state beside its `seq`.
#[derive(Default)]
pub(crate) struct BookState {
    /// The server's book.
    pub(super) book: Book,
    /// Whether a snapshot has been applied (a diff needs one).
    pub(super) has_snapshot: bool,
    /// Per depth class: the last `seq` whose update changed that class's
    /// window, so the next message's `from` covers the updates in between
    /// (which changed nothing the class sees).
    pub(super) class_seq: [u64; 3],
    /// The snapshot item for the current `seq`, built for the first
    /// subscriber that needs it and shared until the next update.
    pub(super) snapshot: Option<RingItem>,
    /// The symbol, for snapshots.
    pub(super) sym: Arc<str>,
    /// Event time of the last update, for snapshots.
    pub(super) ts: u64,
    /// Ingest offset of the last update applied: a snapshot holds every
    /// update up to it, so with `--journal` it waits until the journal has
    /// written that far (`Ingest::last_values`).
    pub(super) offset: u64,
    /// The book's top [`WINDOW_LEVELS`] per side and its checksum, kept
    /// with every change: each limited depth class's window is a prefix.
    kept: KeptWindow,
    /// The kept levels before the last change of several levels, for that
    /// change's window diffs (a one-level change's come from the change).
    prev_window: Window,
}

/// Levels per side of the window ingest keeps: the deepest limited class.
const WINDOW_LEVELS: usize = 25;

/// How a change reached the kept window, for each depth class's message.
pub(super) enum Applied {
    /// A snapshot: every class is sent its whole window.
    Snapshot,
    /// One level changed (from size `old`); the window was kept in place.
    One {
        level: Level,
        old: Option<Fixed>,
        change: WindowChange,
    },
    /// Several levels: the window was refilled. `changed`: the levels
    /// whose size changed (the full-depth diff).
    Several { changed: Vec<Level> },
    /// A diff whose every level already had its size: the book, its
    /// window and everything kept for snapshots are as they were, and the
    /// update is not sequenced (docs/PROTOCOL.md, "Publishing books").
    Unchanged,
}

impl BookState {
    /// Applies a checked change (see [`Book::apply`]: on `Err` nothing
    /// changed) and brings the kept window and checksum up to date.
    pub(super) fn apply(
        &mut self,
        sym: &Arc<str>,
        ts: u64,
        change: &BookChange,
        max_levels: usize,
    ) -> Result<Applied, BookError> {
        let one = match change {
            BookChange::Diff(l) if l.len() == 1 => Some(l[0]),
            _ => None,
        };
        let old: Vec<Option<Fixed>> = match change {
            BookChange::Diff(l) if one.is_none() => {
                l.iter().map(|l| self.book.get(l.side, l.px)).collect()
            }
            _ => Vec::new(),
        };
        let one_old = one.and_then(|l| self.book.get(l.side, l.px));
        if !self
            .book
            .apply(sym, change, self.has_snapshot, max_levels)?
        {
            return Ok(Applied::Unchanged);
        }
        self.has_snapshot = true;
        self.snapshot = None;
        if !Arc::ptr_eq(&self.sym, sym) {
            self.sym = sym.clone();
        }
        self.ts = ts;
        Ok(match (change, one) {
            (BookChange::Snapshot(_), _) => {
                self.kept.refill(&self.book, WINDOW_LEVELS);
                Applied::Snapshot
            }
            (BookChange::Diff(_), Some(level)) => Applied::One {
                level,
                old: one_old,
                change: self
                    .kept
                    .apply_one(&self.book, level.side, level.px, one_old, level.sz),
            },
            (BookChange::Diff(levels), None) => {
                self.prev_window.clone_from(self.kept.levels());
                self.kept.refill(&self.book, WINDOW_LEVELS);
                let changed = levels
                    .iter()
                    .zip(&old)
                    .filter(|(l, old)| old.unwrap_or(Fixed::ZERO) != l.sz)
                    .map(|(l, _)| *l)
                    .collect();
                Applied::Several { changed }
            }
        })
    }

    /// The levels `class`'s message lists for the last change.
    fn class_levels(&self, applied: &Applied, class: DepthClass) -> Vec<Level> {
        let mut out = Vec::new();
        match (applied, class) {
            (Applied::Unchanged, _) => {}
            (Applied::Snapshot, _) => return self.book.window(class.levels()),
            (Applied::One { level, old, .. }, DepthClass::Full) => {
                if old.unwrap_or(Fixed::ZERO) != level.sz {
                    out.push(*level);
                }
            }
            (Applied::One { change, .. }, _) => {
                self.kept.diff_one(*change, class.levels(), &mut out);
            }
            (Applied::Several { changed }, DepthClass::Full) => return changed.clone(),
            (Applied::Several { .. }, _) => {
                Window::diff(
                    &self.prev_window,
                    self.kept.levels(),
                    class.levels(),
                    &mut out,
                );
            }
        }
        out
    }
}

/// A book change for one symbol, admitted (symbol interned).
#[derive(Clone, Debug)]
pub struct AdmittedBook {
    key: KeyId,
    sym: Arc<str>,
    ts: u64,
    change: BookChange,
}

impl AdmittedBook {
    pub fn symbol(&self) -> &str {
        &self.sym
    }
}

impl Ingest {
    /// Interns a book change's symbol.
    pub fn admit_book(
        &self,
        sym: &str,
        ts: u64,
        change: BookChange,
    ) -> Result<AdmittedBook, super::IngestError> {
        let (id, sym) = self.symbols.intern(sym)?;
        Ok(AdmittedBook {
            key: KeyId::new(id, Channel::Book),
            sym,
            ts,
            change,
        })
    }

    /// Sets `--max-book-levels` (levels per side of one book).
    pub fn set_max_book_levels(&self, n: usize) {
        self.max_book_levels.store(n, Ordering::Relaxed);
    }

    /// Applies a book change and publishes it (and the `quote` tick when
    /// the top of book moved), waiting for ring space like
    /// [`Ingest::publish`]. A refused change leaves the book as it was and
    /// publishes nothing; so does a diff that changes nothing, which is
    /// accepted and counted (`Stats::book_unchanged`). Returns the book's
    /// `seq` after the change (the same `seq` for a diff that changed
    /// nothing).
    pub async fn publish_book(&self, b: &AdmittedBook, origin: Origin) -> Result<u64, BookError> {
        self.publish_book_from_source(b, origin, &self.default_clock)
            .await
    }

    /// [`Ingest::publish_book`] for a source with its own clock: the
    /// update's `ts` is that source's time too.
    pub async fn publish_book_from_source(
        &self,
        b: &AdmittedBook,
        origin: Origin,
        clock: &FeedClock,
    ) -> Result<u64, BookError> {
        let outcome = Cell::new(None);
        self.publish_waiting(std::slice::from_ref(b), |batch| {
            match batch
                .first()
                .map(|b| self.try_publish_book(b, origin, clock))
            {
                Some(Some(r)) => {
                    outcome.set(Some(r));
                    1
                }
                _ => 0,
            }
        })
        .await;
        outcome.into_inner().unwrap_or(Ok(0))
    }

    /// One attempt: `None` when the ring has no room for the update and its
    /// quote.
    fn try_publish_book(
        &self,
        b: &AdmittedBook,
        origin: Origin,
        clock: &FeedClock,
    ) -> Option<Result<u64, BookError>> {
        let max_levels = self.max_book_levels.load(Ordering::Relaxed);
        let mut seq = self.sequencer.lock();
        if seq.writer.free() < 2 {
            return None;
        }
        let rx = wall_clock_ns();
        let ks = seq.key(b.key);
        let state = ks.book.get_or_insert_with(Default::default);
        let top_before = state.kept.top();
        let applied = match state.apply(&b.sym, b.ts, &b.change, max_levels) {
            Ok(applied) => applied,
            Err(e) => return Some(Err(e)),
        };
        clock.saw(b.ts, rx);
        if matches!(applied, Applied::Unchanged) {
            // Accepted, but no `seq`, history entry, ring item or quote:
            // every client's diffs stay contiguous without it.
            let now = ks.seq;
            drop(seq);
            Stats::add(&self.stats.book_unchanged, 1);
            return Some(Ok(now));
        }
        if ks.seq == 0 {
            self.symbols.mark_seen(b.key.symbol());
        }
        ks.seq += 1;
        let now = ks.seq;
        let state = ks.book.as_mut()?;
        let checksum = state.kept.checksum();
        let msgs = DepthClass::ALL.map(|class| {
            let levels = state.class_levels(&applied, class);
            let snapshot = matches!(applied, Applied::Snapshot);
            if levels.is_empty() && !snapshot {
                return None;
            }
            let from = if snapshot {
                now
            } else {
                state.class_seq[class as usize] + 1
            };
            state.class_seq[class as usize] = now;
            Some(BookMessage {
                snapshot,
                from,
                levels,
                checksum,
            })
        });
        let top = state.kept.top();
        let epoch = self.epoch();
        let offset = seq.next_offset;
        seq.next_offset += 1;
        if let Some(state) = seq.key(b.key).book.as_mut() {
            state.offset = offset;
        }
        let item = Arc::new(EncodedTick::with_book(
            Tick {
                key: b.key,
                sym: b.sym.clone(),
                seq: now,
                ts: b.ts,
                rx,
                event: Event::Book(top),
            },
            offset,
            epoch,
            BookFrames::new(msgs),
        ));
        self.history.append(&item);
        let mut pushed = 1u64;
        if seq.writer.push(item).is_err() {
            unreachable!("the ring had 2 free slots under the sequencer lock");
        }
        if top != top_before {
            let qkey = KeyId::new(b.key.symbol(), Channel::Quote);
            let qs = seq.key(qkey);
            qs.seq += 1;
            let qseq = qs.seq;
            let quote = seq.place_derived(
                Tick {
                    key: qkey,
                    sym: b.sym.clone(),
                    seq: qseq,
                    ts: b.ts,
                    rx,
                    event: Event::Quote {
                        bid: top.bid,
                        bsz: top.bsz,
                        ask: top.ask,
                        asz: top.asz,
                    },
                },
                epoch,
            );
            seq.key(qkey).last = Some(quote.clone());
            self.history.append(&quote);
            if seq.writer.push(quote).is_err() {
                unreachable!("the ring had 2 free slots under the sequencer lock");
            }
            pushed += 1;
        }
        drop(seq);
        Stats::add(&self.stats.ticks_in, pushed);
        Stats::add(&self.stats.ticks_in_by_origin[origin as usize], pushed);
        for w in &self.reader_wakers {
            w.notify_one();
        }
        Some(Ok(now))
    }

    /// The book's `seq` and a copy of its levels (bids then asks, best
    /// first), or `None` before its first snapshot: for an endpoint that
    /// serves a book snapshot whose update id lines up with the stream.
    pub fn book_state(&self, sym: &str) -> Option<(u64, Vec<Level>)> {
        let (id, _) = self.symbols.lookup(sym)?;
        let seq = self.sequencer.lock();
        let ks = seq.keys.get(KeyId::new(id, Channel::Book).0 as usize)?;
        let state = ks.book.as_ref().filter(|s| s.has_snapshot)?;
        Some((ks.seq, state.book.window(usize::MAX)))
    }
}

/// The snapshot a new subscriber of a book key starts from (every depth
/// class's window at the current `seq`), built once per `seq`.
pub(super) fn snapshot_item(key: KeyId, ks: &mut KeyState) -> Option<RingItem> {
    let seq = ks.seq;
    let state = ks.book.as_mut().filter(|s| s.has_snapshot)?;
    if let Some(item) = &state.snapshot {
        return Some(item.clone());
    }
    let checksum = state.kept.checksum();
    let sym = state.sym.clone();
    let msgs = DepthClass::ALL.map(|class| {
        Some(BookMessage {
            snapshot: true,
            from: seq,
            levels: state.book.window(class.levels()),
            checksum,
        })
    });
    let item = Arc::new(EncodedTick::with_book(
        Tick {
            key,
            sym,
            seq,
            ts: state.ts,
            rx: wall_clock_ns(),
            event: Event::Book(state.book.top()),
        },
        0,
        crate::model::epoch::Epoch::default(),
        BookFrames::new(msgs),
    ));
    state.snapshot = Some(item.clone());
    Some(item)
}
