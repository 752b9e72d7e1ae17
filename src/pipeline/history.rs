//! The shared history of recent ticks: what a reconnecting or slow client
//! reads forward from instead of losing ticks.
//!
//! Ingest appends every sequenced tick here under its sequencer lock, so
//! the history holds exactly the stream the ring carries, in ingest-offset
//! order. It holds the same [`RingItem`]s the ring and the fan-out share
//! (one `Arc` clone each, no copy of any frame), bounded by bytes
//! (`--history-bytes`) and age (`--history-age`): the oldest ticks leave
//! first. It is indexed three ways, so "every tick of these keys after
//! position P" costs a lookup, not a scan:
//!
//! - by global ingest offset: offsets are contiguous, so the tick at offset
//!   `o` is at index `o - first_offset`;
//! - by `rx` (the server's receive stamp, taken under the same lock, so
//!   non-decreasing unless the wall clock steps back): binary search;
//! - per key by `seq`: each key's `(seq, offset)` pairs, oldest first.
//!
//! Memory per tick: [`History::cost`] counts the tick's `EncodedTick`, its
//! JSON frame and the index entries (about 450 bytes for a typical trade),
//! and a book update's messages with their levels; the SSE event and
//! binary record, encoded lazily, add theirs when a client of that
//! encoding asked for the tick.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::model::tick::KeyId;
use crate::pipeline::ingest::RingItem;
use crate::wire::encode::EncodedTick;

/// The bounds of a history (`serve --history-bytes`, `--history-age`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Bytes the history may hold, by [`History::cost`]; 0 turns it off.
    /// Default 256 MiB.
    pub max_bytes: usize,
    /// Ticks older than this (by `rx`) leave. Default 5 minutes.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        // At ~450 bytes a tick, 256 MiB holds ~600 k ticks: 5 minutes at
        // 2,000 ticks/s (the reconnect test's rate), far more than the
        // last minute of the bundled feed.
        HistoryLimits {
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(300),
        }
    }
}

/// Where a key stands in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpan {
    /// The oldest `seq` of the key still held.
    pub first_seq: u64,
    /// Its offset.
    pub first_offset: u64,
}

struct Inner {
    /// The ticks, oldest first; `ticks[i]` has offset `first_offset + i`.
    ticks: VecDeque<RingItem>,
    /// Offset of `ticks[0]` (of the next tick when empty).
    first_offset: u64,
    /// Each key's ticks held, as `(seq, offset)`, oldest first.
    per_key: HashMap<KeyId, VecDeque<(u64, u64)>>,
    /// Sum of [`History::cost`] of the ticks held.
    bytes: usize,
    /// Highest `rx` of a tick that left: a position by time at or before it
    /// cannot be served whole.
    evicted_rx: u64,
}

/// The shared history; one per server, written by ingest, read by every
/// fan-out worker.
pub struct History {
    limits: HistoryLimits,
    inner: Mutex<Inner>,
}

impl History {
    pub fn new(limits: HistoryLimits) -> History {
        History {
            limits,
            inner: Mutex::new(Inner {
                ticks: VecDeque::new(),
                first_offset: 1,
                per_key: HashMap::new(),
                bytes: 0,
                evicted_rx: 0,
            }),
        }
    }

    /// What one tick costs the history, in bytes: the shared tick and its
    /// JSON frame (held anyway while in the ring, but kept alive here
    /// longer), a book update's messages and their levels, its slot in the
    /// offset index and its per-key entry. Computed from what does not
    /// change while the tick is held (lazily encoded frames are left out),
    /// so that adding and removing a tick balance.
    pub fn cost(item: &EncodedTick) -> usize {
        std::mem::size_of::<EncodedTick>()
            + item.json.len()
            + item.tick.sym.len()
            + item.book.as_ref().map_or(0, |b| b.held_bytes())
            + std::mem::size_of::<RingItem>()
            + std::mem::size_of::<(u64, u64)>()
            + match item.tick.event {
                // A bar's values live in their own allocation.
                crate::model::tick::Event::Bar(_) => std::mem::size_of::<crate::model::bar::Bar>(),
                _ => 0,
            }
    }

    /// Appends the tick ingest just sequenced (offsets must be contiguous:
    /// called under the sequencer lock), then drops what the limits no
    /// longer allow.
    pub(crate) fn append(&self, item: &RingItem) {
        if self.limits.max_bytes == 0 {
            return;
        }
        let mut h = self.inner.lock();
        if h.ticks.is_empty() {
            h.first_offset = item.offset;
        }
        debug_assert_eq!(h.first_offset + h.ticks.len() as u64, item.offset);
        h.bytes += History::cost(item);
        h.per_key
            .entry(item.tick.key)
            .or_default()
            .push_back((item.tick.seq, item.offset));
        h.ticks.push_back(item.clone());
        let oldest_allowed = item
            .tick
            .rx
            .saturating_sub(self.limits.max_age.as_nanos() as u64);
        while let Some(front) = h.ticks.front() {
            if h.bytes <= self.limits.max_bytes && front.tick.rx >= oldest_allowed {
                break;
            }
            let front = h.ticks.pop_front().expect("front exists");
            h.first_offset += 1;
            h.bytes -= History::cost(&front);
            h.evicted_rx = h.evicted_rx.max(front.tick.rx);
            if let Some(q) = h.per_key.get_mut(&front.tick.key) {
                q.pop_front();
                if q.is_empty() {
                    h.per_key.remove(&front.tick.key);
                }
            }
        }
    }

    /// Sets the first offset of a history that has held nothing yet.
    pub(crate) fn start_at(&self, offset: u64) {
        let mut h = self.inner.lock();
        if h.ticks.is_empty() {
            h.first_offset = offset;
        }
    }

    /// Forgets every tick held (their `seq` numbering has ended: a gateway
    /// adopting a new epoch). The next tick's offset is unchanged; a resume
    /// by time from before now is no longer complete.
    pub(crate) fn clear(&self) {
        let mut h = self.inner.lock();
        let next = h.first_offset + h.ticks.len() as u64;
        if let Some(newest) = h.ticks.back() {
            h.evicted_rx = h.evicted_rx.max(newest.tick.rx);
        }
        h.ticks.clear();
        h.per_key.clear();
        h.bytes = 0;
        h.first_offset = next;
    }

    /// Offset of the oldest tick held; the next tick's offset when empty.
    pub fn first_offset(&self) -> u64 {
        self.inner.lock().first_offset
    }

    /// Ticks and bytes held.
    pub fn len_bytes(&self) -> (usize, usize) {
        let h = self.inner.lock();
        (h.ticks.len(), h.bytes)
    }

    /// Where `key` stands, if any tick of it is held.
    pub fn key_span(&self, key: KeyId) -> Option<KeySpan> {
        let h = self.inner.lock();
        let &(first_seq, first_offset) = h.per_key.get(&key)?.front()?;
        Some(KeySpan {
            first_seq,
            first_offset,
        })
    }

    /// The offset of the tick of `key` with `seq`, if held.
    pub fn offset_of(&self, key: KeyId, seq: u64) -> Option<u64> {
        let h = self.inner.lock();
        let q = h.per_key.get(&key)?;
        let i = q.partition_point(|&(s, _)| s < seq);
        q.get(i).filter(|&&(s, _)| s == seq).map(|&(_, o)| o)
    }

    /// The `seq` of `key` a client has when it has everything up to and
    /// including `offset`: the seq of its last tick at or before it, or one
    /// less than its first tick after it. `None` when no tick of the key is
    /// held (nothing to replay for it).
    pub fn seq_at(&self, key: KeyId, offset: u64) -> Option<u64> {
        let h = self.inner.lock();
        let q = h.per_key.get(&key)?;
        let i = q.partition_point(|&(_, o)| o <= offset);
        if i > 0 {
            Some(q[i - 1].0)
        } else {
            q.front().map(|&(s, _)| s.saturating_sub(1))
        }
    }

    /// Every key with a tick held after `offset`, for a `*` resume.
    pub fn keys_after(&self, offset: u64) -> Vec<KeyId> {
        let h = self.inner.lock();
        h.per_key
            .iter()
            .filter(|(_, q)| q.back().is_some_and(|&(_, o)| o > offset))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The position just before the first tick with `rx >= ts`, and whether
    /// every tick since `ts` is still held.
    pub fn offset_before_rx(&self, ts: u64) -> (u64, bool) {
        let h = self.inner.lock();
        let i = h.ticks.partition_point(|t| t.tick.rx < ts);
        let whole = h.evicted_rx < ts;
        (h.first_offset + i as u64 - 1, whole)
    }

    /// Appends to `out` the ticks from offset `from` up to and including
    /// `until`, at most `max` of them. `Err(first)`: `from` has already
    /// left the history (the oldest held is `first`).
    pub fn read(
        &self,
        from: u64,
        until: u64,
        max: usize,
        out: &mut Vec<RingItem>,
    ) -> Result<(), u64> {
        let h = self.inner.lock();
        if from < h.first_offset {
            return Err(h.first_offset);
        }
        let start = (from - h.first_offset) as usize;
        let end = (until + 1)
            .saturating_sub(h.first_offset)
            .min(h.ticks.len() as u64) as usize;
        if start < end {
            out.extend(h.ticks.range(start..end.min(start + max)).cloned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::decimal::Fixed;
    use crate::model::epoch::Epoch;
    use crate::model::tick::{Channel, Event, Side, Tick};

    fn item(sym: u32, seq: u64, offset: u64, rx: u64) -> RingItem {
        Arc::new(EncodedTick::at(
            Tick {
                key: KeyId::new(sym, Channel::Trade),
                sym: "A".into(),
                seq,
                ts: rx,
                rx,
                event: Event::Trade {
                    px: Fixed(1),
                    qty: Fixed(1),
                    side: Side::Buy,
                },
            },
            offset,
            Epoch(7),
        ))
    }

    #[test]
    fn indexes_by_offset_key_and_time_and_keeps_to_its_byte_bound() {
        let one = History::cost(&item(0, 1, 1, 1010));
        let h = History::new(HistoryLimits {
            max_bytes: one * 4,
            max_age: Duration::from_secs(3600),
        });
        // Keys 0 and 1 alternate: offsets 1..=6, seqs 1,1,2,2,3,3.
        for o in 1..=6u64 {
            // rx 1010..1060: every tick's JSON has the same length.
            h.append(&item((o % 2) as u32, o.div_ceil(2), o, 1000 + o * 10));
        }
        assert_eq!(h.len_bytes().0, 4);
        assert_eq!(h.first_offset(), 3);
        let k1 = KeyId::new(1, Channel::Trade);
        assert_eq!(
            h.key_span(k1),
            Some(KeySpan {
                first_seq: 2,
                first_offset: 3
            })
        );
        assert_eq!(h.offset_of(k1, 3), Some(5));
        assert_eq!(h.offset_of(k1, 1), None);
        assert_eq!(h.seq_at(k1, 4), Some(2));
        assert_eq!(h.seq_at(k1, 2), Some(1));
        assert_eq!(h.offset_before_rx(1045), (4, true));
        assert!(!h.offset_before_rx(1020).1, "offset 2 (rx 1020) left");
        let mut out = Vec::new();
        assert_eq!(h.read(2, 6, 10, &mut out), Err(3));
        h.read(4, 5, 10, &mut out).unwrap();
        assert_eq!(out.iter().map(|i| i.offset).collect::<Vec<_>>(), [4, 5]);
        out.clear();
        h.read(4, 99, 1, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_trade_costs_what_the_docs_say() {
        // README and --history-bytes' help: "about 450 bytes a tick".
        let cost = History::cost(&item(0, 123_456, 1, 1_700_000_000_000_000_000));
        assert!((400..=500).contains(&cost), "{cost}");
    }

    #[test]
    fn a_book_update_costs_its_levels() {
        use crate::model::book::{BookSide, Level};
        use crate::wire::book::{BookFrames, BookMessage};
        let update = |levels: usize| {
            let msg = || BookMessage {
                snapshot: false,
                from: 1,
                levels: (0..levels)
                    .map(|i| Level {
                        side: BookSide::Bid,
                        px: Fixed(i as i64),
                        sz: Fixed(1),
                    })
                    .collect(),
                checksum: 0,
            };
            let frames = BookFrames::new([Some(msg()), Some(msg()), None]);
            let tick = Arc::try_unwrap(item(0, 1, 1, 1)).unwrap().tick;
            Arc::new(EncodedTick::with_book(tick, 1, Epoch(7), frames))
        };
        let (small, big) = (History::cost(&update(1)), History::cost(&update(101)));
        // Two messages of 100 more levels each: at least their `Level`s.
        assert!(
            big - small >= 200 * std::mem::size_of::<Level>(),
            "{small} {big}"
        );
        // Adding and removing balance, so the byte bound is exact.
        let h = History::new(HistoryLimits {
            max_bytes: big,
            max_age: Duration::from_secs(3600),
        });
        h.append(&update(101));
        assert_eq!(h.len_bytes().1, big);
        h.append(&item(0, 2, 2, 2));
        assert_eq!(h.first_offset(), 2, "the book update left to make room");
    }

    #[test]
    fn old_ticks_leave_by_age() {
        let h = History::new(HistoryLimits {
            max_bytes: 1 << 20,
            max_age: Duration::from_nanos(100),
        });
        for o in 1..=10u64 {
            h.append(&item(0, o, o, o * 50));
        }
        // rx 500 is newest: rx >= 400 stays.
        assert_eq!(h.first_offset(), 8);
        assert_eq!(h.keys_after(9), [KeyId::new(0, Channel::Trade)]);
        assert!(h.keys_after(10).is_empty());
    }
}
