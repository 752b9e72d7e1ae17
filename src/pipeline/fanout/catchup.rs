//! Catch-up: a client reads forward through the shared history from its own
//! position instead of holding a private queue.
//!
//! A client is *catching up* while it has a [`Cursor`]: the next ingest
//! offset it has not been given. Live ticks on the cursor's channels skip
//! it (they are in the history, which ingest appends before the ring
//! carries them); whenever its write buffer drains, [`Client::catch_up`]
//! appends the next history ticks of its keys up to the byte cap. The
//! cursor ends when it reaches the offset the worker has delivered: every
//! later tick reaches the client live. The worker's thread runs both the
//! delivery of a ring batch and the cursor, so nothing lands between the
//! two: no gap, no duplicate at the seam (and per-key `seq` filtering,
//! shared with live delivery, drops anything already given).
//!
//! Cursors start in two ways: a subscribe that resumes from a position
//! (`resume`), and a client with the `catchup` slow-consumer policy on a
//! channel whose next tick does not fit under its byte cap. A cursor that
//! falls out of the history (the client stayed behind longer than the
//! window) is a gap: the client gets a `lagging` notice, then either the
//! newest value of each of its keys (its `on_gap` choice `conflate`, the
//! default) or close 4000 (`evict`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Client;
use crate::model::tick::{ChannelSet, KeyId};
use crate::pipeline::ingest::{Ingest, RingItem};
use crate::pipeline::stats::Stats;
use crate::recordings::journal::{Chunk, Gap};
use crate::wire::encode::Encoding;
use crate::wire::frame::close_code;
use crate::wire::json::JsonObject;
use crate::wire::resume::OnGap;
use crate::wire::sse;

/// Most history ticks read under the history's lock at once.
const READ_CHUNK: usize = 256;

/// Most bytes one catch-up refill appends: a slice is read, encoded and
/// written between two turns of the worker's other tasks, so a client
/// replaying seconds of history delays fast clients by one slice at most
/// (a refill up to the 256 KiB byte cap took long enough to show in their
/// p99), and its buffer stays small.
pub(super) const CATCHUP_SLICE: usize = 64 * 1024;

/// Where the history is and how far this worker has delivered: what a
/// cursor needs from its worker.
#[derive(Clone)]
pub(crate) struct HistorySource {
    pub(crate) ingest: Arc<Ingest>,
    /// The offset of the last tick the worker handed to its clients.
    pub(crate) delivered: Rc<Cell<u64>>,
}

/// A client's position in the history while it catches up.
pub(crate) struct Cursor {
    /// The next offset to read.
    next: u64,
    /// The channels read from the history; live ticks on them skip the
    /// client meanwhile.
    channels: ChannelSet,
    /// While the offsets it needs have left the memory history: their read
    /// from the journal (`--journal`).
    disk: Option<DiskStage>,
}

/// A cursor's read of the journal (`recordings::journal::Archive`): a
/// reader thread sends chunks, at most two ahead of what the client took.
struct DiskStage {
    /// Chunks from the reader thread.
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    /// The current chunk's ticks not handed out yet.
    buf: VecDeque<RingItem>,
    /// The offset the read has passed once `buf` is empty.
    buf_next: u64,
    /// Where the read started: one that ends without passing it gave
    /// nothing, and the cursor has fallen out.
    from: u64,
}

/// What a disk stage has for the cursor now.
enum DiskPoll {
    /// The next tick read.
    Tick(RingItem),
    /// A chunk was taken whole: the read has passed this offset.
    Passed(u64),
    /// The reader has not sent the next chunk yet: the client's writer task
    /// is woken when it does.
    Pending,
    /// The read ended: the memory history takes over.
    Done,
    /// The journal cannot give the rest.
    Gap(Gap),
}

impl DiskStage {
    fn poll(&mut self) -> DiskPoll {
        if let Some(item) = self.buf.pop_front() {
            return DiskPoll::Tick(item);
        }
        if self.buf_next != 0 {
            return DiskPoll::Passed(std::mem::take(&mut self.buf_next));
        }
        match self.rx.try_recv() {
            Ok(Ok((ticks, next))) => {
                self.buf = ticks.into();
                self.buf_next = next;
                self.poll()
            }
            Ok(Err(gap)) => DiskPoll::Gap(gap),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => DiskPoll::Pending,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => DiskPoll::Done,
        }
    }
}

/// A client's catch-up state; near-zero memory whatever it is behind by.
#[derive(Default)]
#[repr(C)]
pub(crate) struct Catchup {
    /// Live ticks below this offset are not the client's: it resumed from a
    /// position past them (see `Client::skip_before`). 0: none.
    /// (First, with `cursor`: both are read for every live tick, and
    /// `repr(C)` keeps them next to the client's hot fields.)
    floor: u64,
    /// Set while the client is catching up.
    cursor: Option<Cursor>,
    /// Channels whose slow-consumer policy is `catchup` (the rest conflate).
    pub(crate) policy: ChannelSet,
    /// What to do on falling out of the history.
    pub(crate) on_gap: OnGap,
    /// The worker's history, once the client was registered with one.
    pub(crate) source: Option<HistorySource>,
    /// Times the client fell out of the history.
    pub(crate) gaps: u64,
}

impl Catchup {
    /// Where `floor` and `cursor` sit in the struct (the client's layout
    /// test).
    #[cfg(test)]
    pub(super) fn hot_offsets() -> (usize, usize) {
        (
            std::mem::offset_of!(Catchup, floor),
            std::mem::offset_of!(Catchup, cursor),
        )
    }

    /// Whether a live tick on `key`'s channel is read from the history by
    /// the cursor instead.
    pub(super) fn covers(&self, key: KeyId) -> bool {
        self.cursor
            .as_ref()
            .is_some_and(|c| c.channels.contains(key.channel()))
    }

    pub(crate) fn is_catching_up(&self) -> bool {
        self.cursor.is_some()
    }
}

/// The `lagging` notice of a client that fell out of the history.
fn gap_notice(encoding: Encoding, lost_from: u64, resumed_at: u64, then: OnGap) -> Bytes {
    let mut o = JsonObject::new("lagging");
    o.str("reason", "out_of_history")
        .u64("lost_from_offset", lost_from)
        .u64("history_from_offset", resumed_at)
        .str(
            "then",
            match then {
                OnGap::Conflate => "conflate",
                OnGap::Evict => "evict",
            },
        );
    if encoding == Encoding::Sse {
        sse::event("lagging", &o.into_bytes())
    } else {
        o.into_frame()
    }
}

impl Client {
    /// The client holds every tick below `offset` (a connection-wide resume
    /// position): live ticks below it are dropped, never sent twice.
    pub(crate) fn skip_before(&mut self, offset: u64) {
        self.catchup.floor = self.catchup.floor.max(offset);
    }

    /// Whether a live tick is below the client's resume position.
    pub(super) fn below_floor(&self, item: &RingItem) -> bool {
        item.offset != 0 && item.offset < self.catchup.floor
    }

    /// Starts (or widens) a cursor at `from` on `channels`.
    pub(crate) fn begin_catchup(&mut self, from: u64, channels: ChannelSet) {
        match &mut self.catchup.cursor {
            Some(c) => {
                c.next = c.next.min(from);
                c.channels.0 |= channels.0;
            }
            None => {
                self.catchup.cursor = Some(Cursor {
                    next: from,
                    channels,
                    disk: None,
                })
            }
        }
    }

    /// Called by `offer` for a live tick: `true` when the tick is the
    /// cursor's to deliver, because one is running on its channel or
    /// because the client has the `catchup` policy there and the tick does
    /// not fit now (a cursor starts at it).
    pub(super) fn left_to_cursor(&mut self, item: &RingItem, fits: bool) -> bool {
        let key = item.tick.key;
        if self.catchup.covers(key) {
            return true;
        }
        if fits
            || !self.catchup.policy.contains(key.channel())
            || self.catchup.source.is_none()
            || item.offset == 0
        {
            return false;
        }
        Stats::add(&self.stats.catchup_started, 1);
        // Every `catchup` channel moves to the cursor at once, not only this
        // tick's: a channel left live would overtake the cursor, and the
        // client's stream (SSE ids above all) would step back in offset.
        self.begin_catchup(item.offset, self.catchup.policy);
        true
    }

    /// Whether the cursor should hand `item` to this client: a key it
    /// subscribes, its symbol entitled, newer than what it has.
    fn cursor_wants(&mut self, item: &RingItem, channels: ChannelSet) -> bool {
        let key = item.tick.key;
        if !channels.contains(key.channel()) {
            return false;
        }
        let named = self.keys.get(&key).is_some_and(|s| s.named);
        if !named && !self.star.contains(key.channel()) {
            return false;
        }
        let entitlement = self.entitlement.clone();
        let slot = self.keys.entry(key).or_default();
        if let Some(e) = entitlement
            && !named
            && !*slot
                .entitled
                .get_or_insert_with(|| e.allows(&item.tick.sym))
        {
            return false;
        }
        if item.tick.seq <= slot.last_seq {
            return false;
        }
        slot.last_seq = item.tick.seq;
        true
    }

    /// Once the write buffer has drained: appends the cursor's next ticks
    /// up to the byte cap; ends the cursor where the worker's delivery is.
    pub(super) fn catch_up(&mut self) {
        let Some(mut cur) = self.catchup.cursor.take() else {
            return;
        };
        let Some(src) = self.catchup.source.clone() else {
            return;
        };
        let until = src.delivered.get();
        let history = src.ingest.history().clone();
        let mut chunk: Vec<RingItem> = Vec::with_capacity(READ_CHUNK);
        let mut taken = 0u64;
        let mut reached = false;
        let limit = self.cap.min(CATCHUP_SLICE);
        while self.unsent() < limit {
            if let Some(d) = cur.disk.as_mut() {
                match d.poll() {
                    DiskPoll::Tick(item) => {
                        if item.offset >= cur.next && item.offset <= until {
                            cur.next = item.offset + 1;
                            if self.cursor_wants(&item, cur.channels) {
                                self.announce_symbol(&item.tick);
                                self.append_tick(&item, false);
                                taken += 1;
                            }
                        }
                    }
                    DiskPoll::Passed(next) => cur.next = cur.next.max(next.min(until + 1)),
                    DiskPoll::Pending => break,
                    DiskPoll::Done => {
                        let gave_nothing = cur.next == d.from;
                        cur.disk = None;
                        if gave_nothing {
                            self.frames_sent += taken;
                            self.fell_out(&src, cur, history.first_offset());
                            return;
                        }
                    }
                    DiskPoll::Gap(gap) => {
                        tracing::info!(
                            from = cur.next,
                            first = gap.first,
                            reason = gap.reason,
                            "journal cannot give a catching-up client its ticks"
                        );
                        self.frames_sent += taken;
                        self.fell_out(&src, cur, gap.first);
                        return;
                    }
                }
                continue;
            }
            chunk.clear();
            if let Err(first) = history.read(cur.next, until, READ_CHUNK, &mut chunk) {
                if let Some(archive) = src.ingest.archive() {
                    // Older than memory: read it from the journal.
                    let rx = archive.open(
                        src.ingest.epoch(),
                        cur.next,
                        until,
                        self.writer_wake.clone(),
                    );
                    cur.disk = Some(DiskStage {
                        rx,
                        buf: VecDeque::new(),
                        buf_next: 0,
                        from: cur.next,
                    });
                    continue;
                }
                self.frames_sent += taken;
                self.fell_out(&src, cur, first);
                return;
            }
            if chunk.is_empty() {
                reached = true;
                break;
            }
            for item in &chunk {
                if self.unsent() >= limit {
                    break;
                }
                cur.next = item.offset + 1;
                if self.cursor_wants(item, cur.channels) {
                    self.announce_symbol(&item.tick);
                    self.append_tick(item, false);
                    taken += 1;
                }
            }
        }
        self.frames_sent += taken;
        Stats::add(&self.stats.catchup_ticks, taken);
        // The cursor ends only where the worker's delivery is *and* with
        // room under the cap: ended with a full buffer, the next live tick
        // would have to wait in a pending slot (conflated, out of order).
        // Kept, it reads that tick from the history at the next drain.
        if reached {
            // Caught up: if the socket is full again from here, the
            // slow-consumer clock starts now, not when it first fell behind.
            self.behind_since = None;
        } else {
            self.catchup.cursor = Some(cur);
        }
    }

    /// The cursor fell out of the history: tell the client, then conflate
    /// (newest value of each of its keys on the cursor's channels) or evict.
    fn fell_out(&mut self, src: &HistorySource, cur: Cursor, first: u64) {
        self.catchup.gaps += 1;
        Stats::add(&self.stats.catchup_gaps, 1);
        let then = self.catchup.on_gap;
        self.push_control(gap_notice(self.encoding, cur.next, first, then));
        if then == OnGap::Evict {
            self.end_reason = Some("fell out of the history (4000)");
            self.close(
                close_code::SLOW_CONSUMER,
                "fell out of the history",
                Duration::from_secs(2),
            );
            return;
        }
        let mut last: Vec<RingItem> = Vec::new();
        let named: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|(k, s)| s.named && cur.channels.contains(k.channel()))
            .map(|(k, _)| *k)
            .collect();
        src.ingest.last_values(named, &mut last);
        let star = ChannelSet(self.star.0 & cur.channels.0);
        if !star.is_empty() {
            src.ingest.all_last_values(star, &mut last);
        }
        for item in &last {
            // Only what the worker has delivered: later ticks come live.
            if item.offset <= src.delivered.get() {
                self.offer(item, true);
            }
        }
    }
}
