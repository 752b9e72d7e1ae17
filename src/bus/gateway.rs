//! A gateway's side of the bus: subscribe to the keys local clients want,
//! feed their ticks into the local ring, serve snapshots from the
//! last-value store, and report the feed stale when the ingest node's
//! heartbeat stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::stream::{AbortHandle, Abortable, SelectAll};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::heartbeat::Heartbeats;
use super::interest::{Command, Interest};
use super::last_values::{LastValueStream, localize, read_keys};
use super::link::{self, Bus, BusLink, connect, is_connected};
use super::subject::Subjects;
use super::{BusConfig, BusError, Role, payload};
use crate::model::epoch::Epoch;
use crate::model::feed::FeedStatus;
use crate::model::tick::{Channel, ChannelSet, KeyId, Tick, wall_clock_ns};
use crate::pipeline::ingest::Ingest;
use crate::pipeline::stats::Stats;
use crate::shutdown::Shutdown;

/// Bus messages taken in one go, and so ticks published to the ring in one
/// batch.
const BATCH: usize = 1024;

/// Starts a gateway's bus link. It connects in the background (the
/// gateway serves its clients, with a stale feed, until NATS answers).
pub(crate) fn start_gateway(
    config: BusConfig,
    ingest: Arc<Ingest>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<Bus, BusError> {
    let (interest, commands) = Interest::new();
    let interest = Arc::new(interest);
    let (status_tx, status) = watch::channel(FeedStatus::Stale {
        reason: "not yet connected to the message bus".into(),
        since_ns: wall_clock_ns(),
    });
    Stats::gauge_set(&stats.bus.feed_stale, 1);
    let gw_interest = interest.clone();
    let thread = link::spawn_thread(move || async move {
        let reconnected = Arc::new(AtomicBool::new(false));
        let client = match connect(&config, &stats, reconnected.clone()).await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::error!(error = %e, "gateway cannot use the bus");
                return;
            }
        };
        let (caught_up_tx, caught_up) = mpsc::unbounded_channel();
        let gw = Gateway {
            subjects: Subjects::new(&config.prefix),
            stream: LastValueStream::new(jetstream::new(client.clone()), config.stream.clone()),
            client,
            config,
            ingest,
            interest: gw_interest,
            stats,
            status: status_tx,
            key_subs: HashMap::new(),
            star_subs: std::array::from_fn(|_| None),
            subs: SelectAll::new(),
            live: HashSet::new(),
            reconnected,
            heartbeats: Heartbeats::default(),
            msgs: Vec::with_capacity(BATCH),
            ticks: Vec::with_capacity(BATCH),
            caught_up_tx,
        };
        gw.run(commands, caught_up, shutdown).await;
    })?;
    Ok(Bus {
        link: Arc::new(BusLink::new(Role::Gateway, Some(interest), status)),
        thread,
    })
}

/// A gateway's bus thread state.
struct Gateway {
    client: async_nats::Client,
    /// The last-value stream, looked up lazily off the loop.
    stream: LastValueStream,
    subjects: Subjects,
    config: BusConfig,
    /// The local ring the bus's ticks go into, and the local symbol table.
    ingest: Arc<Ingest>,
    /// What local clients want: the subscriptions follow it.
    interest: Arc<Interest>,
    stats: Arc<Stats>,
    /// The feed's status, for the workers.
    status: watch::Sender<FeedStatus>,
    /// One NATS subscription per wanted key, while no `*` covers its
    /// channel, with the symbol it was made for: the id of a name nobody
    /// published can be freed and given to another name in between.
    key_subs: HashMap<KeyId, (Arc<str>, AbortHandle)>,
    /// One wildcard subscription per channel some client wants `*` on
    /// (indexed by `Channel as usize`).
    star_subs: [Option<AbortHandle>; 7],
    /// Every tick subscription, polled as one stream by the gateway loop
    /// (no task or queue per subscription). Aborting one's handle ends it:
    /// it is dropped at the next poll, which sends NATS its `UNSUB`.
    subs: SelectAll<Abortable<async_nats::Subscriber>>,
    /// Keys that got a live tick since the bus last started covering them:
    /// their cached last value is as new as any the bus has delivered, and
    /// anything newer is on its way, so a snapshot needs no JetStream read.
    live: HashSet<KeyId>,
    /// Set by the connection on a reconnect: time to catch up.
    reconnected: Arc<AtomicBool>,
    /// When the ingest node was last heard of: live or stale.
    heartbeats: Heartbeats,
    /// Buffers of the message path, kept to reuse their allocation.
    msgs: Vec<async_nats::Message>,
    ticks: Vec<Tick>,
    /// Where catch-up tasks send what they read, for the loop to publish.
    caught_up_tx: mpsc::UnboundedSender<CaughtUp>,
}

impl Gateway {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut caught_up: mpsc::UnboundedReceiver<CaughtUp>,
        mut shutdown: Shutdown,
    ) {
        let mut heartbeats = loop {
            match self.client.subscribe(self.subjects.heartbeat()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to the heartbeat yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.triggered() => break,
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd).await;
                }
                m = self.subs.next(), if !self.subs.is_empty() => {
                    let Some(m) = m else { continue };
                    self.receive(m).await;
                }
                hb = heartbeats.next() => {
                    let Some(hb) = hb else { break };
                    if let Some(epoch) = self.heartbeats.beat(&hb.payload, Instant::now()) {
                        self.adopt_epoch(epoch);
                    }
                    self.set_status(FeedStatus::Live);
                }
                Some(c) = caught_up.recv() => self.caught_up(c).await,
                _ = check.tick() => self.check(),
            }
        }
    }

    /// Takes `first` and whatever else has arrived as one batch into the
    /// local ring.
    async fn receive(&mut self, first: async_nats::Message) {
        self.msgs.push(first);
        while self.msgs.len() < BATCH {
            match self.subs.next().now_or_never() {
                Some(Some(m)) => self.msgs.push(m),
                _ => break,
            }
        }
        self.ticks.clear();
        let msgs = std::mem::take(&mut self.msgs);
        for m in &msgs {
            Stats::add(&self.stats.bus.received, 1);
            match payload::decode(&m.payload) {
                Ok(t) => {
                    // A tick of a new numbering: what came before it is
                    // published in the old epoch, the rest in the new.
                    if t.epoch.0 != 0 && t.epoch != self.ingest.epoch() {
                        self.ingest.publish_sequenced(&self.ticks).await;
                        self.live.extend(self.ticks.iter().map(|t| t.key));
                        self.ticks.clear();
                        self.adopt_epoch(t.epoch);
                    }
                    self.ticks.extend(localize(&self.ingest, t));
                }
                Err(e) => {
                    Stats::add(&self.stats.bus.malformed, 1);
                    tracing::warn!(subject = %m.subject, error = %e, "dropping a malformed bus message");
                }
            }
        }
        self.msgs = msgs;
        self.msgs.clear();
        self.ingest.publish_sequenced(&self.ticks).await;
        self.live.extend(self.ticks.iter().map(|t| t.key));
    }

    /// Takes the ingest node's epoch as this gateway's; on a change, the
    /// cached last values are of the old numbering and no longer live.
    fn adopt_epoch(&mut self, epoch: Epoch) {
        if self.ingest.adopt_epoch(epoch) {
            self.live.clear();
            tracing::info!(%epoch, "feed epoch from the ingest node");
        }
    }

    /// Every 100 ms: catch up after a reconnect; report the feed stale if
    /// NATS is gone or the heartbeat quiet. Never waits for NATS.
    fn check(&mut self) {
        if self.reconnected.swap(false, Ordering::AcqRel) {
            self.live.clear();
            self.catch_up();
        }
        let reason = self.heartbeats.stale_reason(
            is_connected(&self.client),
            self.config.stale_after,
            Instant::now(),
        );
        if let Some(reason) = reason
            && matches!(*self.status.borrow(), FeedStatus::Live)
        {
            tracing::warn!(reason, "feed is stale");
            self.set_status(FeedStatus::Stale {
                reason,
                since_ns: wall_clock_ns(),
            });
        }
    }

    /// Adds a subscription to the gateway loop's one stream.
    fn poll_with_others(&mut self, sub: async_nats::Subscriber) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        self.subs.push(Abortable::new(sub, registration));
        handle
    }

    fn set_status(&self, s: FeedStatus) {
        let live = s == FeedStatus::Live;
        let changed = self.status.send_if_modified(|cur| {
            let same = matches!(
                (&*cur, &s),
                (FeedStatus::Live, FeedStatus::Live)
                    | (FeedStatus::Stale { .. }, FeedStatus::Stale { .. })
            );
            if !same {
                *cur = s;
            }
            !same
        });
        if changed {
            Stats::gauge_set(&self.stats.bus.feed_stale, i64::from(!live));
            if live {
                tracing::info!("feed is live");
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Key(key) => self.reconcile_key(key).await,
            Command::Star(ch) => self.reconcile_star(ch).await,
            Command::Ready {
                keys,
                star,
                fetch,
                done,
            } => {
                // Changes no subscription: the gauge below stays right.
                self.ready(keys, star, fetch, done).await;
                return;
            }
        }
        Stats::gauge_set(
            &self.stats.bus.subjects,
            (self.key_subs.len() + self.star_subs.iter().flatten().count()) as i64,
        );
    }

    /// Subscribes to `key` or drops its subscription, as interest and `*`
    /// coverage say.
    async fn reconcile_key(&mut self, key: KeyId) {
        let sym = self.ingest.symbols().name(key.symbol());
        let want = self.interest.wants(key)
            && self.star_subs[key.channel() as usize].is_none()
            && sym.is_some();
        // A subscription made for the name this id had before is not one.
        if let Some((old, _)) = self.key_subs.get(&key)
            && sym.as_ref() != Some(old)
            && let Some((_, h)) = self.key_subs.remove(&key)
        {
            self.live.remove(&key);
            h.abort();
        }
        let have = self.key_subs.contains_key(&key);
        if want && !have {
            let Some(sym) = sym else {
                return;
            };
            match self
                .client
                .subscribe(self.subjects.tick(key.channel(), &sym))
                .await
            {
                Ok(sub) => {
                    let h = self.poll_with_others(sub);
                    self.key_subs.insert(key, (sym, h));
                }
                Err(e) => tracing::error!(symbol = %sym, error = %e, "cannot subscribe to the bus"),
            }
        } else if !want && let Some((_, h)) = self.key_subs.remove(&key) {
            if self.star_subs[key.channel() as usize].is_none() {
                self.live.remove(&key);
            }
            h.abort();
        }
    }

    /// Subscribes to `*` on `ch` or drops it, as interest says; the
    /// channel's keys' own subscriptions go while it lasts and come back
    /// when it goes.
    async fn reconcile_star(&mut self, ch: Channel) {
        let want = self.interest.wants_star(ch);
        let have = self.star_subs[ch as usize].is_some();
        let keys = |gw: &Self| -> Vec<KeyId> {
            gw.interest
                .wanted_keys()
                .into_iter()
                .chain(gw.key_subs.keys().copied())
                .filter(|k| k.channel() == ch)
                .collect()
        };
        if want && !have {
            match self
                .client
                .subscribe(self.subjects.channel_wildcard(ch))
                .await
            {
                Ok(sub) => {
                    self.star_subs[ch as usize] = Some(self.poll_with_others(sub));
                    // `*` covers the channel's keys: their own
                    // subscriptions go while it lasts.
                    for k in keys(self) {
                        self.reconcile_key(k).await;
                    }
                }
                Err(e) => {
                    tracing::error!(channel = ch.as_str(), error = %e, "cannot subscribe to the bus")
                }
            }
        } else if !want && let Some(h) = self.star_subs[ch as usize].take() {
            // Keys the wildcard covered and nothing else will now.
            let subs = &self.key_subs;
            let interest = &self.interest;
            self.live
                .retain(|k| k.channel() != ch || subs.contains_key(k) || interest.wants(*k));
            // The keys' own subscriptions come back before the
            // wildcard goes (NATS handles them in this order), so
            // no tick falls between; the overlap is deduplicated.
            for k in keys(self) {
                self.reconcile_key(k).await;
            }
            h.abort();
        }
    }

    /// Answers `done` once the subscriptions asked for before are in place
    /// at the NATS server, after reading the last values of `keys` (and of
    /// every key on `star`) into the local cache if `fetch`. With NATS
    /// down, `done` is dropped: the subscribe goes on at once.
    async fn ready(
        &mut self,
        keys: Vec<KeyId>,
        star: ChannelSet,
        fetch: bool,
        done: oneshot::Sender<()>,
    ) {
        if !is_connected(&self.client) {
            return;
        }
        // Every subscription this depends on was sent before; the
        // requests below go over the same connection after them, and
        // NATS handles a connection's messages in order, so an
        // answer means the subscriptions are in place.
        // Keys with a live tick since their coverage began are read
        // from the cache: only the others need JetStream.
        let keys: Vec<KeyId> = keys
            .into_iter()
            .filter(|k| !self.live.contains(k))
            .collect();
        let fetch = fetch && (!keys.is_empty() || !star.is_empty());
        let stream = self.stream.clone();
        let client = self.client.clone();
        let sync_subject = self.subjects.sync();
        let ingest = self.ingest.clone();
        let subjects = self.subjects.clone();
        let stats = self.stats.clone();
        // On a task of its own, the stream's lookup included: the loop goes
        // on taking ticks and checking the heartbeat meanwhile (with NATS
        // unresponsive, a JetStream request waits for its timeout).
        tokio::spawn(async move {
            match if fetch { stream.get().await } else { None } {
                Some(stream) => {
                    // Kept for snapshots; see `Ingest::offer_last_value`.
                    for t in read_keys(&stream, &subjects, &ingest, &stats, &keys, star).await {
                        ingest.offer_last_value(t);
                    }
                }
                // Nobody answers this subject: NATS says so at once
                // ("no responders"), which is the round trip needed.
                None => {
                    let _ = client.request(sync_subject, Bytes::new()).await;
                }
            }
            let _ = done.send(());
        });
    }

    /// After a reconnect: the ticks published while this gateway was cut
    /// off are gone, but each wanted key's last value is in JetStream.
    /// They are read on a task of their own (the loop goes on checking
    /// the heartbeat meanwhile) and come back to the loop, which publishes
    /// the newer ones into the local ring as live ticks
    /// ([`Gateway::caught_up`]), so clients get each key's latest value
    /// now, after a `seq` gap.
    fn catch_up(&mut self) {
        self.stream.forget();
        let stream = self.stream.clone();
        let subjects = self.subjects.clone();
        let ingest = self.ingest.clone();
        let stats = self.stats.clone();
        let keys = self.interest.wanted_keys();
        let star = self.interest.wanted_star();
        let epoch = ingest.epoch();
        let back = self.caught_up_tx.clone();
        tokio::spawn(async move {
            let Some(stream) = stream.get().await else {
                return;
            };
            let fresh = read_keys(&stream, &subjects, &ingest, &stats, &keys, star).await;
            let _ = back.send(CaughtUp {
                epoch,
                keys: keys.len(),
                fresh,
            });
        });
    }

    /// Publishes what a catch-up read that is newer than what the bus has
    /// delivered since; nothing if the feed's epoch changed meanwhile (its
    /// values belong to the old numbering).
    async fn caught_up(&mut self, c: CaughtUp) {
        if c.epoch != self.ingest.epoch() {
            return;
        }
        let newer: Vec<Tick> = c
            .fresh
            .into_iter()
            .filter(|t| t.seq > self.ingest.published_seq(t.key))
            .collect();
        tracing::info!(
            keys = c.keys,
            caught_up = newer.len(),
            "read last values after reconnecting"
        );
        self.ingest.publish_sequenced(&newer).await;
    }
}

/// A catch-up's reading, sent back to the gateway's loop.
struct CaughtUp {
    /// The feed epoch when the reading began.
    epoch: Epoch,
    /// Keys asked for, for the log.
    keys: usize,
    /// Their last values, localized.
    fresh: Vec<Tick>,
}
