//! The ingest ring: a bounded, lock-free broadcast ring with one writer and a
//! fixed set of readers (one per fan-out worker).
//!
//! Every reader sees every item, in order. The writer never overwrites an item
//! that some reader has not read yet: when the slowest reader is a full ring
//! behind, [`RingWriter::push`] hands the item back and the caller applies
//! backpressure upstream. Readers never wait for the writer or for each other.
//!
//! Positions are monotonically increasing `u64` counters; the slot of position
//! `p` is `p & mask`. The invariants, which the `unsafe` blocks rely on:
//!
//! * **I1 (publish)**: the writer writes slot `p & mask` and only then stores
//!   `head = p + 1` (or a later position, after staging several) with `Release`. A reader loads `head` with `Acquire` and
//!   reads only positions `< head`, so it sees the fully written item.
//! * **I2 (reclaim)**: the writer writes position `p` only if every attached
//!   reader's cursor is `> p - capacity`, i.e. every reader is done with
//!   position `p - capacity`, the previous occupant of that slot. A reader
//!   finishes cloning its items before storing its cursor with `Release`; the
//!   writer loads cursors with `Acquire`. So no reader is reading a slot while
//!   the writer replaces it.
//! * **I3 (one writer)**: [`RingWriter`] is the only handle that writes, it is
//!   not `Clone`, and `push` takes `&mut self`.
//! * A dropped reader stores `DETACHED` so it never holds the writer back.
//!
//! I1 and I2 are also checked with `debug_assert!` where they are relied on.

// The one module besides `sys` that needs `unsafe`: the slots are shared
// cells whose exclusive access the invariants above guarantee.
#![allow(unsafe_code)]

#[cfg(tickwire_loom)]
use loom::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
#[cfg(not(tickwire_loom))]
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use crossbeam::utils::CachePadded;

/// Cursor value of a reader that no longer reads.
const DETACHED: u64 = u64::MAX;

#[cfg(not(tickwire_loom))]
struct Slot<T>(std::cell::UnsafeCell<Option<T>>);
#[cfg(tickwire_loom)]
struct Slot<T>(loom::cell::UnsafeCell<Option<T>>);

impl<T> Slot<T> {
    fn new() -> Self {
        #[cfg(not(tickwire_loom))]
        return Slot(std::cell::UnsafeCell::new(None));
        #[cfg(tickwire_loom)]
        return Slot(loom::cell::UnsafeCell::new(None));
    }

    /// # Safety
    /// No reader may be reading this slot (invariant I2).
    unsafe fn store(&self, value: T) {
        #[cfg(not(tickwire_loom))]
        // SAFETY: the caller guarantees exclusive access (I2, I3).
        unsafe {
            *self.0.get() = Some(value)
        };
        #[cfg(tickwire_loom)]
        // SAFETY: as above.
        self.0.with_mut(|p| unsafe { *p = Some(value) });
    }

    /// # Safety
    /// The slot holds a published item that the writer will not replace
    /// while this call runs (invariants I1, I2).
    unsafe fn load(&self) -> T
    where
        T: Clone,
    {
        #[cfg(not(tickwire_loom))]
        // SAFETY: the caller guarantees the slot is published and not being written.
        let v = unsafe { (*self.0.get()).clone() };
        #[cfg(tickwire_loom)]
        // SAFETY: as above.
        let v = self.0.with(|p| unsafe { (*p).clone() });
        v.expect("published ring slot is never empty")
    }
}

struct Shared<T> {
    slots: Box<[Slot<T>]>,
    mask: u64,
    /// Next position the writer will write; positions below it are published.
    head: CachePadded<AtomicU64>,
    /// Next position each reader will read, or `DETACHED`.
    cursors: Box<[CachePadded<AtomicU64>]>,
}

// SAFETY: items are moved in by the single writer and cloned out by readers;
// access to each slot is serialised by the invariants above, so sharing the
// ring across threads is sound whenever `T` itself may be sent and shared.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Shared<T> {}

/// The single writing handle.
pub struct RingWriter<T> {
    shared: Arc<Shared<T>>,
    head: u64,
    /// Lower bound of the slowest reader's cursor, refreshed only when the
    /// ring looks full, so a push usually touches no reader cache line.
    min_cursor: u64,
}

/// One reader's handle. Each reader sees every item pushed after its creation.
pub struct RingReader<T> {
    shared: Arc<Shared<T>>,
    index: usize,
    next: u64,
}

/// Creates a ring of `capacity` slots (rounded up to a power of two) with
/// `readers` readers.
pub fn ring<T: Clone>(capacity: usize, readers: usize) -> (RingWriter<T>, Vec<RingReader<T>>) {
    let capacity = capacity.max(2).next_power_of_two();
    let shared = Arc::new(Shared {
        slots: (0..capacity).map(|_| Slot::new()).collect(),
        mask: capacity as u64 - 1,
        head: CachePadded::new(AtomicU64::new(0)),
        cursors: (0..readers)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    });
    let readers = (0..readers)
        .map(|index| RingReader {
            shared: shared.clone(),
            index,
            next: 0,
        })
        .collect();
    (
        RingWriter {
            shared,
            head: 0,
            min_cursor: 0,
        },
        readers,
    )
}

impl<T: Clone> RingWriter<T> {
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    /// Items pushed but not yet read by the slowest attached reader.
    pub fn occupancy(&mut self) -> usize {
        self.refresh_min_cursor();
        (self.head - self.min_cursor.min(self.head)) as usize
    }

    /// Free slots, as far as the writer can tell right now.
    pub fn free(&mut self) -> usize {
        self.capacity() - self.occupancy()
    }

    fn refresh_min_cursor(&mut self) {
        let mut min = self.head;
        for c in self.shared.cursors.iter() {
            // Acquire pairs with the reader's Release store (I2).
            let v = c.load(Ordering::Acquire);
            if v != DETACHED && v < min {
                min = v;
            }
        }
        // Cursors only move forward, so the bound never goes back.
        debug_assert!(min >= self.min_cursor, "reader cursors are monotonic");
        self.min_cursor = min;
    }

    /// Publishes `value` to every reader, or returns it if the slowest reader
    /// is a whole ring behind.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        self.stage(value)?;
        self.publish();
        Ok(())
    }

    /// Writes `value` into the next slot without showing it to readers yet
    /// (or returns it if the slowest reader is a whole ring behind);
    /// [`RingWriter::publish`] shows every staged item at once. Ingest stages
    /// a publisher frame's ticks and publishes them together, so a reader
    /// never takes half a frame in one batch and the rest in the next (one
    /// more flush, one more write per client, for nothing).
    pub fn stage(&mut self, value: T) -> Result<(), T> {
        let cap = self.shared.slots.len() as u64;
        if self.head - self.min_cursor >= cap {
            self.refresh_min_cursor();
            if self.head - self.min_cursor >= cap {
                return Err(value);
            }
        }
        debug_assert!(
            self.head - self.min_cursor < cap,
            "the slot's previous occupant has been read by every reader (I2)"
        );
        let slot = &self.shared.slots[(self.head & self.shared.mask) as usize];
        // SAFETY: every attached reader's cursor is > head - cap (checked just
        // above against an Acquire load), so none reads this slot (I2); we are
        // the only writer (I3).
        unsafe { slot.store(value) };
        self.head += 1;
        Ok(())
    }

    /// Shows readers every item staged so far.
    pub fn publish(&mut self) {
        // Release publishes the slots' contents to readers (I1): every slot
        // below `head` was written before this store.
        self.shared.head.store(self.head, Ordering::Release);
    }
}

impl<T: Clone> RingReader<T> {
    /// Clones up to `max` published items into `out` and returns how many.
    pub fn read_batch(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        // Acquire pairs with the writer's Release store of head (I1).
        let head = self.shared.head.load(Ordering::Acquire);
        debug_assert!(self.next <= head, "a reader never passes the writer (I1)");
        let end = head.min(self.next.saturating_add(max as u64));
        let n = (end - self.next) as usize;
        for pos in self.next..end {
            let slot = &self.shared.slots[(pos & self.shared.mask) as usize];
            // SAFETY: pos < head, so the slot is published (I1); our cursor is
            // still <= pos, so the writer will not replace it (I2).
            out.push(unsafe { slot.load() });
        }
        if n > 0 {
            self.next = end;
            // Release: our clones are done before the writer may reuse the slots (I2).
            self.shared.cursors[self.index].store(end, Ordering::Release);
        }
        n
    }
}

impl<T: Clone> RingReader<T> {
    /// [`RingReader::read_batch`], stopping before the first item `keep`
    /// refuses: that item and those after it stay unread.
    pub fn read_batch_while(
        &mut self,
        out: &mut Vec<T>,
        max: usize,
        keep: impl Fn(&T) -> bool,
    ) -> usize {
        // Acquire pairs with the writer's Release store of head (I1).
        let head = self.shared.head.load(Ordering::Acquire);
        let end = head.min(self.next.saturating_add(max as u64));
        let mut pos = self.next;
        while pos < end {
            let slot = &self.shared.slots[(pos & self.shared.mask) as usize];
            // SAFETY: pos < head, so the slot is published (I1); our cursor is
            // still <= pos, so the writer will not replace it (I2).
            let item = unsafe { slot.load() };
            if !keep(&item) {
                break;
            }
            out.push(item);
            pos += 1;
        }
        let n = (pos - self.next) as usize;
        if n > 0 {
            self.next = pos;
            // Release: our clones are done before the writer may reuse the slots (I2).
            self.shared.cursors[self.index].store(pos, Ordering::Release);
        }
        n
    }
}

impl<T> Drop for RingReader<T> {
    fn drop(&mut self) {
        self.shared.cursors[self.index].store(DETACHED, Ordering::Release);
    }
}

#[cfg(all(test, not(tickwire_loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_reader_sees_every_item_in_order() {
        let (mut w, mut readers) = ring::<u64>(8, 3);
        let mut seen = vec![Vec::new(); 3];
        let mut next = 0u64;
        while next < 1000 {
            while w.push(next).is_ok() {
                next += 1;
            }
            for (r, out) in readers.iter_mut().zip(seen.iter_mut()) {
                r.read_batch(out, 3);
            }
        }
        for (r, out) in readers.iter_mut().zip(seen.iter_mut()) {
            while r.read_batch(out, usize::MAX) > 0 {}
            assert_eq!(*out, (0..next).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_bounded_read_leaves_the_refused_items_for_later() {
        let (mut w, mut readers) = ring::<u64>(8, 1);
        for i in 0..6 {
            assert!(w.push(i).is_ok());
        }
        let mut out = Vec::new();
        assert_eq!(readers[0].read_batch_while(&mut out, 10, |&v| v < 3), 3);
        assert_eq!(readers[0].read_batch_while(&mut out, 10, |&v| v < 3), 0);
        assert_eq!(readers[0].read_batch(&mut out, 10), 3);
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn full_ring_refuses_and_returns_the_item() {
        let (mut w, mut readers) = ring::<u32>(4, 2);
        for i in 0..4 {
            assert!(w.push(i).is_ok());
        }
        assert_eq!(w.push(9), Err(9));
        let mut out = Vec::new();
        readers[0].read_batch(&mut out, 4);
        // Reader 1 has not read: still full.
        assert_eq!(w.push(9), Err(9));
        readers[1].read_batch(&mut out, 1);
        assert_eq!(w.push(9), Ok(()));
        assert_eq!(w.occupancy(), 4);
    }

    #[test]
    fn staged_items_are_seen_only_once_published_and_all_together() {
        let (mut w, mut readers) = ring::<u32>(4, 1);
        let mut out = Vec::new();
        w.stage(1).unwrap();
        w.stage(2).unwrap();
        assert_eq!(readers[0].read_batch(&mut out, 10), 0);
        // Staged items hold their slots: the ring counts them as occupied.
        assert_eq!(w.occupancy(), 2);
        w.stage(3).unwrap();
        w.stage(4).unwrap();
        assert_eq!(w.stage(5), Err(5));
        w.publish();
        assert_eq!(readers[0].read_batch(&mut out, 10), 4);
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn a_dropped_reader_does_not_hold_the_writer_back() {
        let (mut w, mut readers) = ring::<u32>(2, 2);
        drop(readers.pop());
        let mut out = Vec::new();
        for i in 0..10 {
            assert!(w.push(i).is_ok());
            readers[0].read_batch(&mut out, 1);
        }
        assert_eq!(out, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn items_are_dropped_when_overwritten_or_with_the_ring() {
        let item = std::sync::Arc::new(());
        let (mut w, mut readers) = ring::<std::sync::Arc<()>>(2, 1);
        let mut out = Vec::new();
        for _ in 0..5 {
            w.push(item.clone()).unwrap();
            readers[0].read_batch(&mut out, 1);
            out.clear();
        }
        // Two slots still hold a clone each.
        assert_eq!(std::sync::Arc::strong_count(&item), 3);
        drop(w);
        drop(readers);
        assert_eq!(std::sync::Arc::strong_count(&item), 1);
    }

    #[test]
    fn threads_exchange_items_without_loss() {
        let (mut w, readers) = ring::<u64>(64, 2);
        const N: u64 = 200_000;
        let handles: Vec<_> = readers
            .into_iter()
            .map(|mut r| {
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut expect = 0u64;
                    while expect < N {
                        out.clear();
                        r.read_batch(&mut out, 16);
                        for v in &out {
                            assert_eq!(*v, expect);
                            expect += 1;
                        }
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let mut i = 0;
        while i < N {
            match w.push(i) {
                Ok(()) => i += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}

/// Model-checked with loom: `RUSTFLAGS="--cfg tickwire_loom" cargo test --release --lib ring::loom_tests`.
#[cfg(all(test, tickwire_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Three items through two slots (so slot 0 is reused while readers
    /// may still be on it) with two readers. Loom checks every interleaving
    /// up to the preemption bound: a data race on a slot, or a reader
    /// seeing a wrong or torn item, fails the model.
    #[test]
    fn writer_and_two_readers_never_race_on_a_slot() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let (mut w, readers) = ring::<Arc<u32>>(2, 2);
            let handles: Vec<_> = readers
                .into_iter()
                .map(|mut r| {
                    thread::spawn(move || {
                        let mut out = Vec::new();
                        for _ in 0..3 {
                            r.read_batch(&mut out, 2);
                            if out.len() == 3 {
                                break;
                            }
                            thread::yield_now();
                        }
                        for (i, v) in out.iter().enumerate() {
                            assert_eq!(**v, i as u32);
                        }
                    })
                })
                .collect();
            let mut i = 0;
            for _ in 0..4 {
                if i == 3 {
                    break;
                }
                if w.push(Arc::new(i)).is_ok() {
                    i += 1;
                } else {
                    thread::yield_now();
                }
            }
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
