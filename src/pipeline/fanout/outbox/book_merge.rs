//! A book subscriber's side of the outbox: its depth class per book key,
//! and consistent conflation for a slow one.
//!
//! A client that keeps up gets each update's shared message for its depth
//! class. Past its byte cap, a book key's messages are merged per price
//! level into one pending diff (newest size wins, removals kept, a snapshot
//! absorbs later diffs) and sent, once the write buffer has drained, as one
//! diff spanning `from..seq`. Book sizes are absolute, so the merged diff
//! brings the client's book to exactly the server's at `seq`; and the
//! pending state holds at most one entry per price level, whatever the
//! update rate.

use super::{Client, KeySlot};
use crate::model::book::{DepthClass, Level, MergedLevels};
use crate::model::decimal::Fixed;
use crate::model::tick::{KeyId, Tick};
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::Stats;
use crate::wire::book::{BookMessage, encode};

/// Book messages merged for one slow client, sent as one message.
pub(crate) struct BookMerge {
    /// The newest update's tick (sym, seq, ts, rx of the merged message).
    tick: Tick,
    /// Whether the merge starts from a snapshot (then `levels` is a whole
    /// book and removals delete entries); else a diff (removals kept).
    snapshot: bool,
    /// `from` of the first merged message.
    from: u64,
    /// Newest size per level; at most one entry per price level.
    levels: MergedLevels,
    /// The checksum after the newest merged message.
    checksum: u32,
}

impl BookMerge {
    fn new(tick: &Tick, msg: &BookMessage) -> BookMerge {
        let mut m = BookMerge {
            tick: tick.clone(),
            snapshot: msg.snapshot,
            from: msg.from,
            levels: MergedLevels::default(),
            checksum: msg.checksum,
        };
        m.put(&msg.levels);
        m
    }

    fn put(&mut self, levels: &[Level]) {
        for l in levels {
            if self.snapshot && l.sz == Fixed::ZERO {
                self.levels.remove(l);
            } else {
                self.levels.set(l);
            }
        }
    }

    /// Folds a newer message in.
    fn absorb(&mut self, tick: &Tick, msg: &BookMessage) {
        if msg.snapshot {
            *self = BookMerge::new(tick, msg);
            return;
        }
        self.put(&msg.levels);
        self.tick = tick.clone();
        self.checksum = msg.checksum;
    }

    /// Price levels held (the memory bound the tests check).
    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    /// The merged message, bids best first then asks best first.
    fn message(&self) -> BookMessage {
        let levels = self.levels.to_levels();
        BookMessage {
            snapshot: self.snapshot,
            from: self.from,
            levels,
            checksum: self.checksum,
        }
    }
}

impl KeySlot {
    /// Whether a merged book message waits in this slot.
    pub(super) fn has_book_pending(&self) -> bool {
        self.book_pending.is_some()
    }
}

impl Client {
    /// Sets the depth a book key is kept at. A change of depth restarts the
    /// key (its next snapshot is delivered, anything pending is dropped);
    /// returns whether it changed.
    pub(crate) fn set_book_depth(&mut self, key: KeyId, depth: DepthClass) -> bool {
        let slot = self.keys.entry(key).or_default();
        if slot.book_depth == depth {
            return false;
        }
        slot.book_depth = depth;
        if let Some(m) = slot.book_pending.take() {
            Stats::gauge(&self.stats.pending_ticks, -1);
            Stats::gauge(&self.stats.pending_book_levels, -(m.len() as i64));
        }
        slot.last_seq = 0;
        true
    }

    /// Offers a book update (already checked as new for this key): sent at
    /// once when the client keeps up, else merged into its pending diff.
    pub(super) fn offer_book(&mut self, item: &RingItem) -> bool {
        let key = item.tick.key;
        let Some(frames) = item.book.as_deref() else {
            return false;
        };
        let Some(slot) = self.keys.get_mut(&key) else {
            return false;
        };
        let depth = slot.book_depth;
        let Some(msg) = frames.class(depth).msg.as_ref() else {
            return false; // nothing changed in this client's window
        };
        if let Some(m) = &mut slot.book_pending {
            let before = m.len() as i64;
            m.absorb(&item.tick, msg);
            Stats::gauge(&self.stats.pending_book_levels, m.len() as i64 - before);
            self.dropped += 1;
            Stats::add(&self.stats.ticks_dropped_stale, 1);
            return true;
        }
        self.announce_symbol(&item.tick);
        let direct = self.order.is_empty() && self.control.is_empty() && self.unsent() < self.cap;
        if direct {
            if let Some(f) = frames.class(depth).frame(&item.tick, depth, self.encoding) {
                self.append_book_frame(f, item.tick.rx);
            }
        } else if let Some(slot) = self.keys.get_mut(&key) {
            let m = BookMerge::new(&item.tick, msg);
            Stats::gauge(&self.stats.pending_book_levels, m.len() as i64);
            slot.book_pending = Some(Box::new(m));
            Stats::gauge(&self.stats.pending_ticks, 1);
            self.order.push_back(key);
        }
        true
    }

    fn append_book_frame(&mut self, frame: &[u8], rx: u64) {
        let e = self.encoding as usize;
        Stats::add(&self.stats.ticks_out[e], 1);
        Stats::add(&self.stats.tick_frames_out[e], 1);
        // A delivery like a tick's, for the deliveries-per-write series.
        self.unwritten_live += 1;
        self.oldest_rx.get_or_insert(rx);
        self.append_frame(frame);
        self.frames_sent += 1;
    }

    /// In `fill`: sends `key`'s merged book message if one waits; returns
    /// whether it did.
    pub(super) fn fill_book(&mut self, key: KeyId) -> bool {
        let Some(slot) = self.keys.get_mut(&key) else {
            return false;
        };
        let depth = slot.book_depth;
        let Some(m) = slot.book_pending.take() else {
            return false;
        };
        Stats::gauge(&self.stats.pending_ticks, -1);
        Stats::gauge(&self.stats.pending_book_levels, -(m.len() as i64));
        let frame = encode(&m.tick, depth, &m.message(), self.encoding);
        self.append_book_frame(&frame, m.tick.rx);
        true
    }

    /// Price levels held in pending book merges (for the memory-bound
    /// tests and the bench's held-bytes figure).
    pub fn pending_book_levels(&self) -> usize {
        self.keys
            .values()
            .filter_map(|s| s.book_pending.as_ref().map(|m| m.len()))
            .sum()
    }

    /// Drops every pending book merge; returns how many there were.
    pub(super) fn discard_book_pending(&mut self) -> i64 {
        let (mut n, mut levels) = (0, 0);
        for slot in self.keys.values_mut() {
            if let Some(m) = slot.book_pending.take() {
                n += 1;
                levels += m.len() as i64;
            }
        }
        Stats::gauge(&self.stats.pending_book_levels, -levels);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::book::{BookSide, TopOfBook};
    use crate::model::tick::{Channel, Event};

    fn tick(seq: u64) -> Tick {
        Tick {
            key: KeyId::new(0, Channel::Book),
            sym: "X".into(),
            seq,
            ts: seq,
            rx: seq,
            event: Event::Book(TopOfBook::default()),
        }
    }

    fn diff(from: u64, levels: Vec<Level>) -> BookMessage {
        BookMessage {
            snapshot: false,
            from,
            levels,
            checksum: from as u32,
        }
    }

    fn lv(side: BookSide, px: i64, sz: i64) -> Level {
        Level {
            side,
            px: Fixed(px),
            sz: Fixed(sz),
        }
    }

    #[test]
    fn a_merge_holds_one_entry_per_level_whatever_the_update_count() {
        let mut m = BookMerge::new(&tick(1), &diff(1, vec![lv(BookSide::Bid, 1, 1)]));
        for seq in 2..=10_000u64 {
            let px = (seq % 20) as i64 + 1;
            let sz = if seq % 7 == 0 { 0 } else { seq as i64 };
            m.absorb(&tick(seq), &diff(seq, vec![lv(BookSide::Ask, px, sz)]));
        }
        assert!(m.len() <= 21, "{} entries", m.len());
        let msg = m.message();
        assert_eq!((msg.from, m.tick.seq, msg.checksum), (1, 10_000, 10_000));
        // Newest size wins; a removal is kept as size 0.
        let at = |px| {
            msg.levels
                .iter()
                .find(|l| l.side == BookSide::Ask && l.px == Fixed(px))
        };
        // Price 3 was last touched at seq 9_982 = 7 × 1_426: a removal.
        assert_eq!(at(3).unwrap().sz, Fixed(0));
        assert_eq!(at(2).unwrap().sz, Fixed(9_981));
        assert_eq!(at(1).unwrap().sz, Fixed(10_000));
    }

    #[test]
    fn a_snapshot_restarts_the_merge_and_absorbs_later_diffs() {
        let mut m = BookMerge::new(&tick(1), &diff(1, vec![lv(BookSide::Bid, 5, 1)]));
        let snap = BookMessage {
            snapshot: true,
            from: 2,
            levels: vec![lv(BookSide::Bid, 3, 1), lv(BookSide::Ask, 9, 1)],
            checksum: 2,
        };
        m.absorb(&tick(2), &snap);
        m.absorb(
            &tick(3),
            &diff(3, vec![lv(BookSide::Ask, 9, 0), lv(BookSide::Bid, 4, 2)]),
        );
        let msg = m.message();
        assert!(msg.snapshot);
        assert_eq!(msg.from, 2);
        assert_eq!(
            msg.levels,
            vec![lv(BookSide::Bid, 4, 2), lv(BookSide::Bid, 3, 1)]
        );
    }
}
