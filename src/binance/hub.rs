//! The Binance endpoint's fan-out: one ring reader turns each tick into the
//! payloads of the Binance streams that have subscribers, once per stream
//! and encoding (raw or combined, ms or µs), and hands the shared bytes to
//! every subscribed connection's queue.
//!
//! Each payload is framed once ([`FrameBuilder`]: server frames are
//! unmasked, so the whole frame is the same for every subscriber) and the
//! shared frame is queued in each subscriber's [`Outbox`]; at the end of a
//! ring batch (or depth window) [`Hub::write_queued`] writes every outbox it
//! queued for, one write each, as the main endpoint's fan-out does. A
//! connection costs no task wake-up per event: its session wakes only when
//! its socket is full or it must close.
//!
//! Depth diffs are merged per level over Binance's 100 ms and 1000 ms
//! windows ([`crate::binance::depth`]) and sent at each window's end by
//! [`Hub::flush_depth`]; they are never dropped: a connection whose queue is
//! full is disconnected (as Binance disconnects a client that cannot keep
//! up), so every client that stays connected has seen every `U`..`u` range.

use std::cell::RefCell;
use std::collections::HashMap;

/// The hub's maps, looked up per event (`subs`) and per delivery
/// (`conns`): foldhash, as the main fan-out's [`crate::model::tick::KeyMap`]
/// (SipHash was a fifth of the endpoint thread's instructions).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::binance::depth::{Batch, Mirror, speed_index};
use crate::binance::encode::{self, DepthUpdate, TimeUnit};
use crate::binance::klines::{KlineStore, kline_event};
use crate::binance::outbox::{Flushed, Outbox, Pushed};
use crate::binance::streams::{KINDS, StreamKind, StreamName, SymbolMap};
use crate::model::book::{Book, DepthClass, Level, window_diff};
use crate::model::tick::{Channel, Event, Tick};
use crate::pipeline::ingest::RingItem;
use crate::wire::frame::{FrameBuilder, OPCODE_TEXT, close_code};

/// A connection's id in the hub (never reused).
pub type ConnId = u64;

/// One connection as the hub sees it.
struct Conn {
    /// Where its stream events go (shared with its session, which queues
    /// its replies there too); full means it cannot keep up.
    out: Rc<RefCell<Outbox>>,
    /// `combined` property: events wrapped in `{"stream":…,"data":…}`.
    combined: bool,
    /// `E`/`T` unit chosen at connect time.
    unit: TimeUnit,
    /// Its streams, in subscription order (LIST_SUBSCRIPTIONS).
    streams: Vec<StreamName>,
}

/// A tickwire symbol's Binance names, cached by symbol id.
struct Names {
    /// The tickwire symbol these were made from (ids may be reused).
    tickwire: Arc<str>,
    /// Uppercase Binance symbol, as payloads carry it.
    upper: Arc<str>,
    /// Lowercase, as stream names carry it.
    lower: Arc<str>,
}

/// Why a subscribe was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("invalid stream name `{0}`")]
    BadName(String),
    #[error("a connection can listen to at most {limit} streams; this would make {would}")]
    TooMany { limit: usize, would: usize },
}

/// Every connection of the endpoint and who listens to what.
pub struct Hub {
    /// tickwire ↔ Binance symbols.
    map: Arc<SymbolMap>,
    /// `--binance-max-streams`.
    max_streams: usize,
    /// Connections by id.
    conns: FastMap<ConnId, Conn>,
    /// The next connection id.
    next_id: ConnId,
    /// Subscribers per lowercase symbol, per stream kind.
    subs: FastMap<Arc<str>, [Vec<ConnId>; KINDS]>,
    /// Indexed by symbol id.
    names: Vec<Option<Names>>,
    /// Books by lowercase symbol, with their pending depth batches.
    books: FastMap<Arc<str>, Mirror>,
    /// Books updated since the last 100 ms flush (`fast` batch pending).
    dirty_fast: Vec<Arc<str>>,
    /// Books with a 1000 ms batch pending.
    dirty_slow: Vec<Arc<str>>,
    /// Streams subscribed over all connections, shown to tests and
    /// operators ([`crate::server::ServerHandle::binance_streams`]).
    streams_gauge: Arc<AtomicUsize>,
    /// Recent klines per symbol, for `/api/v3/klines`, and the trades
    /// seen of each current bar (`f`, `L`, `Q`).
    klines: KlineStore,
    /// Outboxes queued for since the last [`Hub::write_queued`]: each is
    /// written once per batch however many events it got.
    queued: RefCell<Vec<Rc<RefCell<Outbox>>>>,
}

/// A stream's payload in each of its four encodings, made on first use.
struct Encoded<'a> {
    /// The stream's symbol and kind, named only for the combined wrapper
    /// (a raw subscriber never pays for the name).
    stream: (&'a str, StreamKind),
    /// `[raw ms, raw µs, combined ms, combined µs]`, whole text frames.
    cache: [Option<Bytes>; 4],
    /// Writes the raw payload in a unit.
    write: &'a dyn Fn(&mut Vec<u8>, TimeUnit),
}

impl Encoded<'_> {
    /// The frame for one encoding, framed once and shared (payloads are
    /// written as UTF-8 by [`encode`]).
    fn get(&mut self, combined: bool, unit: TimeUnit) -> Bytes {
        let i = usize::from(combined) * 2 + unit as usize;
        if let Some(f) = &self.cache[i] {
            return f.clone();
        }
        let mut frame = FrameBuilder::with_capacity(192);
        if combined {
            let (symbol, kind) = self.stream;
            let name = format!("{symbol}{}", kind.suffix());
            encode::combined_into(frame.payload(), &name, |out| (self.write)(out, unit));
        } else {
            (self.write)(frame.payload(), unit);
        }
        let f = frame.finish(OPCODE_TEXT);
        self.cache[i] = Some(f.clone());
        f
    }
}

impl Hub {
    pub fn new(
        map: Arc<SymbolMap>,
        max_streams: usize,
        kline_rows: usize,
        streams_gauge: Arc<AtomicUsize>,
    ) -> Hub {
        Hub {
            klines: KlineStore::new(kline_rows),
            map,
            max_streams,
            conns: FastMap::default(),
            next_id: 1,
            subs: FastMap::default(),
            names: Vec::new(),
            books: FastMap::default(),
            dirty_fast: Vec::new(),
            dirty_slow: Vec::new(),
            streams_gauge,
            queued: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn register(
        &mut self,
        out: Rc<RefCell<Outbox>>,
        combined: bool,
        unit: TimeUnit,
    ) -> ConnId {
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Conn {
                out,
                combined,
                unit,
                streams: Vec::new(),
            },
        );
        id
    }

    /// Forgets a connection and its subscriptions (idempotent).
    pub fn remove(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            for s in &c.streams {
                self.drop_sub(s, id);
            }
        }
    }

    fn drop_sub(&mut self, s: &StreamName, id: ConnId) {
        self.streams_gauge.fetch_sub(1, Ordering::Relaxed);
        if let Some(lists) = self.subs.get_mut(&s.symbol) {
            lists[s.kind.index()].retain(|c| *c != id);
            if lists.iter().all(Vec::is_empty) {
                self.subs.remove(&s.symbol);
            }
        }
    }

    /// Adds streams (all or none); already subscribed ones are kept once.
    /// Returns the frames to send now, after the request's reply: the
    /// current partial depth and open kline of the new streams.
    pub fn subscribe(
        &mut self,
        id: ConnId,
        names: &[String],
    ) -> Result<Vec<Bytes>, SubscribeError> {
        let mut parsed = Vec::with_capacity(names.len());
        for n in names {
            parsed.push(StreamName::parse(n).ok_or_else(|| SubscribeError::BadName(n.clone()))?);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(Vec::new());
        };
        let mut new: Vec<StreamName> = Vec::new();
        for p in parsed {
            if !conn.streams.contains(&p) && !new.contains(&p) {
                new.push(p);
            }
        }
        let would = conn.streams.len() + new.len();
        if would > self.max_streams {
            return Err(SubscribeError::TooMany {
                limit: self.max_streams,
                would,
            });
        }
        conn.streams.extend(new.iter().cloned());
        let (combined, unit) = (conn.combined, conn.unit);
        let mut now_frames = Vec::new();
        for s in new {
            if let StreamKind::Partial { levels, .. } = s.kind
                && let Some(m) = self.books.get(&s.symbol).filter(|m| m.last_u > 0)
            {
                let levels = m.book.window(usize::from(levels));
                let mut e = Encoded {
                    stream: (&s.symbol, s.kind),
                    cache: Default::default(),
                    write: &|out, _| encode::partial_depth(out, m.last_u, &levels),
                };
                now_frames.push(e.get(combined, unit));
            }
            // The open kline now (Binance pushes it every second or two
            // even when it does not change; tickwire sends changes only).
            if let StreamKind::Kline(iv) = s.kind
                && let Some(k) = self.klines.open(&s.symbol.to_ascii_uppercase(), iv)
            {
                let upper = s.symbol.to_ascii_uppercase();
                let now = crate::model::tick::wall_clock_ns();
                let mut e = Encoded {
                    stream: (&s.symbol, s.kind),
                    cache: Default::default(),
                    write: &|out, unit| kline_event(out, k, &upper, now, unit),
                };
                now_frames.push(e.get(combined, unit));
            }
            self.subs.entry(s.symbol.clone()).or_default()[s.kind.index()].push(id);
            self.streams_gauge.fetch_add(1, Ordering::Relaxed);
        }
        Ok(now_frames)
    }

    /// Removes streams; names not subscribed (or not valid) are ignored, as
    /// on Binance.
    pub fn unsubscribe(&mut self, id: ConnId, names: &[String]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let gone: Vec<StreamName> = names
            .iter()
            .filter_map(|n| StreamName::parse(n))
            .filter(|s| conn.streams.contains(s))
            .collect();
        conn.streams.retain(|s| !gone.contains(s));
        for s in &gone {
            self.drop_sub(s, id);
        }
    }

    /// The connection's streams, in subscription order.
    pub fn list(&self, id: ConnId) -> Vec<String> {
        self.conns
            .get(&id)
            .map(|c| c.streams.iter().map(StreamName::to_name).collect())
            .unwrap_or_default()
    }

    pub fn set_combined(&mut self, id: ConnId, combined: bool) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.combined = combined;
        }
    }

    pub fn combined(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.combined)
    }

    /// Connections held (for tests and logs).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The klines kept (for `/api/v3/klines`).
    pub fn klines(&self) -> &KlineStore {
        &self.klines
    }

    /// The cached Binance names of a tick's symbol.
    fn names_of(&mut self, t: &Tick) -> (Arc<str>, Arc<str>) {
        let idx = t.key.symbol() as usize;
        if self.names.len() <= idx {
            self.names.resize_with(idx + 1, || None);
        }
        let fresh = match &self.names[idx] {
            Some(n) => !(Arc::ptr_eq(&n.tickwire, &t.sym) || *n.tickwire == *t.sym),
            None => true,
        };
        if fresh {
            let upper = self.map.binance_of(&t.sym);
            self.names[idx] = Some(Names {
                tickwire: t.sym.clone(),
                lower: upper.to_ascii_lowercase().into(),
                upper: upper.into(),
            });
        }
        let n = self.names[idx].as_ref().expect("set above");
        (n.upper.clone(), n.lower.clone())
    }

    /// Delivers one ring item to every subscriber of the streams it feeds.
    pub fn deliver(&mut self, item: &RingItem) {
        let t = &item.tick;
        let (upper, lower) = self.names_of(t);
        let mut doomed = Vec::new();
        match t.key.channel() {
            Channel::Trade => {
                self.klines.on_trade(&upper, t);
                for (kind, agg) in [(StreamKind::Trade, false), (StreamKind::AggTrade, true)] {
                    let write = |out: &mut Vec<u8>, unit| encode::trade(out, t, &upper, unit, agg);
                    self.send(&lower, kind, &write, &mut doomed);
                }
            }
            Channel::Quote => {
                let write = |out: &mut Vec<u8>, _| encode::book_ticker(out, t, &upper);
                self.send(&lower, StreamKind::BookTicker, &write, &mut doomed);
            }
            Channel::Book => self.deliver_book(item, &upper, &lower),
            Channel::Bar1s | Channel::Bar1m | Channel::Bar1h | Channel::Bar1d => {
                if let Event::Bar(bar) = &t.event {
                    let k = self.klines.on_bar(&upper, bar);
                    let write = |out: &mut Vec<u8>, unit| {
                        kline_event(out, &k, &upper, t.rx, unit);
                    };
                    self.send(&lower, StreamKind::Kline(bar.interval), &write, &mut doomed);
                }
            }
        }
        self.drop_doomed(doomed);
    }

    /// A book update: its levels (from the full-depth message, or the
    /// difference a snapshot makes) join the book's pending 100 ms batch;
    /// [`Hub::flush_depth`] sends them.
    fn deliver_book(&mut self, item: &RingItem, upper: &Arc<str>, lower: &Arc<str>) {
        let t = &item.tick;
        let Some(frames) = &item.book else { return };
        let mirror = self
            .books
            .entry(lower.clone())
            .or_insert_with(|| Mirror::new(upper.clone()));
        if mirror.fast.is_empty() {
            self.dirty_fast.push(lower.clone());
        }
        // An update that changed no level (no full-depth message) still
        // advances `u`, so every client sees an unbroken `U` = `u` + 1 chain.
        let msg = frames.class(DepthClass::Full).msg.as_ref();
        let levels: Vec<Level> = match msg {
            None => Vec::new(),
            Some(m) if m.snapshot => {
                let mut next = Book::new();
                for l in &m.levels {
                    next.set(l.side, l.px, l.sz);
                }
                let d = window_diff(&mirror.book.window(usize::MAX), &m.levels);
                mirror.book = next;
                d
            }
            Some(m) => {
                for l in &m.levels {
                    mirror.book.set(l.side, l.px, l.sz);
                }
                m.levels.clone()
            }
        };
        mirror.record(msg.map_or(t.seq, |m| m.from), t.seq, t.rx, &levels);
    }

    /// Ends a 100 ms window (and a 1000 ms one when `slow`): each book's
    /// merged batch goes out once, encoded once per encoding, on
    /// `@depth@100ms` (`@depth`), and each `@depthN@100ms` (`@depthN`)
    /// window that changed is sent.
    pub fn flush_depth(&mut self, slow: bool) {
        let mut doomed = Vec::new();
        for lower in std::mem::take(&mut self.dirty_fast) {
            let Some(m) = self.books.get_mut(&lower) else {
                continue;
            };
            let batch = std::mem::take(&mut m.fast);
            if m.slow.is_empty() {
                self.dirty_slow.push(lower.clone());
            }
            m.slow.absorb(&batch);
            m.settle(&batch);
            self.send_batch(&lower, &batch, true, &mut doomed);
        }
        self.send_windows(true, &mut doomed);
        if slow {
            for lower in std::mem::take(&mut self.dirty_slow) {
                let Some(m) = self.books.get_mut(&lower) else {
                    continue;
                };
                let batch = std::mem::take(&mut m.slow);
                self.send_batch(&lower, &batch, false, &mut doomed);
            }
            self.send_windows(false, &mut doomed);
        }
        self.drop_doomed(doomed);
    }

    /// One merged batch on `@depth` (`fast`: `@depth@100ms`).
    fn send_batch(&self, lower: &Arc<str>, batch: &Batch, fast: bool, doomed: &mut Vec<ConnId>) {
        if batch.is_empty() || !self.has_subs(lower, StreamKind::Depth { fast }) {
            return;
        }
        let levels = batch.levels();
        let update = DepthUpdate {
            symbol: &self.books[lower].upper,
            first: batch.first,
            last: batch.last,
            event_ns: batch.event_ns,
            levels: &levels,
        };
        let write = |out: &mut Vec<u8>, unit| encode::depth_update(out, &update, unit);
        self.send(lower, StreamKind::Depth { fast }, &write, doomed);
    }

    /// The `@depthN` windows of one speed that changed since last sent.
    fn send_windows(&mut self, fast: bool, doomed: &mut Vec<ConnId>) {
        let speed = speed_index(fast);
        let touched: Vec<Arc<str>> = self
            .books
            .iter_mut()
            .filter_map(|(k, m)| std::mem::take(&mut m.touched[speed]).then(|| k.clone()))
            .collect();
        for lower in touched {
            for n in [5u8, 10, 20] {
                let kind = StreamKind::Partial { levels: n, fast };
                if !self.has_subs(&lower, kind) {
                    continue;
                }
                let m = self.books.get_mut(&lower).expect("listed above");
                let window = m.book.window(usize::from(n));
                if !m.window_changed((n, fast), &window) {
                    continue;
                }
                let last_u = m.last_u;
                let write = |out: &mut Vec<u8>, _| encode::partial_depth(out, last_u, &window);
                self.send(&lower, kind, &write, doomed);
            }
        }
    }

    fn has_subs(&self, lower: &Arc<str>, kind: StreamKind) -> bool {
        self.subs
            .get(lower)
            .is_some_and(|l| !l[kind.index()].is_empty())
    }

    /// Disconnects the connections whose queue was full: their Close goes
    /// out after what they have queued, and they get nothing more.
    fn drop_doomed(&mut self, doomed: Vec<ConnId>) {
        for id in doomed {
            tracing::info!(conn = id, "binance: client cannot keep up; disconnected");
            if let Some(c) = self.conns.get(&id) {
                c.out
                    .borrow_mut()
                    .close(close_code::POLICY, "Client cannot keep up");
                self.mark_queued(&c.out);
            }
            self.remove(id);
        }
    }

    /// Puts an outbox on the list [`Hub::write_queued`] writes.
    fn mark_queued(&self, out: &Rc<RefCell<Outbox>>) {
        let mut o = out.borrow_mut();
        if !o.dirty {
            o.dirty = true;
            self.queued.borrow_mut().push(out.clone());
        }
    }

    /// Writes every outbox queued for since the last call, once each: the
    /// end of a ring batch or depth window. An outbox whose socket is full
    /// is left to its session, woken to wait for room.
    pub fn write_queued(&mut self) {
        let queued = std::mem::take(&mut *self.queued.borrow_mut());
        for out in &queued {
            let mut o = out.borrow_mut();
            o.dirty = false;
            if o.is_blocked() {
                continue; // its session writes once the socket has room
            }
            match o.flush() {
                Ok(Flushed::Drained) => {}
                Ok(Flushed::Blocked | Flushed::Closed) | Err(_) => o.wake().notify_one(),
            }
        }
    }

    /// `/api/v3/depth`'s book: as of the last 100 ms flush, with that
    /// flush's `u` as `lastUpdateId`, so the next `@depth@100ms` event starts
    /// at `lastUpdateId` + 1 and the next `@depth` event spans it. `None`
    /// when the hub cannot tell ([`Mirror::snapshot`]).
    pub fn depth_snapshot(&self, lower: &str) -> Option<(u64, Vec<Level>)> {
        self.books.get(lower)?.snapshot()
    }

    /// Sends one stream's payload to its subscribers, encoding it on first
    /// need; a subscriber whose queue is full or gone is put in `doomed`.
    fn send(
        &self,
        lower: &Arc<str>,
        kind: StreamKind,
        write: &dyn Fn(&mut Vec<u8>, TimeUnit),
        doomed: &mut Vec<ConnId>,
    ) {
        let Some(list) = self.subs.get(lower).map(|l| &l[kind.index()]) else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let mut e = Encoded {
            stream: (lower, kind),
            cache: Default::default(),
            write,
        };
        for id in list {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            let pushed = c.out.borrow_mut().push_event(e.get(c.combined, c.unit));
            match pushed {
                Pushed::Queued => self.mark_queued(&c.out),
                Pushed::Full if !doomed.contains(id) => doomed.push(*id),
                Pushed::Full => {}
            }
        }
    }
}
