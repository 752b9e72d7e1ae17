//! A client's outbound side: its write buffer, per-key pending slots and
//! the socket writes that drain them.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::access::auth::Entitlement;
use crate::model::book::DepthClass;
use crate::model::tick::{ChannelSet, KeyId, KeyMap, SymbolId, Tick};
use crate::net::transport::Transport;
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::Stats;
use crate::wire::encode::{Encoding, RECORD_LEN};
use crate::wire::frame::OPCODE_BINARY;
use crate::wire::message::symbol_message;
use crate::wire::ts_format::TsFormat;

use super::catchup::Catchup;

mod book_merge;
mod close;
mod drain;
#[cfg(test)]
mod layout;

/// Most records one binary frame carries (16 KiB of payload): big enough
/// that a backlog costs few frame headers, small enough that a client can
/// start decoding before a whole burst has arrived.
pub(crate) const MAX_RECORDS_PER_FRAME: usize = 256;

#[derive(Default)]
pub(super) struct KeySlot {
    /// Subscribed by name (as opposed to only through `*`).
    pub(super) named: bool,
    /// Highest seq queued for this client; older or equal ticks are skipped,
    /// so a key is never repeated or reordered on one connection.
    pub(super) last_seq: u64,
    pub(super) pending: Option<(RingItem, bool)>,
    /// For a client whose key sees only some symbols: whether this key's
    /// symbol is entitled, decided on its first tick through `*` and kept
    /// (`None` = not decided yet). Named keys were checked at subscribe.
    pub(super) entitled: Option<bool>,
    /// Book keys: the window this client keeps. Inline (one byte in the
    /// slot's padding), not behind a pointer: every book update offered to
    /// the client reads it, and a separate allocation per client and key
    /// was a cache miss per offer.
    book_depth: DepthClass,
    /// Book keys: changes merged while the client was behind (boxed: only
    /// a slow client has one).
    book_pending: Option<Box<book_merge::BookMerge>>,
}

/// How far a flush got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything pending is in the kernel.
    Drained,
    /// The socket is full; the rest waits for writability.
    Blocked,
    /// The Close frame has been written: nothing more will be.
    Closed,
    /// A catch-up slice is in the kernel and the cursor has more: the
    /// writer task goes on after the worker's other tasks had a turn (one
    /// flush never replays the whole history to a fast reader while fast
    /// clients wait).
    Paused,
}

/// One connection's outbound side.
///
/// `repr(C)`, hot fields first: at S1 (1,000 clients) every delivery finds
/// its client's state cold in the cache, and with the compiler's order the
/// fields one delivery and one write read were spread over 7 of the
/// struct's 8 cache lines. In this order they fill the first four (then
/// the catch-up state's floor and cursor), and the fields only control
/// messages, closes and eviction use come last (`outbox/layout.rs` keeps
/// it so).
#[repr(C)]
pub struct Client {
    // ---- read or written for every delivery and every write ----
    /// Binary clients: offset in `wbuf` of the last frame if it is a binary
    /// frame that more records may join.
    open_bin: Option<usize>,
    /// Per key: what was sent last, the pending tick, entitlement.
    pub(super) keys: KeyMap<KeySlot>,
    /// Bytes accepted for the socket; `wbuf[sent..]` is still to be written.
    wbuf: Vec<u8>,
    /// How much of `wbuf` the socket has taken.
    sent: usize,
    /// Byte cap on the write buffer.
    pub(super) cap: usize,
    /// End offsets in `wbuf` of the frames it holds.
    frame_ends: Vec<usize>,
    /// The server's counters.
    pub(super) stats: Arc<Stats>,
    /// The socket (plain or TLS); `None` once our side is shut down.
    write: Option<Rc<Transport>>,
    /// `rx` of the oldest live tick queued since the last write, for the
    /// encode→write latency histogram.
    oldest_rx: Option<u64>,
    /// Live ticks queued since the last write: the next write carries them,
    /// and counts them for the deliveries-per-write series.
    unwritten_live: u64,
    /// Ticks queued for this client (the close log line's `frames`).
    pub(crate) frames_sent: u64,
    /// Symbols this client's API key may see; `None` = every symbol.
    pub(super) entitlement: Option<Arc<Entitlement>>,
    /// Keys with a pending tick, oldest first (may hold stale entries).
    order: VecDeque<KeyId>,
    /// Control frames waiting for the write buffer to drain (never dropped).
    control: VecDeque<Bytes>,
    /// In the worker's dirty list: flushed at the end of the pass.
    pub(super) dirty: bool,
    /// The socket is full: its writer task flushes when it drains.
    pub(super) blocked: bool,
    /// A Close frame is queued; no more ticks, nothing after it.
    closing: bool,
    /// JSON, binary or SSE.
    pub(super) encoding: Encoding,
    /// `ts`/`rx` as numbers or strings in JSON and SSE ticks (`?ts=`).
    ts_format: TsFormat,
    /// Channels subscribed through `*`.
    pub(super) star: ChannelSet,
    /// The worker's measuring period in which this client last got a
    /// tick: it counts once among the clients the period reached, from
    /// which the coalescing window reads the per-client rate (`coalesce.rs`).
    /// 16 bits fit the padding before `catchup`; a number comes back after
    /// ~55 minutes, when at worst one client goes uncounted for a period.
    pub(super) reach_period: u16,
    /// Its slow-consumer policy per channel and, while it catches up, its
    /// position in the shared history (`catchup.rs`); its floor and cursor
    /// are read for every live tick.
    pub(crate) catchup: Catchup,
    // ---- behind, closing, control, bookkeeping ----
    /// Since when the client has had bytes the socket would not take.
    pub(super) behind_since: Option<Instant>,
    /// When a closing client is cut off if it does not take its Close.
    close_deadline: Option<Instant>,
    /// Binary clients: symbol ids this client has been told (in `subscribed`
    /// or a `symbol` announcement).
    known_ids: HashSet<SymbolId>,
    /// Wakes this client's writer task when the socket filled up.
    pub(crate) writer_wake: Rc<Notify>,
    /// Tells the session's reader to stop (client evicted or dead).
    pub(crate) kill: Rc<Notify>,
    /// Keys subscribed by name (the limit per connection).
    pub(super) named_keys: usize,
    /// Ticks replaced in a pending slot before they went out.
    pub(crate) dropped: u64,
    /// Why the server ended the connection from the write side, for the
    /// close log line (the session knows the read-side reasons).
    pub(crate) end_reason: Option<&'static str>,
    /// Book snapshots waiting for delivery to pass their last update's
    /// offset (with it): `WorkerState::hold_snapshots`.
    pub(super) held_books: Vec<(u64, RingItem)>,
}

impl Client {
    pub(super) fn new(
        write: Option<Transport>,
        stats: Arc<Stats>,
        cap: usize,
        encoding: Encoding,
    ) -> Client {
        Client {
            stats,
            encoding,
            ts_format: TsFormat::Number,
            known_ids: HashSet::new(),
            open_bin: None,
            oldest_rx: None,
            unwritten_live: 0,
            cap,
            write: write.map(Rc::new),
            writer_wake: Rc::new(Notify::new()),
            kill: Rc::new(Notify::new()),
            keys: KeyMap::default(),
            entitlement: None,
            named_keys: 0,
            star: ChannelSet::default(),
            control: VecDeque::new(),
            order: VecDeque::new(),
            wbuf: Vec::new(),
            sent: 0,
            frame_ends: Vec::new(),
            dirty: false,
            blocked: false,
            reach_period: 0,
            behind_since: None,
            closing: false,
            close_deadline: None,
            dropped: 0,
            frames_sent: 0,
            end_reason: None,
            catchup: Catchup::default(),
            held_books: Vec::new(),
        }
    }

    /// Limits what `*` delivers to the symbols `e` allows (`None`: all).
    pub(crate) fn set_entitlement(&mut self, e: Option<Arc<Entitlement>>) {
        self.entitlement = e;
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    pub(crate) fn named_keys(&self) -> usize {
        self.named_keys
    }

    pub(crate) fn is_subscribed(&self, key: KeyId) -> bool {
        self.keys.get(&key).is_some_and(|s| s.named)
    }

    /// Unsent bytes in the write buffer.
    pub(super) fn unsent(&self) -> usize {
        self.wbuf.len() - self.sent
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Chooses how `ts`/`rx` are written in this client's JSON ticks; set
    /// before its first subscription.
    pub(crate) fn set_ts_format(&mut self, format: TsFormat) {
        self.ts_format = format;
    }

    /// Records symbol ids the client has just been given (in `subscribed`),
    /// so no `symbol` announcement repeats them.
    pub(crate) fn learn_ids(&mut self, ids: impl IntoIterator<Item = SymbolId>) {
        if self.encoding == Encoding::Binary {
            self.known_ids.extend(ids);
        }
    }

    /// Forgets that the client knows a symbol id (it unsubscribed the
    /// symbol, whose id may be reassigned): the next record with that id is
    /// announced again.
    pub(crate) fn forget_id(&mut self, id: SymbolId) {
        self.known_ids.remove(&id);
    }

    fn append_frame(&mut self, frame: &[u8]) {
        self.wbuf.extend_from_slice(frame);
        self.frame_ends.push(self.wbuf.len());
        self.open_bin = None;
        Stats::gauge(&self.stats.queued_bytes, frame.len() as i64);
    }

    /// Appends a tick in the client's encoding.
    pub(super) fn append_tick(&mut self, item: &RingItem, snapshot: bool) {
        let e = self.encoding as usize;
        Stats::add(&self.stats.ticks_out[e], 1);
        if !snapshot {
            self.unwritten_live += 1;
            if self.oldest_rx.is_none() {
                self.oldest_rx = Some(item.tick.rx);
            }
        }
        match self.encoding {
            Encoding::Json if self.ts_format != TsFormat::Number => {
                self.append_frame(&item.json_frame_as(snapshot, self.ts_format));
                Stats::add(&self.stats.tick_frames_out[e], 1);
            }
            Encoding::Json => {
                self.append_frame(item.json_frame(snapshot));
                Stats::add(&self.stats.tick_frames_out[e], 1);
            }
            Encoding::Binary => match item.bar_frame(snapshot) {
                // A bar's 128-byte record is a frame of its own.
                Some(frame) => {
                    self.append_frame(&frame);
                    Stats::add(&self.stats.tick_frames_out[e], 1);
                }
                None => self.append_record(&item.record(snapshot)),
            },
            Encoding::Sse => {
                self.append_frame(&item.sse_event_as(snapshot, self.ts_format));
                Stats::add(&self.stats.tick_frames_out[e], 1);
            }
        }
    }

    /// Appends a binary record: into the last frame when it is an unwritten
    /// binary frame with room (rewriting its header, which grows from 2 to 4
    /// bytes at the second record), else as a new frame.
    fn append_record(&mut self, rec: &[u8; RECORD_LEN]) {
        let before = self.wbuf.len();
        let joinable = self.open_bin.filter(|&start| {
            start >= self.sent
                && self.frame_ends.last() == Some(&before)
                && before - start < MAX_RECORDS_PER_FRAME * RECORD_LEN
        });
        let start = match joinable {
            Some(start) => {
                // Lengths up to MAX_RECORDS_PER_FRAME records fit the 2-byte
                // (< 126) or the 4-byte (126 + u16) form.
                let head = if self.wbuf[start + 1] & 0x7f == 126 {
                    4
                } else {
                    2
                };
                let payload = before - start - head + RECORD_LEN;
                let mut h = [0u8; crate::wire::frame::MAX_HEADER];
                let n = crate::wire::frame::write_header(&mut h, OPCODE_BINARY, payload);
                if n > head {
                    self.wbuf
                        .splice(start + head..start + head, std::iter::repeat_n(0, n - head));
                }
                self.wbuf[start..start + n].copy_from_slice(&h[..n]);
                self.wbuf.extend_from_slice(rec);
                if let Some(end) = self.frame_ends.last_mut() {
                    *end = self.wbuf.len();
                }
                start
            }
            None => {
                let mut h = [0u8; crate::wire::frame::MAX_HEADER];
                let n = crate::wire::frame::write_header(&mut h, OPCODE_BINARY, RECORD_LEN);
                self.wbuf.extend_from_slice(&h[..n]);
                self.wbuf.extend_from_slice(rec);
                self.frame_ends.push(self.wbuf.len());
                Stats::add(&self.stats.tick_frames_out[Encoding::Binary as usize], 1);
                before
            }
        };
        self.open_bin = Some(start);
        Stats::gauge(&self.stats.queued_bytes, (self.wbuf.len() - before) as i64);
    }

    /// Binary clients: announces the tick's symbol id before its first
    /// record if the client has never been given it.
    pub(super) fn announce_symbol(&mut self, tick: &Tick) {
        if self.encoding == Encoding::Binary && self.known_ids.insert(tick.key.symbol()) {
            self.push_control(symbol_message(tick));
        }
    }

    /// Queues a tick for this client.
    ///
    /// Frames go straight into the write buffer, in order, while it holds
    /// less than the byte cap: a client that is only briefly behind loses
    /// nothing. Past the cap the client is coalescing: each key's newest tick
    /// waits in its pending slot (replacing a stale one) until the buffer
    /// has fully drained, and then one tick per key goes out.
    pub(super) fn offer(&mut self, item: &RingItem, snapshot: bool) -> bool {
        if self.closing || (!snapshot && self.below_floor(item)) {
            return false;
        }
        let key = item.tick.key;
        let slot = self.keys.entry(key).or_default();
        if let Some(e) = &self.entitlement
            && !slot.named
            && !*slot
                .entitled
                .get_or_insert_with(|| e.allows(&item.tick.sym))
        {
            return false;
        }
        if item.tick.seq <= slot.last_seq {
            return false;
        }
        let fits = self.order.is_empty() && self.control.is_empty() && self.unsent() < self.cap;
        if !snapshot && self.left_to_cursor(item, fits) {
            return false;
        }
        let Some(slot) = self.keys.get_mut(&key) else {
            return false;
        };
        slot.last_seq = item.tick.seq;
        if item.book.is_some() {
            return self.offer_book(item);
        }
        if slot.pending.is_some() {
            // Its symbol was announced when the first pending tick came.
            slot.pending = Some((item.clone(), snapshot));
            self.dropped += 1;
            Stats::add(&self.stats.ticks_dropped_stale, 1);
            return true;
        }
        self.announce_symbol(&item.tick);
        if fits {
            self.append_tick(item, snapshot);
            self.frames_sent += 1;
        } else if let Some(slot) = self.keys.get_mut(&key) {
            slot.pending = Some((item.clone(), snapshot));
            Stats::gauge(&self.stats.pending_ticks, 1);
            self.order.push_back(key);
        }
        true
    }

    /// Queues a control frame (never dropped), in order with the ticks
    /// already in the write buffer; pending slots go out after it.
    pub(crate) fn push_control(&mut self, frame: Bytes) {
        if self.closing {
            return;
        }
        if self.control.is_empty() {
            self.append_frame(&frame);
        } else {
            self.control.push_back(frame);
        }
    }

    /// SSE resume (`Last-Event-ID`): the client already has `key` up to
    /// `seq`, so neither its snapshot nor a live tick at or below it is sent.
    pub(crate) fn resume_after(&mut self, key: KeyId, seq: u64) {
        let slot = self.keys.entry(key).or_default();
        slot.last_seq = slot.last_seq.max(seq);
    }

    /// Forgets a key's delivery state (unsubscribed), with its pending tick.
    pub(super) fn remove_slot(&mut self, key: KeyId) {
        if let Some(slot) = self.keys.remove(&key)
            && (slot.pending.is_some() || slot.has_book_pending())
        {
            Stats::gauge(&self.stats.pending_ticks, -1);
        }
    }
}

impl Drop for Client {
    /// Settles the gauges for whatever the client still held.
    fn drop(&mut self) {
        Stats::gauge(
            &self.stats.queued_bytes,
            -((self.wbuf.len() - self.sent) as i64),
        );
        let pending = self
            .keys
            .values()
            .filter(|s| s.pending.is_some() || s.has_book_pending())
            .count();
        Stats::gauge(&self.stats.pending_ticks, -(pending as i64));
        Stats::gauge(
            &self.stats.pending_book_levels,
            -(self.pending_book_levels() as i64),
        );
    }
}
