//! A worker's tasks: the ring reader that delivers each batch and flushes,
//! and each client's writer task (writability, eviction, close deadline).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::coalesce::{Change, CoalesceConfig, Coalescer};
use super::{ClientId, Flushed, WorkerState};
use crate::model::epoch::Epoch;
use crate::model::feed::FeedStatus;
use crate::pipeline::ingest::{Ingest, RingItem};
use crate::pipeline::stats::Stats;
use crate::wire::encode::Encoding;
use crate::wire::frame::close_code;
use crate::wire::message::{lagging_message, sse_lagging_event, status_message};

/// Ring items read per batch: everything available up to this is
/// delivered before any client is written to.
const RING_BATCH: usize = 1024;

/// Batches delivered back to back (a producer on another thread keeping
/// the ring busy) before the fan-out gives way to the sessions regardless.
const MAX_UNYIELDED_BATCHES: u32 = 8;

/// The Close reason when a gateway's feed epoch changes.
pub(crate) const EPOCH_CHANGED: &str = "feed epoch changed: reconnect and resume";

/// Everything a worker's tasks share.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) state: std::cell::RefCell<WorkerState>,
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) stats: Arc<Stats>,
    /// A client behind for longer than this is evicted (`--evict-after`).
    pub(crate) evict_after: Duration,
    /// After sending a Close, how long to wait for the peer's
    /// (`--close-timeout`).
    pub(crate) close_timeout: Duration,
    /// On a gateway, the feed's status: every client is told when it
    /// changes. `None` where the feed cannot go stale.
    pub(crate) status: Option<watch::Receiver<FeedStatus>>,
    /// Bounds of the coalescing window a busy worker's passes wait for
    /// (`--coalesce-max-window`, `--coalesce-busy`, `--coalesce-paying-busy`,
    /// `--coalesce-min-yield`).
    pub(crate) coalesce: CoalesceConfig,
}

/// This worker's share of the coalescing gauges, taken back when its
/// fan-out task ends.
struct WindowGauges {
    stats: Arc<Stats>,
    /// 1 while this worker's window is open, as last shown.
    open: i64,
    /// This worker's window as last shown, nanoseconds.
    window_ns: i64,
    /// 1 while holding pays for this worker's clients, as last shown.
    paying: i64,
}

impl WindowGauges {
    fn show(&mut self, window: &Coalescer) {
        let open = i64::from(window.is_open());
        let ns = window.window().as_nanos() as i64;
        let paying = i64::from(window.pays());
        if (open, ns, paying) == (self.open, self.window_ns, self.paying) {
            // The usual pass: nothing to show, no shared counter touched.
            return;
        }
        Stats::gauge(&self.stats.coalesce_open, open - self.open);
        Stats::gauge(&self.stats.coalesce_window_ns, ns - self.window_ns);
        Stats::gauge(&self.stats.coalesce_paying, paying - self.paying);
        (self.open, self.window_ns, self.paying) = (open, ns, paying);
    }
}

impl Drop for WindowGauges {
    fn drop(&mut self) {
        Stats::gauge(&self.stats.coalesce_open, -self.open);
        Stats::gauge(&self.stats.coalesce_window_ns, -self.window_ns);
        Stats::gauge(&self.stats.coalesce_paying, -self.paying);
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

    /// Closes every client of this worker because the feed's `seq`
    /// numbering restarted (a gateway adopting a new epoch from its ingest
    /// node): the positions they hold mean nothing in the new one, and
    /// their per-key "newest `seq` sent" would hide the new numbering's
    /// ticks. They reconnect, read the new epoch in `hello`, and resume
    /// (`other_epoch`: the snapshot).
    fn close_all_for_new_epoch(&self, st: &mut WorkerState, epoch: Epoch) {
        let ids: Vec<ClientId> = st.clients.iter().map(|(id, _)| id).collect();
        tracing::info!(%epoch, clients = ids.len(), "feed epoch changed: closing clients");
        for id in ids {
            if let Some(c) = st.client(id) {
                c.close(
                    close_code::SERVICE_RESTART,
                    EPOCH_CHANGED,
                    self.close_timeout,
                );
                st.mark_dirty(id);
            }
        }
    }

    /// The worker's ring-reading loop: deliver each batch, then flush every
    /// client that got something, in one write each.
    pub(crate) async fn run_fanout(
        self: Rc<Self>,
        mut reader: crate::pipeline::ingest::IngestReader,
        mut shutdown: crate::shutdown::Shutdown,
    ) {
        let mut batch: Vec<RingItem> = Vec::with_capacity(RING_BATCH);
        let mut status = self.status.clone();
        // The epoch of the ticks delivered so far: only a gateway's ever
        // changes (its ingest node restarted `seq`).
        let mut epoch: Option<Epoch> = None;
        // Batches delivered since the task last gave way to the sessions.
        let mut unyielded = 0;
        let mut window = Coalescer::new(self.coalesce);
        let mut gauges = WindowGauges {
            stats: self.stats.clone(),
            open: 0,
            window_ns: 0,
            paying: 0,
        };
        // The last batch filled RING_BATCH: more is waiting, never held.
        let mut backlog = false;
        loop {
            batch.clear();
            if let Some(rx) = &mut status
                && rx.has_changed().unwrap_or(false)
            {
                let now = rx.borrow_and_update().clone();
                self.broadcast_status(&now);
            }
            if reader.read_batch(&mut batch, RING_BATCH) == 0 {
                unyielded = 0;
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
            if !backlog {
                match self.hold(&window, &mut shutdown).await {
                    None => return,
                    Some(true) => {
                        // What reached the ring while the pass waited joins it.
                        let room = RING_BATCH - batch.len();
                        reader.read_batch(&mut batch, room);
                    }
                    Some(false) => {}
                }
            }
            let start = Instant::now();
            {
                let mut st = self.state.borrow_mut();
                for item in &batch {
                    if epoch.is_some_and(|e| e != item.epoch) {
                        self.close_all_for_new_epoch(&mut st, item.epoch);
                    }
                    epoch = Some(item.epoch);
                    st.deliver(item);
                }
                st.flush_dirty();
            }
            let reach = || self.state.borrow_mut().take_reach();
            let change =
                window.pass_done(start, Instant::now(), crate::sys::thread_cpu_time, reach);
            if change != Change::None {
                tracing::debug!(
                    worker = self.id,
                    ?change,
                    window_us = window.window().as_micros() as u64,
                    client_rate = window.client_rate(),
                    pays = window.pays(),
                    "coalescing window"
                );
            }
            if change == Change::Opened {
                Stats::add(&self.stats.coalesce_opened, 1);
            }
            gauges.show(&window);
            backlog = batch.len() == RING_BATCH;
            // Let sessions run between batches, but only when the ring may
            // hold more: after a short batch the next read usually finds it
            // empty and the task waits anyway, and an unconditional yield
            // cost one more `epoll_wait` per tick at light load.
            unyielded += 1;
            if batch.len() == RING_BATCH || unyielded >= MAX_UNYIELDED_BATCHES {
                unyielded = 0;
                tokio::task::yield_now().await;
            }
        }
    }

    /// Waits until the coalescing window allows the next pass (at once
    /// while it is closed): whether it waited, `None` when the server shut
    /// down meanwhile.
    async fn hold(
        &self,
        window: &Coalescer,
        shutdown: &mut crate::shutdown::Shutdown,
    ) -> Option<bool> {
        let now = Instant::now();
        let Some(until) = window.hold_until().filter(|&u| u > now) else {
            return Some(false);
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.triggered() => return None,
        }
        Stats::add(&self.stats.coalesce_holds, 1);
        Stats::add(
            &self.stats.coalesce_held_ns,
            now.elapsed().as_nanos() as u64,
        );
        Some(true)
    }

    /// A client's writer task: waits for its socket to drain while it is
    /// blocked, and enforces the slow-consumer and close deadlines.
    pub(crate) async fn run_writer(self: Rc<Self>, id: ClientId, wake: Rc<Notify>) {
        let evict_after = self.evict_after;
        loop {
            wake.notified().await;
            {
                // Not blocked: woken by a journal read with a chunk ready
                // for the client's cursor (catchup.rs), taken by a flush.
                let mut st = self.state.borrow_mut();
                match st.clients.get(id) {
                    None => return,
                    Some(c) if !c.is_blocked() && c.catchup.is_catching_up() => st.flush_client(id),
                    Some(_) => {}
                }
            }
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
                        let paused = {
                            let mut st = self.state.borrow_mut();
                            let Some(c) = st.client(id) else { return };
                            match ready.and_then(|()| c.flush()) {
                                Ok(Flushed::Closed) => {
                                    c.closed_wait();
                                    false
                                }
                                Ok(Flushed::Paused) => true,
                                Ok(_) => false,
                                Err(_) => {
                                    c.abandon();
                                    false
                                }
                            }
                        };
                        if paused {
                            // A catch-up slice went out and the socket may
                            // well take the next at once: let the fan-out
                            // and the other clients run first.
                            tokio::task::yield_now().await;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        drop(write);
                        let mut st = self.state.borrow_mut();
                        let Some(c) = st.client(id) else { return };
                        if c.is_closing() {
                            // It did not even take the Close frame: cut it off.
                            c.abandon();
                        } else if c.catchup.is_catching_up() {
                            // Reading the history: not evicted for being
                            // behind (catchup.rs handles falling out).
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
