//! Restoring ingest's state from a journal (`serve --journal`) before any
//! tick is sequenced: each journaled tick sets its key's `seq` and last
//! value, goes back into the history, and moves the next offset past it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Ingest, IngestError, RingItem};

use crate::model::epoch::Epoch;
use crate::model::tick::{Channel, Event, KeyId, NewTick, Tick};
use crate::wire::book::BookFrames;
use crate::wire::encode::EncodedTick;

/// Where the journal placed one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its global ingest offset.
    pub offset: u64,
    /// Its key's `seq`.
    pub seq: u64,
    /// Its receive stamp, ns.
    pub rx: u64,
}

impl Ingest {
    /// Restores one journaled tick (offsets in increasing order, contiguous
    /// from the first restored). A book record is applied to its key's
    /// book; it goes into the history without frames (a book key always
    /// restarts from its snapshot). Returns the book's refusal, if any.
    pub fn restore(&self, t: &NewTick, at: Placed, epoch: Epoch) -> Result<(), IngestError> {
        let (id, sym) = self.symbols.intern(&t.sym)?;
        let channel = if t.book.is_some() {
            Channel::Book
        } else {
            t.event.channel()
        };
        let key = KeyId::new(id, channel);
        let mut seq = self.sequencer.lock();
        self.epoch.store(epoch.0, Ordering::Relaxed);
        if seq.next_offset <= 1 || seq.next_offset <= at.offset {
            seq.next_offset = at.offset + 1;
        }
        if t.book.is_none() {
            seq.restore_bars(id, &sym, t.ts, &t.event, &self.default_clock);
        }
        let ks = seq.key(key);
        if ks.seq == 0 {
            self.symbols.mark_seen(id);
        }
        ks.seq = at.seq;
        let tick = Tick {
            key,
            sym: sym.clone(),
            seq: at.seq,
            ts: t.ts,
            rx: at.rx,
            event: t.event.clone(),
        };
        let item: RingItem = match &t.book {
            Some(change) => {
                let max_levels = self.max_book_levels.load(Ordering::Relaxed);
                let state = ks.book.get_or_insert_with(Default::default);
                if let Err(e) = state.apply(&sym, t.ts, change, max_levels) {
                    tracing::warn!(sym = %sym, seq = at.seq, error = %e, "journal: book record refused on restore");
                }
                state.class_seq = [at.seq; 3];
                state.offset = at.offset;
                let tick = Tick {
                    event: Event::Book(state.book.top()),
                    ..tick
                };
                Arc::new(EncodedTick::with_book(
                    tick,
                    at.offset,
                    epoch,
                    BookFrames::new([None, None, None]),
                ))
            }
            None => {
                let item = Arc::new(EncodedTick::at(tick, at.offset, epoch));
                ks.last = Some(item.clone());
                item
            }
        };
        self.history.append(&item);
        Ok(())
    }

    /// Lets the fan-out deliver only ticks at or below the offset the
    /// journal has written (the `delivery_gate` field of [`Ingest`]).
    pub fn gate_delivery(&self, watermark: Arc<std::sync::atomic::AtomicU64>) {
        let _ = self.delivery_gate.set(watermark);
    }

    /// Wakes every ring reader: the journal calls it after it advanced the
    /// watermark, so gated workers read what it released.
    pub fn wake_readers(&self) {
        for w in &self.reader_wakers {
            w.notify_one();
        }
    }
}
