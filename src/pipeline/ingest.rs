//! Ingest: every tick, whatever its source, enters the server here.
//!
//! The [`Ingest`] stage is the ring's single writer. Under one short lock it
//! gives each tick its per-key `seq` and its `rx` stamp, encodes its frame
//! once, stores it as the key's last value and pushes it into the broadcast
//! ring that the fan-out workers read. Readers never take that lock.
//!
//! **When the ring is full** (the slowest worker is a whole ring behind),
//! publishing waits: the publisher's task stops, so a WebSocket publisher
//! stops being read and TCP pushes back on it, and a recorded source pauses.
//! Nothing is dropped at ingest and subscribers are never blocked; each
//! occurrence is counted in [`Stats::ring_full`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::model::epoch::Epoch;
use crate::model::symbols::{SymbolTable, TableFull};
use crate::model::tick::{ChannelSet, Event, KeyId, NewTick, Tick, wall_clock_ns};
use crate::pipeline::history::{History, HistoryLimits};
use crate::pipeline::ring::{RingReader, RingWriter, ring};
use crate::pipeline::stats::{Origin, Stats};
use crate::shutdown::Shutdown;
use crate::wire::encode::EncodedTick;

mod bars;
mod book;
mod clock;
mod restore;
mod sequenced;
pub use bars::{BAR_CLOCK_EVERY, MOST_SLOTS_PER_TRADE};
pub use book::DEFAULT_MAX_BOOK_LEVELS;
pub use clock::FeedClock;
pub use restore::Placed;

/// What the ring carries: a sequenced, encoded tick, shared.
pub type RingItem = Arc<EncodedTick>;

/// Errors a source can hit; each names what went wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    SymbolTableFull(#[from] TableFull),
    #[error("{source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
}

/// A tick admitted to ingest: its symbol interned, ready to sequence.
#[derive(Clone, Debug)]
pub struct Admitted {
    key: KeyId,
    sym: Arc<str>,
    ts: u64,
    event: Event,
}

struct KeyState {
    seq: u64,
    last: Option<RingItem>,
    /// A book key's book (`None` for tick keys).
    book: Option<Box<book::BookState>>,
}

struct Sequencer {
    writer: RingWriter<RingItem>,
    /// The global ingest offset the next tick gets (the first is 1): a
    /// connection-wide position clients resume from.
    next_offset: u64,
    /// Indexed by `KeyId`.
    keys: Vec<KeyState>,
    /// Every symbol's bars and the feed's clock they close by.
    bars: bars::BarState,
}

impl Sequencer {
    /// A key's state, created on first use.
    fn key(&mut self, key: KeyId) -> &mut KeyState {
        let idx = key.0 as usize;
        if self.keys.len() <= idx {
            self.keys.resize_with(idx + 1, || KeyState {
                seq: 0,
                last: None,
                book: None,
            });
        }
        &mut self.keys[idx]
    }

    /// Wraps a sequenced tick at the next offset, in `epoch`.
    fn place(&mut self, tick: Tick, epoch: Epoch) -> RingItem {
        let offset = self.next_offset;
        self.next_offset += 1;
        Arc::new(EncodedTick::at(tick, offset, epoch))
    }

    /// [`Sequencer::place`] for the quote a book update produced.
    fn place_derived(&mut self, tick: Tick, epoch: Epoch) -> RingItem {
        let offset = self.next_offset;
        self.next_offset += 1;
        let mut item = EncodedTick::at(tick, offset, epoch);
        item.derived = true;
        Arc::new(item)
    }
}

/// The ingest stage shared by all sources and workers.
pub struct Ingest {
    sequencer: Mutex<Sequencer>,
    /// One per ring reader: woken after each publish.
    reader_wakers: Vec<Arc<Notify>>,
    /// Set by a publisher waiting for ring space; cleared by the reader that
    /// frees some and wakes it.
    writer_waiting: AtomicBool,
    space: Notify,
    symbols: Arc<SymbolTable>,
    stats: Arc<Stats>,
    /// `--max-book-levels`: levels per side one book may hold.
    max_book_levels: AtomicUsize,
    /// The feed epoch every tick is sequenced in (a gateway takes its
    /// ingest node's from the bus, hence atomic).
    epoch: AtomicU64,
    /// The recent ticks, appended under the sequencer lock.
    history: Arc<History>,
    /// With `--journal`: the offset up to which the journal has written
    /// (to the OS, so a kill -9 keeps it). Workers deliver no tick beyond
    /// it, so no client ever holds a tick a restart would not restore.
    delivery_gate: std::sync::OnceLock<Arc<AtomicU64>>,
    /// With `--journal`: the files, read on demand for a position older
    /// than the history.
    archive: std::sync::OnceLock<Arc<crate::recordings::journal::Archive>>,
    /// The clock of ticks published without a source of their own (a
    /// journal being restored, tests): bars close by a source's time.
    default_clock: FeedClock,
}

/// A worker's end of the ring, with the waker ingest uses to signal it.
pub struct IngestReader {
    pub ring: RingReader<RingItem>,
    pub waker: Arc<Notify>,
    ingest: Arc<Ingest>,
    /// Whether [`Ingest::gate_delivery`]'s watermark bounds this reader
    /// (every fan-out worker's; not the journal's own).
    gated: bool,
}

impl Ingest {
    /// Creates the ingest stage with a ring of `capacity` ticks read by
    /// `readers` fan-out workers.
    pub fn new(
        capacity: usize,
        readers: usize,
        symbols: Arc<SymbolTable>,
        stats: Arc<Stats>,
    ) -> (Arc<Ingest>, Vec<IngestReader>) {
        Ingest::with_history(
            capacity,
            readers,
            symbols,
            stats,
            HistoryLimits::default(),
            Epoch::generate(),
        )
    }

    /// [`Ingest::new`] with the history's bounds and the feed epoch given.
    pub fn with_history(
        capacity: usize,
        readers: usize,
        symbols: Arc<SymbolTable>,
        stats: Arc<Stats>,
        history: HistoryLimits,
        epoch: Epoch,
    ) -> (Arc<Ingest>, Vec<IngestReader>) {
        let (writer, ring_readers) = ring(capacity, readers);
        let wakers: Vec<_> = (0..readers).map(|_| Arc::new(Notify::new())).collect();
        let ingest = Arc::new(Ingest {
            sequencer: Mutex::new(Sequencer {
                writer,
                next_offset: 1,
                keys: Vec::new(),
                bars: bars::BarState::default(),
            }),
            reader_wakers: wakers.clone(),
            writer_waiting: AtomicBool::new(false),
            space: Notify::new(),
            symbols,
            stats,
            max_book_levels: AtomicUsize::new(DEFAULT_MAX_BOOK_LEVELS),
            epoch: AtomicU64::new(epoch.0),
            history: Arc::new(History::new(history)),
            delivery_gate: std::sync::OnceLock::new(),
            archive: std::sync::OnceLock::new(),
            default_clock: FeedClock::new(),
        });
        let readers = ring_readers
            .into_iter()
            .zip(wakers)
            .map(|(ring, waker)| IngestReader {
                ring,
                waker,
                ingest: ingest.clone(),
                gated: true,
            })
            .collect();
        (ingest, readers)
    }

    pub fn symbols(&self) -> &Arc<SymbolTable> {
        &self.symbols
    }

    /// The feed epoch ticks are sequenced in now.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Relaxed))
    }

    /// Adopts another node's epoch (a gateway learning its ingest node's).
    /// Taken under the sequencer lock so no tick straddles the change.
    pub fn set_epoch(&self, epoch: Epoch) {
        let _seq = self.sequencer.lock();
        self.epoch.store(epoch.0, Ordering::Relaxed);
    }

    /// Adopts the ingest node's epoch on a gateway. A different one means
    /// the ingest node restarted its `seq` numbering: every key's `seq`,
    /// last value and held history belong to the old numbering and are
    /// dropped, so the new numbering's ticks (from `seq` 1) are taken, not
    /// discarded as duplicates. Returns whether the epoch changed.
    pub fn adopt_epoch(&self, epoch: Epoch) -> bool {
        let mut seq = self.sequencer.lock();
        if self.epoch() == epoch {
            return false;
        }
        self.epoch.store(epoch.0, Ordering::Relaxed);
        for ks in &mut seq.keys {
            ks.seq = 0;
            ks.last = None;
        }
        self.history.clear();
        true
    }

    /// Numbers this process's ticks from `first` instead of 1, before any
    /// tick is sequenced. Scale-out nodes share an epoch but each numbers
    /// offsets itself, and a node restarted in the same epoch numbers them
    /// again: starting each process at its start time in microseconds
    /// keeps one node's offsets out of another's range, so a position from
    /// elsewhere is refused (`future_offset`, or history too short) instead
    /// of read as a different tick.
    pub fn start_offsets_at(&self, first: u64) {
        let mut seq = self.sequencer.lock();
        if seq.next_offset == 1 {
            seq.next_offset = first.max(1);
            self.history.start_at(seq.next_offset);
        }
    }

    /// The shared history of recent ticks.
    /// The journal's files as a source of ticks older than the history.
    pub fn archive(&self) -> Option<&Arc<crate::recordings::journal::Archive>> {
        self.archive.get()
    }

    /// Lets resumes older than the history be served from the journal.
    pub fn set_archive(&self, archive: Arc<crate::recordings::journal::Archive>) {
        let _ = self.archive.set(archive);
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The offset of the newest tick sequenced (0 before the first).
    pub fn newest_offset(&self) -> u64 {
        self.sequencer.lock().next_offset - 1
    }

    /// Interns the tick's symbol. Symbols must already be valid.
    pub fn admit(&self, t: NewTick) -> Result<Admitted, IngestError> {
        let (id, sym) = self.symbols.intern(&t.sym)?;
        Ok(Admitted {
            key: KeyId::new(id, t.event.channel()),
            sym,
            ts: t.ts,
            event: t.event,
        })
    }

    /// Sequences and publishes as many of `batch` as the ring has room for;
    /// returns how many.
    pub fn try_publish(&self, batch: &[Admitted]) -> usize {
        self.try_publish_from(batch, Origin::Publisher)
    }

    /// [`Ingest::try_publish`], counting the ticks under `origin`.
    pub fn try_publish_from(&self, batch: &[Admitted], origin: Origin) -> usize {
        self.try_publish_from_source(batch, origin, &self.default_clock)
    }

    /// [`Ingest::try_publish_from`] for a source with its own clock (the
    /// time its symbols' bars close by).
    pub fn try_publish_from_source(
        &self,
        batch: &[Admitted],
        origin: Origin,
        clock: &FeedClock,
    ) -> usize {
        let mut done = 0;
        let mut last_rx = 0;
        {
            let mut seq = self.sequencer.lock();
            let epoch = self.epoch();
            for a in batch {
                // One clock read per tick: bars are throttled by it.
                let rx = wall_clock_ns();
                let free = seq.writer.free();
                if seq.slots_for(a.key, a.ts, &a.event, rx) > free {
                    break;
                }
                let ks = seq.key(a.key);
                if ks.seq == 0 {
                    self.symbols.mark_seen(a.key.symbol());
                }
                ks.seq += 1;
                let tick = Tick {
                    key: a.key,
                    sym: a.sym.clone(),
                    seq: ks.seq,
                    ts: a.ts,
                    rx,
                    event: a.event.clone(),
                };
                let item = seq.place(tick, epoch);
                last_rx = item.tick.rx;
                seq.key(a.key).last = Some(item.clone());
                self.history.append(&item);
                if seq.writer.stage(item).is_err() {
                    // Cannot happen: `free` slots were counted under the lock.
                    unreachable!("ring had {free} free slots under the sequencer lock");
                }
                seq.on_ingested(self, a, epoch, rx, clock);
                done += 1;
            }
            // The whole batch (a publisher frame) becomes visible at once.
            seq.writer.publish();
            if done > 0 {
                // One clock read per batch, not per tick.
                let encoded = wall_clock_ns();
                self.stats
                    .ingest_to_encode
                    .observe_ns(encoded.saturating_sub(last_rx));
            }
        }
        if done > 0 {
            Stats::add(&self.stats.ticks_in, done as u64);
            Stats::add(&self.stats.ticks_in_by_origin[origin as usize], done as u64);
            for w in &self.reader_wakers {
                w.notify_one();
            }
        }
        done
    }

    /// Publishes the whole batch, waiting for ring space when it is full.
    pub async fn publish(&self, batch: &[Admitted]) {
        self.publish_from(batch, Origin::Publisher).await
    }

    /// [`Ingest::publish`], counting the ticks under `origin`.
    pub async fn publish_from(&self, batch: &[Admitted], origin: Origin) {
        self.publish_from_source(batch, origin, &self.default_clock)
            .await
    }

    /// [`Ingest::publish_from`] for a source with its own clock.
    pub async fn publish_from_source(&self, batch: &[Admitted], origin: Origin, clock: &FeedClock) {
        self.publish_waiting(batch, |b| self.try_publish_from_source(b, origin, clock))
            .await
    }

    /// Runs `try_publish` (which takes what fits and says how much) until
    /// the whole batch is in, waiting for ring space between attempts.
    async fn publish_waiting<T>(&self, batch: &[T], try_publish: impl Fn(&[T]) -> usize) {
        let mut done = try_publish(batch);
        while done < batch.len() {
            Stats::add(&self.stats.ring_full, 1);
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.writer_waiting.store(true, Ordering::SeqCst);
            // Pairs with the fence in `reader_progress`: either the reader
            // sees `writer_waiting` and wakes us, or we see its progress here.
            fence(Ordering::SeqCst);
            let n = try_publish(&batch[done..]);
            if n > 0 {
                done += n;
                continue;
            }
            // The timeout is a backstop only; wakeups come from readers.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            done += try_publish(&batch[done..]);
        }
    }

    fn reader_progress(&self) {
        fence(Ordering::SeqCst);
        if self.writer_waiting.load(Ordering::Relaxed)
            && self.writer_waiting.swap(false, Ordering::AcqRel)
        {
            self.space.notify_waiters();
        }
    }

    /// The newest offset a client may be given: the journal's watermark
    /// with `--journal` (a last value the journal has not written yet is
    /// not a snapshot: the subscriber gets it live once it is written, so
    /// a kill -9 never leaves a client holding a tick a restart would not
    /// know); everything without.
    fn deliverable(&self) -> u64 {
        self.delivery_gate
            .get()
            .map_or(u64::MAX, |g| g.load(Ordering::Acquire))
    }

    /// Appends the last value of each of `keys` that has one (for a book
    /// key: its snapshot). Only what the journal has written (`--journal`)
    /// is given: a book snapshot holding updates beyond it goes to `held`
    /// with the offset of its last update, to be sent once delivery has
    /// passed that offset (a client must never hold a book state a restart
    /// would not restore).
    pub fn last_values_held(
        &self,
        keys: impl IntoIterator<Item = KeyId>,
        out: &mut Vec<RingItem>,
        held: &mut Vec<(u64, RingItem)>,
    ) {
        let upto = self.deliverable();
        let mut seq = self.sequencer.lock();
        for k in keys {
            if k.channel() == crate::model::tick::Channel::Book {
                if let Some(ks) = seq.keys.get_mut(k.0 as usize)
                    && let Some(item) = book::snapshot_item(k, ks)
                {
                    let offset = ks.book.as_ref().map_or(0, |b| b.offset);
                    if offset <= upto {
                        out.push(item);
                    } else {
                        held.push((offset, item));
                    }
                }
                continue;
            }
            if let Some(Some(last)) = seq.keys.get(k.0 as usize).map(|s| s.last.as_ref())
                && last.offset <= upto
            {
                out.push(last.clone());
            }
        }
    }

    /// [`Ingest::last_values_held`] without the held book snapshots: for
    /// callers that resend last values after a gap (a book key there waits
    /// for its next snapshot-carrying resubscribe).
    pub fn last_values(&self, keys: impl IntoIterator<Item = KeyId>, out: &mut Vec<RingItem>) {
        self.last_values_held(keys, out, &mut Vec::new());
    }

    /// Appends the last value of every key on `channels`.
    pub fn all_last_values(&self, channels: ChannelSet, out: &mut Vec<RingItem>) {
        let upto = self.deliverable();
        let seq = self.sequencer.lock();
        for (i, ks) in seq.keys.iter().enumerate() {
            if let Some(last) = &ks.last
                && channels.contains(KeyId(i as u32).channel())
                && last.offset <= upto
            {
                out.push(last.clone());
            }
        }
    }

    /// The last `seq` published for `key` (0 if none).
    pub fn published_seq(&self, key: KeyId) -> u64 {
        self.sequencer
            .lock()
            .keys
            .get(key.0 as usize)
            .map_or(0, |k| k.seq)
    }

    /// Ticks waiting in the ring for the slowest worker.
    pub fn ring_occupancy(&self) -> usize {
        self.sequencer.lock().writer.occupancy()
    }
}

impl IngestReader {
    /// Reads past the delivery gate: the journal's own reader, which is
    /// what moves the gate.
    pub fn ungated(mut self) -> IngestReader {
        self.gated = false;
        self
    }

    /// Reads up to `max` ticks, and lets a waiting publisher know there is room.
    pub fn read_batch(&mut self, out: &mut Vec<RingItem>, max: usize) -> usize {
        let n = match self.ingest.delivery_gate.get().filter(|_| self.gated) {
            Some(gate) => {
                let upto = gate.load(Ordering::Acquire);
                self.ring.read_batch_while(out, max, |t| t.offset <= upto)
            }
            None => self.ring.read_batch(out, max),
        };
        if n > 0 {
            self.ingest.reader_progress();
        }
        n
    }
}

/// A source of ticks: a recorded feed, a message bus, a test generator.
///
/// `next_batch` waits until the next ticks are due, appends them to `out` and
/// returns `Ok(true)`, or `Ok(false)` once the source is exhausted. Pacing is
/// the source's business; sequencing and everything after is ingest's.
pub trait TickSource: Send {
    fn name(&self) -> &str;
    /// How fast the source's `ts` moves against the wall clock (a
    /// recording's replay speed; 1 for a live one): the pace its
    /// [`FeedClock`] extrapolates a silence at.
    fn pace(&self) -> f64 {
        1.0
    }
    fn next_batch<'a>(
        &'a mut self,
        out: &'a mut Vec<NewTick>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, IngestError>> + Send + 'a>>;
}

/// Drives a source into ingest until it ends or the server shuts down.
pub async fn run_source(
    mut source: Box<dyn TickSource>,
    ingest: Arc<Ingest>,
    mut shutdown: Shutdown,
) -> Result<(), IngestError> {
    let mut batch = Vec::new();
    let mut admitted = Vec::new();
    // The source's own time, which its symbols' bars close by.
    let clock = FeedClock::with_pace(source.pace());
    loop {
        batch.clear();
        let more = tokio::select! {
            r = source.next_batch(&mut batch) => r?,
            _ = shutdown.triggered() => return Ok(()),
        };
        admitted.clear();
        for t in batch.drain(..) {
            if let Some(change) = &t.book {
                // In order with the ticks before it.
                ingest
                    .publish_from_source(&admitted, Origin::Recorded, &clock)
                    .await;
                admitted.clear();
                let b = ingest.admit_book(&t.sym, t.ts, (**change).clone())?;
                if let Err(e) = ingest
                    .publish_book_from_source(&b, Origin::Recorded, &clock)
                    .await
                {
                    tracing::warn!(source = source.name(), sym = %t.sym, error = %e, "book update refused");
                }
                continue;
            }
            admitted.push(ingest.admit(t)?);
        }
        ingest
            .publish_from_source(&admitted, Origin::Recorded, &clock)
            .await;
        if !more {
            tracing::info!(source = source.name(), "source finished");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
