//! A worker's clients and which keys each one wants: the subscription
//! index the ring reader consults for every tick.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

use super::reach::Reach;
use super::{Client, ClientId, Flushed, HistorySource};
use crate::model::symbols::{SymbolHold, SymbolTable};
use crate::model::tick::{Channel, ChannelSet, KeyId, KeyMap, SymbolId};
use crate::net::transport::Transport;
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::Stats;
use crate::wire::encode::Encoding;

/// A worker's clients and subscription index.
#[derive(Default)]
pub struct WorkerState {
    pub(crate) clients: Slab<Client>,
    /// Clients that subscribed to a key by name.
    index: KeyMap<Vec<ClientId>>,
    /// Clients subscribed to `*`, per channel (never `book`).
    star: [Vec<ClientId>; 7],
    dirty: Vec<ClientId>,
    /// On a gateway: told when a key gains its first or loses its last
    /// subscriber here, so the node takes from the bus only what it needs.
    interest: Option<Arc<dyn InterestSink>>,
    /// The symbol table, to hold the names subscribed here: a name nobody
    /// has published stays assigned while a key of it is in `index`.
    /// `None` in benchmarks, whose symbols are all published.
    symbols: Option<Arc<SymbolTable>>,
    /// One hold per symbol with a key in `index`, with the count of its
    /// keys there (one per channel).
    holds: HashMap<SymbolId, (usize, SymbolHold)>,
    /// The shared history and how far this worker has delivered, for the
    /// clients' catch-up cursors; `None` for a bare state (benchmarks).
    history: Option<HistorySource>,
    /// Clients with a book snapshot held until delivery passes its last
    /// update (`hold_snapshots`); may name clients gone since.
    holding: Vec<ClientId>,
    /// Live deliveries and distinct clients reached in the coalescing
    /// window's measuring period under way: its per-client rate.
    reach: Reach,
    /// Number of that period: a client whose `reach_period` equals it was
    /// already counted. New clients hold 0, which no period has once
    /// the first one started (`take_reach`).
    reach_period: u16,
}

/// Told when a key gains its first or loses its last subscriber on a
/// worker, and the same for `*` per channel: a gateway's bus link holds only
/// the NATS subscriptions its clients need. Off the per-tick path.
pub(crate) trait InterestSink: Send + Sync {
    fn add(&self, key: KeyId);
    fn remove(&self, key: KeyId);
    fn add_star(&self, ch: Channel);
    fn remove_star(&self, ch: Channel);
}

fn remove_id(list: &mut Vec<ClientId>, id: ClientId) {
    if let Some(pos) = list.iter().position(|&c| c == id) {
        list.swap_remove(pos);
    }
}

impl WorkerState {
    /// A worker state that holds the names its clients subscribe to in
    /// `symbols` and reports its keys' interest to the bus.
    pub(crate) fn new(
        symbols: Arc<SymbolTable>,
        interest: Option<Arc<dyn InterestSink>>,
    ) -> WorkerState {
        WorkerState {
            interest,
            symbols: Some(symbols),
            ..WorkerState::default()
        }
    }

    /// What the measuring period reached, starting the next one.
    pub(crate) fn take_reach(&mut self) -> Reach {
        // Never 0, the number a new client starts with.
        self.reach_period = self.reach_period.wrapping_add(1).max(1);
        std::mem::take(&mut self.reach)
    }

    /// Gives this worker's clients the shared history to catch up from.
    pub(crate) fn attach_history(&mut self, ingest: Arc<crate::pipeline::ingest::Ingest>) {
        // Ticks sequenced before the worker started (restored from a
        // journal) never pass through its ring: they count as delivered,
        // so a resume from before them reads them from the history.
        let delivered = ingest.newest_offset();
        self.history = Some(HistorySource {
            ingest,
            delivered: std::rc::Rc::new(std::cell::Cell::new(delivered)),
        });
    }

    /// The offset of the last tick this worker handed to its clients.
    pub(crate) fn delivered(&self) -> u64 {
        self.history.as_ref().map_or(0, |h| h.delivered.get())
    }

    fn index_add(&mut self, key: KeyId, id: ClientId) {
        let list = self.index.entry(key).or_default();
        if list.is_empty() {
            if let Some(i) = &self.interest {
                i.add(key);
            }
            if let Some(table) = &self.symbols {
                let sid = key.symbol();
                match self.holds.get_mut(&sid) {
                    Some((keys, _)) => *keys += 1,
                    // The subscribe's own hold keeps the id assigned here.
                    None => {
                        if let Some(hold) = table.hold_id(sid) {
                            self.holds.insert(sid, (1, hold));
                        }
                    }
                }
            }
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
                let sid = key.symbol();
                if let Some((keys, _)) = self.holds.get_mut(&sid) {
                    *keys -= 1;
                    if *keys == 0 {
                        self.holds.remove(&sid);
                    }
                }
                // Give back what a burst of subscriptions grew them to.
                for cap in [self.index.capacity(), self.holds.capacity()] {
                    if cap > 64 && self.index.len() < cap / 4 {
                        self.index.shrink_to_fit();
                        self.holds.shrink_to_fit();
                        break;
                    }
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

    pub(crate) fn add_client(
        &mut self,
        write: Transport,
        stats: Arc<Stats>,
        cap: usize,
        encoding: Encoding,
    ) -> ClientId {
        let mut c = Client::new(Some(write), stats, cap, encoding);
        c.catchup.source = self.history.clone();
        self.clients.insert(c)
    }

    /// A client with no socket, whose output stays in memory until
    /// [`Client::take_output`]: for benchmarks of the fan-out path itself.
    pub fn add_in_memory_client(&mut self, stats: Arc<Stats>, cap: usize) -> ClientId {
        self.add_in_memory_client_with(stats, cap, Encoding::Json)
    }

    /// [`WorkerState::add_in_memory_client`] in a chosen encoding.
    pub(crate) fn add_in_memory_client_with(
        &mut self,
        stats: Arc<Stats>,
        cap: usize,
        encoding: Encoding,
    ) -> ClientId {
        self.clients.insert(Client::new(None, stats, cap, encoding))
    }

    /// Removes a client and every subscription it held.
    pub(crate) fn remove_client(&mut self, id: ClientId) -> Option<Client> {
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

    pub(crate) fn subscribe_star(&mut self, id: ClientId, channels: ChannelSet) {
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
    pub(crate) fn unsubscribe_keys(&mut self, id: ClientId, keys: &[KeyId]) {
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
        for key in &removed {
            // A name nobody published may be forgotten and its id given to
            // another: the client is told the id again if it comes back.
            // (A symbol's two keys differ in the lowest bit only.)
            if !c.is_subscribed(KeyId(key.0 ^ 1)) {
                c.forget_id(key.symbol());
            }
        }
        for key in removed {
            self.index_remove(key, id);
        }
    }

    pub(crate) fn unsubscribe_star(&mut self, id: ClientId, channels: ChannelSet) {
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

    /// Queues snapshot ticks (newer than what the client already has).
    pub(crate) fn offer_snapshots(&mut self, id: ClientId, items: &[RingItem]) {
        if let Some(c) = self.clients.get_mut(id) {
            for item in items {
                c.offer(item, true);
            }
            self.mark_dirty(id);
        }
    }

    pub(super) fn mark_dirty(&mut self, id: ClientId) {
        if let Some(c) = self.clients.get_mut(id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Book snapshots for `id` that hold updates the journal has not
    /// written yet: each is sent when delivery reaches its last update's
    /// offset, before that update (which the snapshot holds, so it is
    /// filtered by `seq`); live diffs before it are dropped meanwhile.
    pub(crate) fn hold_snapshots(&mut self, id: ClientId, held: Vec<(u64, RingItem)>) {
        if held.is_empty() {
            return;
        }
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        for (offset, snap) in held {
            c.resume_after(snap.tick.key, snap.tick.seq.saturating_sub(1));
            c.held_books.push((offset, snap));
        }
        if !self.holding.contains(&id) {
            self.holding.push(id);
        }
    }

    /// Sends the held snapshots whose last update is at or below `upto`.
    fn release_held(&mut self, upto: u64) {
        let mut holding = std::mem::take(&mut self.holding);
        holding.retain(|&id| {
            let Some(c) = self.clients.get_mut(id) else {
                return false;
            };
            let mut due = Vec::new();
            c.held_books.retain(|(o, snap)| {
                let now = *o <= upto;
                if now {
                    due.push(snap.clone());
                }
                !now
            });
            for snap in &due {
                // Not if the key was unsubscribed meanwhile.
                if c.is_subscribed(snap.tick.key) {
                    c.offer(snap, true);
                }
            }
            let more = !c.held_books.is_empty();
            if !due.is_empty() {
                self.mark_dirty(id);
            }
            more
        });
        self.holding = holding;
    }

    /// Hands one ring item to every subscriber of its key.
    pub fn deliver(&mut self, item: &RingItem) {
        let key = item.tick.key;
        if let Some(h) = &self.history {
            // Before the offers: a cursor that reads up to here includes
            // this tick, which it is the cursor's to give.
            h.delivered.set(item.offset);
        }
        if !self.holding.is_empty() {
            self.release_held(item.offset);
        }
        let WorkerState {
            clients,
            index,
            star,
            dirty,
            reach,
            reach_period,
            ..
        } = self;
        let named = index.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let everyone = &star[key.channel() as usize];
        for &id in named.iter().chain(everyone.iter()) {
            let c = &mut clients[id];
            if !c.offer(item, false) {
                continue;
            }
            // Two adds and a compare on a line the offer just touched.
            reach.deliveries += 1;
            if c.reach_period != *reach_period {
                c.reach_period = *reach_period;
                reach.clients += 1;
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
    pub(crate) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            self.flush_client(id);
        }
        self.dirty = dirty;
    }

    /// Flushes one client unless its writer task is already waiting on it.
    pub(crate) fn flush_client(&mut self, id: ClientId) {
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
        Ok(Flushed::Blocked | Flushed::Paused) => c.writer_wake.notify_one(),
        Ok(Flushed::Drained) => {}
        Ok(Flushed::Closed) => c.closed_wait(),
        Err(e) => {
            tracing::debug!(client = id, error = %e, "write failed; dropping client");
            c.abandon();
        }
    }
}
