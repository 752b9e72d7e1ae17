//! Fan-out: one worker's clients, its subscription index, and the path from
//! the ingest ring to each client's socket.
//!
//! Each worker thread owns its clients outright (`Rc<RefCell>`, no locks):
//! the ring reader, the sessions' control handling and the per-client writer
//! tasks all run on the worker's single-threaded runtime.
//!
//! Backpressure, per client: frames are appended in order to the client's
//! write buffer until it holds the byte cap. Past that, every key has one
//! pending slot: a new tick of a key whose slot is still full replaces the
//! stale one (counted as dropped), so a slow client's memory is bounded by the
//! byte cap plus one slot per key, and when it drains it gets the newest value
//! of every key that changed. Control replies are never dropped. After each
//! ring batch every client with something queued is flushed with one `write`;
//! a client whose socket is full is left to its writer task, which waits for
//! writability and evicts it (close 4000) when it stays behind too long.
//!
//! Binary (`tickwire.bin.v1`) clients get 64-byte records instead of JSON
//! frames. Records queued back to back share one binary frame: the last
//! frame in the write buffer is extended (its header rewritten) while no byte
//! of it has been written and it holds fewer than [`MAX_RECORDS_PER_FRAME`].
//! Before the first record of a symbol whose id the client was never given
//! (a `*` subscriber meeting a new symbol), a `symbol` control message
//! announces the id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slab::Slab;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::access::auth::Entitlement;
use crate::model::feed::FeedStatus;
use crate::model::tick::{Channel, ChannelSet, KeyId, SymbolId, Tick};
use crate::net::transport::Transport;
use crate::pipeline::ingest::{Ingest, RingItem};
use crate::pipeline::stats::Stats;
use crate::wire::encode::{self, Encoding, JsonObject, OPCODE_BINARY, RECORD_LEN};

/// Most records one binary frame carries (16 KiB of payload): big enough
/// that a backlog costs few frame headers, small enough that a client can
/// start decoding before a whole burst has arrived.
pub const MAX_RECORDS_PER_FRAME: usize = 256;

/// Index of a client in its worker's slab.
pub type ClientId = usize;

/// Close codes the server sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SLOW_CONSUMER: u16 = 4000;
}

#[derive(Default)]
struct KeySlot {
    /// Subscribed by name (as opposed to only through `*`).
    named: bool,
    /// Highest seq queued for this client; older or equal ticks are skipped,
    /// so a key is never repeated or reordered on one connection.
    last_seq: u64,
    pending: Option<(RingItem, bool)>,
    /// For a client whose key sees only some symbols: whether this key's
    /// symbol is entitled, decided on its first tick through `*` and kept
    /// (`None` = not decided yet). Named keys were checked at subscribe.
    entitled: Option<bool>,
}

/// How far a flush got.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything pending is in the kernel.
    Drained,
    /// The socket is full; the rest waits for writability.
    Blocked,
    /// The Close frame has been written: nothing more will be.
    Closed,
}

/// One connection's outbound side.
pub struct Client {
    stats: Arc<Stats>,
    encoding: Encoding,
    /// Binary clients: symbol ids this client has been told (in `subscribed`
    /// or a `symbol` announcement).
    known_ids: HashSet<SymbolId>,
    /// Binary clients: offset in `wbuf` of the last frame if it is a binary
    /// frame that more records may join.
    open_bin: Option<usize>,
    /// `rx` of the oldest live tick queued since the last write, for the
    /// encode→write latency histogram.
    oldest_rx: Option<u64>,
    /// Byte cap on the write buffer.
    cap: usize,
    /// The socket (plain or TLS); `None` once our side is shut down.
    write: Option<Rc<Transport>>,
    /// Wakes this client's writer task when the socket filled up.
    pub writer_wake: Rc<Notify>,
    /// Tells the session's reader to stop (client evicted or dead).
    pub kill: Rc<Notify>,
    keys: HashMap<KeyId, KeySlot>,
    /// Symbols this client's API key may see; `None` = every symbol.
    entitlement: Option<Arc<Entitlement>>,
    named_keys: usize,
    star: ChannelSet,
    control: VecDeque<Bytes>,
    /// Keys with a pending tick, oldest first (may hold stale entries).
    order: VecDeque<KeyId>,
    /// Bytes accepted for the socket; `wbuf[sent..]` is still to be written.
    wbuf: Vec<u8>,
    sent: usize,
    /// End offsets in `wbuf` of the frames it holds.
    frame_ends: Vec<usize>,
    dirty: bool,
    blocked: bool,
    behind_since: Option<Instant>,
    /// A Close frame is queued; no more ticks, nothing after it.
    closing: bool,
    close_deadline: Option<Instant>,
    pub dropped: u64,
    pub frames_sent: u64,
    /// Why the server ended the connection from the write side, for the
    /// close log line (the session knows the read-side reasons).
    pub end_reason: Option<&'static str>,
}

impl Client {
    fn new(write: Option<Transport>, stats: Arc<Stats>, cap: usize, encoding: Encoding) -> Client {
        Client {
            stats,
            encoding,
            known_ids: HashSet::new(),
            open_bin: None,
            oldest_rx: None,
            cap,
            write: write.map(Rc::new),
            writer_wake: Rc::new(Notify::new()),
            kill: Rc::new(Notify::new()),
            keys: HashMap::new(),
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
            behind_since: None,
            closing: false,
            close_deadline: None,
            dropped: 0,
            frames_sent: 0,
            end_reason: None,
        }
    }

    /// Limits what `*` delivers to the symbols `e` allows (`None`: all).
    pub fn set_entitlement(&mut self, e: Option<Arc<Entitlement>>) {
        self.entitlement = e;
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn named_keys(&self) -> usize {
        self.named_keys
    }

    pub fn is_subscribed(&self, key: KeyId) -> bool {
        self.keys.get(&key).is_some_and(|s| s.named)
    }

    /// Unsent bytes in the write buffer.
    fn unsent(&self) -> usize {
        self.wbuf.len() - self.sent
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Records symbol ids the client has just been given (in `subscribed`),
    /// so no `symbol` announcement repeats them.
    pub fn learn_ids(&mut self, ids: impl IntoIterator<Item = SymbolId>) {
        if self.encoding == Encoding::Binary {
            self.known_ids.extend(ids);
        }
    }

    fn append_frame(&mut self, frame: &[u8]) {
        self.wbuf.extend_from_slice(frame);
        self.frame_ends.push(self.wbuf.len());
        self.open_bin = None;
        Stats::gauge(&self.stats.queued_bytes, frame.len() as i64);
    }

    /// Appends a tick in the client's encoding.
    fn append_tick(&mut self, item: &RingItem, snapshot: bool) {
        let e = self.encoding as usize;
        Stats::add(&self.stats.ticks_out[e], 1);
        if !snapshot && self.oldest_rx.is_none() {
            self.oldest_rx = Some(item.tick.rx);
        }
        match self.encoding {
            Encoding::Json => {
                self.append_frame(item.json_frame(snapshot));
                Stats::add(&self.stats.tick_frames_out[e], 1);
            }
            Encoding::Binary => self.append_record(&item.record(snapshot)),
            Encoding::Sse => {
                self.append_frame(&item.sse_event(snapshot));
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
                let mut h = [0u8; encode::MAX_HEADER];
                let n = encode::write_header(&mut h, OPCODE_BINARY, payload);
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
                let mut h = [0u8; encode::MAX_HEADER];
                let n = encode::write_header(&mut h, OPCODE_BINARY, RECORD_LEN);
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
    fn announce_symbol(&mut self, tick: &Tick) {
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
    fn offer(&mut self, item: &RingItem, snapshot: bool) -> bool {
        if self.closing {
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
        slot.last_seq = item.tick.seq;
        if slot.pending.is_some() {
            // Its symbol was announced when the first pending tick came.
            slot.pending = Some((item.clone(), snapshot));
            self.dropped += 1;
            Stats::add(&self.stats.ticks_dropped_stale, 1);
            return true;
        }
        self.announce_symbol(&item.tick);
        let direct = self.order.is_empty() && self.control.is_empty() && self.unsent() < self.cap;
        if direct {
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
    pub fn push_control(&mut self, frame: Bytes) {
        if self.closing {
            return;
        }
        if self.control.is_empty() {
            self.append_frame(&frame);
        } else {
            self.control.push_back(frame);
        }
    }

    /// Queues a Close frame; everything not yet in the write buffer is
    /// discarded, and a partially written batch is cut after the frame in
    /// flight so the Close goes out promptly.
    /// An SSE stream has no Close frame: it just ends (FIN) after what is
    /// in the write buffer, and `code`/`reason` are only logged by callers.
    pub fn close(&mut self, code: u16, reason: &str, grace: Duration) {
        let frame = if self.encoding == Encoding::Sse {
            Bytes::new()
        } else {
            encode::close_frame(code, reason)
        };
        self.close_with_frame(frame, grace);
    }

    /// SSE resume (`Last-Event-ID`): the client already has `key` up to
    /// `seq`, so neither its snapshot nor a live tick at or below it is sent.
    pub fn resume_after(&mut self, key: KeyId, seq: u64) {
        let slot = self.keys.entry(key).or_default();
        slot.last_seq = slot.last_seq.max(seq);
    }

    /// [`Client::close`] with a ready Close frame (an echo of the peer's).
    pub fn close_with_frame(&mut self, close: Bytes, grace: Duration) {
        if self.closing {
            return;
        }
        self.discard_pending();
        if let Some(&end) = self.frame_ends.iter().find(|&&e| e > self.sent) {
            Stats::gauge(
                &self.stats.queued_bytes,
                end as i64 - self.wbuf.len() as i64,
            );
            self.wbuf.truncate(end);
            self.frame_ends.retain(|&e| e <= end);
            self.open_bin = None;
        }
        self.control.clear();
        self.control.push_back(close);
        self.closing = true;
        self.close_deadline = Some(Instant::now() + grace);
    }

    /// Like [`Client::close`], but a final message goes out before the Close.
    pub fn close_with_message(&mut self, msg: Bytes, code: u16, reason: &str, grace: Duration) {
        if self.closing {
            return;
        }
        self.close(code, reason, grace);
        self.control.push_front(msg);
    }

    fn discard_pending(&mut self) {
        let mut n = 0;
        for slot in self.keys.values_mut() {
            n += i64::from(slot.pending.take().is_some());
        }
        Stats::gauge(&self.stats.pending_ticks, -n);
        self.order.clear();
    }

    /// Forgets a key's delivery state (unsubscribed), with its pending tick.
    fn remove_slot(&mut self, key: KeyId) {
        if let Some(slot) = self.keys.remove(&key)
            && slot.pending.is_some()
        {
            Stats::gauge(&self.stats.pending_ticks, -1);
        }
    }

    /// Once the write buffer has drained: moves queued control frames into
    /// it, then one tick per pending key, up to the byte cap.
    fn fill(&mut self) {
        debug_assert_eq!(self.sent, self.wbuf.len());
        self.wbuf.clear();
        self.frame_ends.clear();
        self.open_bin = None;
        self.sent = 0;
        while let Some(f) = self.control.pop_front() {
            self.append_frame(&f);
        }
        if self.closing {
            return;
        }
        let mut taken = 0;
        while self.wbuf.len() < self.cap {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            let Some((item, snap)) = self.keys.get_mut(&key).and_then(|s| s.pending.take()) else {
                continue; // stale entry: unsubscribed or already taken
            };
            self.append_tick(&item, snap);
            taken += 1;
        }
        self.frames_sent += taken;
        Stats::gauge(&self.stats.pending_ticks, -(taken as i64));
    }

    /// Writes as much as the socket takes, in as few writes as possible.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let Some(write) = self.write.clone() else {
            return Ok(Flushed::Closed);
        };
        // TLS: the rest of the last batch's ciphertext goes first.
        if !write.try_flush()? {
            self.mark_blocked();
            return Ok(Flushed::Blocked);
        }
        loop {
            if self.sent == self.wbuf.len() {
                if self.closing && self.control.is_empty() {
                    // The Close frame is out: shut our side down, once.
                    write.finish();
                    self.write = None;
                    self.blocked = false;
                    return Ok(Flushed::Closed);
                }
                self.fill();
                if self.wbuf.is_empty() && self.closing {
                    continue; // an empty close (SSE): shut down above
                }
                if self.wbuf.is_empty() {
                    self.behind_since = None;
                    self.blocked = false;
                    if self.wbuf.capacity() > 64 * 1024 {
                        // Give back what a burst grew.
                        self.wbuf = Vec::new();
                        self.frame_ends = Vec::new();
                    }
                    return Ok(Flushed::Drained);
                }
            }
            match write.try_write(&self.wbuf[self.sent..]) {
                Ok(n) => {
                    if let Some(rx) = self.oldest_rx.take() {
                        self.stats
                            .encode_to_write
                            .observe_ns(crate::model::tick::wall_clock_ns().saturating_sub(rx));
                    }
                    Stats::add(&self.stats.writes, 1);
                    Stats::add(&self.stats.bytes_out[self.encoding as usize], n as u64);
                    Stats::gauge(&self.stats.queued_bytes, -(n as i64));
                    self.sent += n;
                    // (TLS: ciphertext left in rustls is behind too.)
                    if self.sent < self.wbuf.len() || !write.is_flushed() {
                        self.mark_blocked();
                        return Ok(Flushed::Blocked);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.mark_blocked();
                    return Ok(Flushed::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn mark_blocked(&mut self) {
        self.blocked = true;
        self.behind_since.get_or_insert_with(Instant::now);
    }

    /// When the writer task must act even if the socket stays full.
    pub fn deadline(&self, evict_after: Duration) -> Option<Instant> {
        if self.closing {
            self.close_deadline
        } else {
            self.behind_since.map(|t| t + evict_after)
        }
    }

    pub fn write_half(&self) -> Option<Rc<Transport>> {
        self.write.clone()
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    pub fn behind_for(&self) -> Option<Duration> {
        self.behind_since.map(|t| t.elapsed())
    }

    /// Our Close is out and our side shut down: the session's reader waits
    /// for the peer's Close or EOF, for at most the close grace.
    fn closed_wait(&self) {
        let kill = self.kill.clone();
        let grace = self
            .close_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        tokio::task::spawn_local(async move {
            tokio::time::sleep(grace).await;
            kill.notify_one();
        });
    }

    /// Takes the bytes an in-memory client would have written, as if its
    /// socket had taken them all; returns how many there were.
    pub fn take_output(&mut self) -> usize {
        let n = self.unsent();
        Stats::gauge(&self.stats.queued_bytes, -(n as i64));
        self.wbuf.clear();
        self.frame_ends.clear();
        self.open_bin = None;
        self.oldest_rx = None;
        self.sent = 0;
        n
    }

    /// The bytes queued and not yet written (tests of the framing).
    pub fn queued(&self) -> &[u8] {
        &self.wbuf[self.sent..]
    }

    /// Drops the socket's write side at once (peer gone or unresponsive).
    pub fn abandon(&mut self) {
        self.end_reason
            .get_or_insert("connection lost or unresponsive");
        self.write = None;
        self.closing = true;
        self.discard_pending();
        self.control.clear();
        self.kill.notify_one();
    }
}

impl Drop for Client {
    /// Settles the gauges for whatever the client still held.
    fn drop(&mut self) {
        Stats::gauge(
            &self.stats.queued_bytes,
            -((self.wbuf.len() - self.sent) as i64),
        );
        let pending = self.keys.values().filter(|s| s.pending.is_some()).count();
        Stats::gauge(&self.stats.pending_ticks, -(pending as i64));
    }
}

/// A worker's clients and subscription index.
#[derive(Default)]
pub struct WorkerState {
    pub clients: Slab<Client>,
    /// Clients that subscribed to a key by name.
    index: HashMap<KeyId, Vec<ClientId>>,
    /// Clients subscribed to `*`, per channel.
    star: [Vec<ClientId>; 2],
    dirty: Vec<ClientId>,
    /// On a gateway: told when a key gains its first or loses its last
    /// subscriber here, so the node takes from the bus only what it needs.
    interest: Option<Arc<dyn InterestSink>>,
}

/// Told when a key gains its first or loses its last subscriber on a
/// worker, and the same for `*` per channel: a gateway's bus link holds only
/// the NATS subscriptions its clients need. Off the per-tick path.
pub trait InterestSink: Send + Sync {
    fn add(&self, key: KeyId);
    fn remove(&self, key: KeyId);
    fn add_star(&self, ch: Channel);
    fn remove_star(&self, ch: Channel);
}

/// Everything a worker's tasks share.
pub struct Worker {
    pub id: usize,
    pub state: std::cell::RefCell<WorkerState>,
    pub ingest: Arc<Ingest>,
    pub stats: Arc<Stats>,
    /// A client behind for longer than this is evicted (`--evict-after`).
    pub evict_after: Duration,
    /// After sending a Close, how long to wait for the peer's
    /// (`--close-timeout`).
    pub close_timeout: Duration,
    /// On a gateway, the feed's status: every client is told when it
    /// changes. `None` where the feed cannot go stale.
    pub status: Option<watch::Receiver<FeedStatus>>,
}

fn remove_id(list: &mut Vec<ClientId>, id: ClientId) {
    if let Some(pos) = list.iter().position(|&c| c == id) {
        list.swap_remove(pos);
    }
}

impl WorkerState {
    /// A worker state that reports its keys' interest to the bus.
    pub fn with_interest(interest: Option<Arc<dyn InterestSink>>) -> WorkerState {
        WorkerState {
            interest,
            ..WorkerState::default()
        }
    }

    fn index_add(&mut self, key: KeyId, id: ClientId) {
        let list = self.index.entry(key).or_default();
        if list.is_empty()
            && let Some(i) = &self.interest
        {
            i.add(key);
        }
        list.push(id);
    }

    fn index_remove(&mut self, key: KeyId, id: ClientId) {
        if let Some(list) = self.index.get_mut(&key) {
            remove_id(list, id);
            if list.is_empty() {
                self.index.remove(&key);
                if let Some(i) = &self.interest {
                    i.remove(key);
                }
            }
        }
    }

    fn star_add(&mut self, ch: Channel, id: ClientId) {
        let list = &mut self.star[ch as usize];
        if list.is_empty()
            && let Some(i) = &self.interest
        {
            i.add_star(ch);
        }
        list.push(id);
    }

    fn star_remove(&mut self, ch: Channel, id: ClientId) {
        let list = &mut self.star[ch as usize];
        let had = !list.is_empty();
        remove_id(list, id);
        if had
            && list.is_empty()
            && let Some(i) = &self.interest
        {
            i.remove_star(ch);
        }
    }

    pub fn add_client(
        &mut self,
        write: Transport,
        stats: Arc<Stats>,
        cap: usize,
        encoding: Encoding,
    ) -> ClientId {
        self.clients
            .insert(Client::new(Some(write), stats, cap, encoding))
    }

    /// A client with no socket, whose output stays in memory until
    /// [`Client::take_output`]: for benchmarks of the fan-out path itself.
    pub fn add_in_memory_client(&mut self, stats: Arc<Stats>, cap: usize) -> ClientId {
        self.add_in_memory_client_with(stats, cap, Encoding::Json)
    }

    /// [`WorkerState::add_in_memory_client`] in a chosen encoding.
    pub fn add_in_memory_client_with(
        &mut self,
        stats: Arc<Stats>,
        cap: usize,
        encoding: Encoding,
    ) -> ClientId {
        self.clients.insert(Client::new(None, stats, cap, encoding))
    }

    /// Removes a client and every subscription it held.
    pub fn remove_client(&mut self, id: ClientId) -> Option<Client> {
        let client = self.clients.try_remove(id)?;
        Stats::gauge(
            &client.stats.named_subscriptions,
            -(client.named_keys as i64),
        );
        Stats::gauge(
            &client.stats.star_subscriptions,
            -(client.star.iter().count() as i64),
        );
        for (key, slot) in &client.keys {
            if slot.named {
                self.index_remove(*key, id);
            }
        }
        for ch in client.star.iter() {
            self.star_remove(ch, id);
        }
        Some(client)
    }

    /// Number of (client, key) subscriptions by name, and `*` subscriptions.
    pub fn subscription_counts(&self) -> (usize, usize) {
        (
            self.index.values().map(Vec::len).sum(),
            self.star.iter().map(Vec::len).sum(),
        )
    }

    /// Subscribes `id` to `keys` by name; returns how many were new.
    pub fn subscribe_keys(&mut self, id: ClientId, keys: &[KeyId]) -> usize {
        let Some(c) = self.clients.get_mut(id) else {
            return 0;
        };
        let mut added = Vec::new();
        for &key in keys {
            let slot = c.keys.entry(key).or_default();
            if !slot.named {
                slot.named = true;
                c.named_keys += 1;
                added.push(key);
            }
        }
        Stats::gauge(&c.stats.named_subscriptions, added.len() as i64);
        for &key in &added {
            self.index_add(key, id);
        }
        added.len()
    }

    pub fn subscribe_star(&mut self, id: ClientId, channels: ChannelSet) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let mut added = Vec::new();
        for ch in channels.iter() {
            if !c.star.contains(ch) {
                c.star.insert(ch);
                Stats::gauge(&c.stats.star_subscriptions, 1);
                added.push(ch);
            }
        }
        for ch in added {
            self.star_add(ch, id);
        }
    }

    /// Ends subscriptions; pending ticks of keys no longer covered are discarded.
    pub fn unsubscribe_keys(&mut self, id: ClientId, keys: &[KeyId]) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let mut removed = Vec::new();
        for &key in keys {
            let Some(slot) = c.keys.get_mut(&key) else {
                continue;
            };
            if slot.named {
                slot.named = false;
                c.named_keys -= 1;
                Stats::gauge(&c.stats.named_subscriptions, -1);
                removed.push(key);
            }
            if !c.star.contains(key.channel()) {
                c.remove_slot(key);
            }
        }
        for key in removed {
            self.index_remove(key, id);
        }
    }

    pub fn unsubscribe_star(&mut self, id: ClientId, channels: ChannelSet) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        let mut removed = Vec::new();
        for ch in channels.iter() {
            if c.star.contains(ch) {
                c.star.0 &= !ch.bit();
                removed.push(ch);
                Stats::gauge(&c.stats.star_subscriptions, -1);
                let gone: Vec<KeyId> = c
                    .keys
                    .iter()
                    .filter(|(k, s)| !s.named && k.channel() == ch)
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    c.remove_slot(k);
                }
            }
        }
        for ch in removed {
            self.star_remove(ch, id);
        }
    }

    pub fn star_channels(&self, id: ClientId) -> ChannelSet {
        self.clients.get(id).map(|c| c.star).unwrap_or_default()
    }

    /// Queues snapshot ticks (newer than what the client already has).
    pub fn offer_snapshots(&mut self, id: ClientId, items: &[RingItem]) {
        if let Some(c) = self.clients.get_mut(id) {
            for item in items {
                c.offer(item, true);
            }
            self.mark_dirty(id);
        }
    }

    fn mark_dirty(&mut self, id: ClientId) {
        if let Some(c) = self.clients.get_mut(id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Hands one ring item to every subscriber of its key.
    pub fn deliver(&mut self, item: &RingItem) {
        let key = item.tick.key;
        let WorkerState {
            clients,
            index,
            star,
            dirty,
            ..
        } = self;
        let named = index.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let everyone = &star[key.channel() as usize];
        for &id in named.iter().chain(everyone.iter()) {
            let c = &mut clients[id];
            if !c.offer(item, false) {
                continue;
            }
            if !c.blocked && c.unsent() >= c.cap / 2 {
                // A big batch: write now rather than let a client that keeps
                // up reach its cap before the batch ends.
                flush_now(id, c);
            } else if !c.dirty {
                c.dirty = true;
                dirty.push(id);
            }
        }
    }

    /// Flushes every client that got something since the last flush.
    pub fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            self.flush_client(id);
        }
        self.dirty = dirty;
    }

    /// Flushes one client unless its writer task is already waiting on it.
    pub fn flush_client(&mut self, id: ClientId) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        c.dirty = false;
        if c.blocked {
            return; // its writer task flushes when the socket drains
        }
        flush_now(id, c);
    }

    pub fn client(&mut self, id: ClientId) -> Option<&mut Client> {
        self.clients.get_mut(id)
    }
}

/// Writes what a (not blocked) client has queued and acts on the outcome.
fn flush_now(id: ClientId, c: &mut Client) {
    match c.flush() {
        Ok(Flushed::Blocked) => c.writer_wake.notify_one(),
        Ok(Flushed::Drained) => {}
        Ok(Flushed::Closed) => c.closed_wait(),
        Err(e) => {
            tracing::debug!(client = id, error = %e, "write failed; dropping client");
            c.abandon();
        }
    }
}

/// Channel list for replies, in protocol order.
pub fn channel_names(set: ChannelSet) -> Vec<&'static str> {
    set.iter().map(Channel::as_str).collect()
}

/// `{"type":"symbol","sym":…,"id":…}`: tells a binary client the id of a
/// symbol before its first record.
pub fn symbol_message(tick: &Tick) -> Bytes {
    let mut o = JsonObject::new("symbol");
    o.str("sym", &tick.sym)
        .u64("id", u64::from(tick.key.symbol()));
    o.into_frame()
}

/// The `lagging` notice sent before a slow-consumer close.
pub fn lagging_message(behind: Duration) -> Bytes {
    let mut o = JsonObject::new("lagging");
    o.u64("behind_ms", behind.as_millis() as u64);
    o.into_frame()
}

/// The same notice for an SSE client: `event: lagging` with the same JSON.
pub fn sse_lagging_event(behind: Duration) -> Bytes {
    let mut o = JsonObject::new("lagging");
    o.u64("behind_ms", behind.as_millis() as u64);
    let mut out = b"event: lagging\ndata: ".to_vec();
    out.extend_from_slice(&o.into_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The `status` message (feed live or stale, on a gateway) for a client.
pub fn status_message(status: &FeedStatus, encoding: Encoding) -> Bytes {
    let json = encode::status_json(status);
    if encoding == Encoding::Sse {
        let mut out = b"event: status\ndata: ".to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    } else {
        encode::frame(encode::OPCODE_TEXT, &json)
    }
}

/// Resolves when the feed status changes; never without a bus.
async fn status_changed(rx: &mut Option<watch::Receiver<FeedStatus>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Worker {
    /// Tells every client of this worker the feed's new status.
    fn broadcast_status(&self, status: &FeedStatus) {
        let mut st = self.state.borrow_mut();
        let ids: Vec<ClientId> = st.clients.iter().map(|(id, _)| id).collect();
        for id in ids {
            if let Some(c) = st.client(id)
                && !c.is_closing()
            {
                c.push_control(status_message(status, c.encoding()));
                st.mark_dirty(id);
            }
        }
        st.flush_dirty();
    }

    /// The worker's ring-reading loop: deliver each batch, then flush every
    /// client that got something, in one write each.
    pub async fn run_fanout(
        self: Rc<Self>,
        mut reader: crate::pipeline::ingest::IngestReader,
        mut shutdown: crate::shutdown::Shutdown,
    ) {
        let mut batch: Vec<RingItem> = Vec::with_capacity(1024);
        let mut status = self.status.clone();
        loop {
            batch.clear();
            if let Some(rx) = &mut status
                && rx.has_changed().unwrap_or(false)
            {
                let now = rx.borrow_and_update().clone();
                self.broadcast_status(&now);
            }
            if reader.read_batch(&mut batch, 1024) == 0 {
                tokio::select! {
                    _ = reader.waker.notified() => continue,
                    _ = status_changed(&mut status) => {
                        if let Some(rx) = &mut status {
                            let now = rx.borrow_and_update().clone();
                            self.broadcast_status(&now);
                        }
                        continue;
                    }
                    _ = shutdown.triggered() => return,
                }
            }
            {
                let mut st = self.state.borrow_mut();
                for item in &batch {
                    st.deliver(item);
                }
                st.flush_dirty();
            }
            // Let sessions run between batches.
            tokio::task::yield_now().await;
        }
    }

    /// A client's writer task: waits for its socket to drain while it is
    /// blocked, and enforces the slow-consumer and close deadlines.
    pub async fn run_writer(self: Rc<Self>, id: ClientId, wake: Rc<Notify>) {
        let evict_after = self.evict_after;
        loop {
            wake.notified().await;
            loop {
                let (write, deadline) = {
                    let st = self.state.borrow();
                    let Some(c) = st.clients.get(id) else { return };
                    if !c.is_blocked() {
                        break;
                    }
                    let Some(w) = c.write_half() else { break };
                    (w, c.deadline(evict_after))
                };
                let deadline = deadline.unwrap_or_else(|| Instant::now() + evict_after);
                tokio::select! {
                    ready = write.writable() => {
                        drop(write);
                        let mut st = self.state.borrow_mut();
                        let Some(c) = st.client(id) else { return };
                        match ready.and_then(|()| c.flush()) {
                            Ok(Flushed::Closed) => c.closed_wait(),
                            Ok(_) => {}
                            Err(_) => c.abandon(),
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        drop(write);
                        let mut st = self.state.borrow_mut();
                        let Some(c) = st.client(id) else { return };
                        if c.is_closing() {
                            // It did not even take the Close frame: cut it off.
                            c.abandon();
                        } else {
                            let behind = c.behind_for().unwrap_or_default();
                            Stats::add(&self.stats.clients_evicted, 1);
                            c.end_reason = Some("slow consumer (4000)");
                            tracing::info!(worker = self.id, client = id, behind_ms = behind.as_millis() as u64, dropped = c.dropped, "evicting slow consumer");
                            let notice = if c.encoding() == Encoding::Sse {
                                sse_lagging_event(behind)
                            } else {
                                lagging_message(behind)
                            };
                            c.close_with_message(notice, close_code::SLOW_CONSUMER, "slow consumer", self.close_timeout);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decimal::Fixed;
    use crate::model::tick::{Event, Side};
    use crate::wire::encode::EncodedTick;

    fn item(sym: u32, seq: u64) -> RingItem {
        Arc::new(EncodedTick::new(Tick {
            key: KeyId::new(sym, Channel::Trade),
            sym: format!("S{sym}").into(),
            seq,
            ts: seq,
            rx: seq,
            event: Event::Trade {
                px: Fixed(seq as i64),
                qty: Fixed(1),
                side: Side::Sell,
            },
        }))
    }

    /// Splits queued bytes into (opcode, payload) frames.
    fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let (len, off) = match b[1] {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => panic!("binary frames stay under 64 KiB"),
                n => (n as usize, 2),
            };
            assert!(off == 2 || len >= 126, "length in its shortest form");
            out.push((b[0] & 0x0f, b[off..off + len].to_vec()));
            b = &b[off + len..];
        }
        out
    }

    fn binary_star_client() -> (WorkerState, ClientId, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let mut st = WorkerState::default();
        let id = st.add_in_memory_client_with(stats.clone(), 1 << 20, Encoding::Binary);
        st.subscribe_star(id, ChannelSet::BOTH);
        (st, id, stats)
    }

    #[test]
    fn pending_records_share_one_frame_after_the_symbol_announcement() {
        let (mut st, id, stats) = binary_star_client();
        for seq in 1..=3 {
            st.deliver(&item(5, seq));
        }
        let c = st.client(id).unwrap();
        let f = frames(c.queued());
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].0, encode::OPCODE_TEXT);
        let v: serde_json::Value = serde_json::from_slice(&f[0].1).unwrap();
        assert_eq!(v, serde_json::json!({"type":"symbol","sym":"S5","id":5}));
        assert_eq!(f[1].0, OPCODE_BINARY);
        assert_eq!(f[1].1.len(), 3 * RECORD_LEN);
        for (i, rec) in f[1].1.chunks(RECORD_LEN).enumerate() {
            assert_eq!(rec, item(5, i as u64 + 1).record(false));
        }
        let queued = stats
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            queued as usize,
            c.queued().len(),
            "gauge follows the rewrites"
        );
        assert_eq!(Stats::get(&stats.ticks_out[1]), 3);
        assert_eq!(Stats::get(&stats.tick_frames_out[1]), 1);
    }

    #[test]
    fn a_full_frame_starts_the_next_and_a_known_symbol_is_not_announced() {
        let (mut st, id, _) = binary_star_client();
        st.client(id).unwrap().learn_ids([5]);
        for seq in 1..=(MAX_RECORDS_PER_FRAME as u64 + 10) {
            st.deliver(&item(5, seq));
        }
        let c = st.client(id).unwrap();
        let f = frames(c.queued());
        let sizes: Vec<(u8, usize)> = f.iter().map(|(op, p)| (*op, p.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (OPCODE_BINARY, MAX_RECORDS_PER_FRAME * RECORD_LEN),
                (OPCODE_BINARY, 10 * RECORD_LEN)
            ]
        );
    }

    #[test]
    fn a_control_message_between_records_closes_the_frame() {
        let (mut st, id, _) = binary_star_client();
        st.deliver(&item(1, 1));
        st.client(id)
            .unwrap()
            .push_control(encode::frame(encode::OPCODE_TEXT, b"{}"));
        st.deliver(&item(1, 2));
        st.deliver(&item(2, 1));
        let f = frames(st.client(id).unwrap().queued());
        let ops: Vec<(u8, usize)> = f.iter().map(|(op, p)| (*op, p.len())).collect();
        assert_eq!(ops[0].0, 1); // symbol S1
        assert_eq!(ops[1], (2, 64));
        assert_eq!(ops[2], (1, 2));
        assert_eq!(ops[3], (2, 64));
        assert_eq!(ops[4].0, 1); // symbol S2
        assert_eq!(ops[5], (2, 64));
        assert_eq!(ops.len(), 6);
    }

    #[test]
    fn json_clients_are_unchanged() {
        let stats = Arc::new(Stats::default());
        let mut st = WorkerState::default();
        let id = st.add_in_memory_client(stats.clone(), 1 << 20);
        st.subscribe_star(id, ChannelSet::BOTH);
        st.deliver(&item(3, 1));
        st.deliver(&item(3, 2));
        let f = frames(st.client(id).unwrap().queued());
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].1, item(3, 2).json[2..].to_vec());
        assert_eq!(Stats::get(&stats.tick_frames_out[0]), 2);
    }
}
