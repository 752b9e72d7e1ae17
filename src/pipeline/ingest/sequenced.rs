//! Ticks sequenced elsewhere: a scale-out gateway publishes the ticks the
//! bus brings, each keeping the `seq` and `rx` its ingest node gave it, and
//! takes last values and sequences back from the bus's last-value store.

use std::sync::Arc;

use super::Ingest;
use crate::model::tick::Tick;
use crate::pipeline::stats::{Origin, Stats};
use crate::wire::encode::EncodedTick;

impl Ingest {
    /// Publishes ticks already sequenced elsewhere (a gateway's feed from
    /// the bus): each keeps its `seq` and `rx`. A tick at or below the
    /// key's last published `seq` is a duplicate or arrived out of order
    /// (two overlapping bus subscriptions, a redelivery after a reconnect)
    /// and is dropped, so readers never see a key's `seq` go backwards.
    /// Returns how many of `batch` were consumed (published or dropped);
    /// fewer than `batch.len()` only when the ring is full.
    pub fn try_publish_sequenced(&self, batch: &[Tick]) -> usize {
        let mut consumed = 0;
        let mut published = 0u64;
        let mut dropped = 0u64;
        let mut gaps = 0u64;
        {
            let mut seq = self.sequencer.lock();
            let epoch = self.epoch();
            for t in batch {
                let have = seq.key(t.key).seq;
                if t.seq <= have {
                    dropped += 1;
                    consumed += 1;
                    continue;
                }
                if seq.writer.free() == 0 {
                    break;
                }
                if have == 0 {
                    self.symbols.mark_seen(t.key.symbol());
                } else if t.seq > have + 1 {
                    gaps += 1;
                }
                let item = seq.place(t.clone(), epoch);
                self.history.append(&item);
                let ks = seq.key(t.key);
                ks.seq = t.seq;
                if ks.last.as_ref().is_none_or(|l| l.tick.seq < t.seq) {
                    ks.last = Some(item.clone());
                }
                if seq.writer.stage(item).is_err() {
                    unreachable!("the ring had a free slot under the sequencer lock");
                }
                consumed += 1;
                published += 1;
            }
            seq.writer.publish();
        }
        Stats::add(&self.stats.bus_duplicates, dropped);
        Stats::add(&self.stats.bus_seq_gaps, gaps);
        if published > 0 {
            Stats::add(&self.stats.ticks_in, published);
            Stats::add(
                &self.stats.ticks_in_by_origin[Origin::Bus as usize],
                published,
            );
            for w in &self.reader_wakers {
                w.notify_one();
            }
        }
        consumed
    }

    /// [`Ingest::try_publish_sequenced`] for the whole batch, waiting for
    /// ring space when it is full.
    pub async fn publish_sequenced(&self, batch: &[Tick]) {
        self.publish_waiting(batch, |b| self.try_publish_sequenced(b))
            .await
    }

    /// A key's last value as read from elsewhere (the bus's last-value
    /// store): kept for snapshots if newer than the one held, but not
    /// published, and the key's live `seq` is left alone so the live tick
    /// itself still reaches the subscribers that are waiting for it.
    pub fn offer_last_value(&self, tick: Tick) {
        let mut seq = self.sequencer.lock();
        let ks = seq.key(tick.key);
        if ks.last.as_ref().is_none_or(|l| l.tick.seq < tick.seq) {
            self.symbols.mark_seen(tick.key.symbol());
            ks.last = Some(Arc::new(EncodedTick::new(tick)));
        }
    }

    /// Continues a key's sequence from `tick` (its last value from a
    /// previous run, read back from the bus): the next tick of the key gets
    /// `tick.seq + 1`. Only raises a key's `seq`, never lowers it.
    pub fn resume_sequence(&self, tick: Tick) {
        let mut seq = self.sequencer.lock();
        let ks = seq.key(tick.key);
        if tick.seq > ks.seq {
            self.symbols.mark_seen(tick.key.symbol());
            ks.seq = tick.seq;
            ks.last = Some(Arc::new(EncodedTick::new(tick)));
        }
    }
}
