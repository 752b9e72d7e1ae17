//! The ingest node's side of the bus: continue every key's `seq` from the
//! last-value store, then publish every tick the ring carries, and a
//! heartbeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream;
use tokio::sync::watch;

use super::last_values::{ensure_stream, localize, read_last_values};
use super::link::{self, Bus, BusLink, connect, is_connected, wait_connected};
use super::subject::Subjects;
use super::{BusConfig, BusError, Role, heartbeat, payload};
use crate::model::epoch::Epoch;
use crate::model::feed::FeedStatus;
use crate::model::tick::{KeyId, wall_clock_ns};
use crate::pipeline::ingest::{Ingest, IngestReader, RingItem};
use crate::pipeline::stats::Stats;
use crate::shutdown::Shutdown;

/// Starts an ingest node's bus link: connects, continues every key's `seq`
/// from the last-value stream, then publishes what `reader` reads from the
/// ring. Returns once the sequence is restored (sources may start).
pub(crate) fn start_ingest(
    config: BusConfig,
    ingest: Arc<Ingest>,
    reader: IngestReader,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<Bus, BusError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BusError>>();
    // An ingest node's feed is never stale: the sender only lives as long
    // as the thread, so the workers' receivers stay open.
    let (status_tx, status) = watch::channel(FeedStatus::Live);
    let thread = link::spawn_thread(move || async move {
        let _status_tx = status_tx;
        match Publisher::start(config, &ingest, stats).await {
            Ok(publisher) => {
                let _ = ready_tx.send(Ok(()));
                publisher.run(reader, shutdown).await;
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Bus {
            link: Arc::new(BusLink::new(Role::Ingest, None, status)),
            thread,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(BusError::Connect {
            url: String::new(),
            timeout: std::time::Duration::ZERO,
            message: "the bus thread ended before connecting".into(),
        }),
    }
}

/// How long shutdown waits for what is queued to reach NATS.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// The ingest node's bus thread state.
struct Publisher {
    client: async_nats::Client,
    /// To recreate the last-value stream after a reconnect.
    js: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
    stats: Arc<Stats>,
    /// Set by the connection on a reconnect.
    reconnected: Arc<AtomicBool>,
    /// This process in heartbeats (pid and start second), so gateways can
    /// log a change of ingest node.
    node: String,
    /// Subject strings per local key, built once.
    subject_of: HashMap<KeyId, async_nats::Subject>,
    /// Ticks published so far, for the heartbeat.
    published: u64,
    /// The feed epoch, for the heartbeat: gateways adopt it.
    epoch: Epoch,
}

impl Publisher {
    /// Connects (waiting at most the connect timeout), makes sure the
    /// last-value stream exists, and continues every key's `seq` from it.
    async fn start(
        config: BusConfig,
        ingest: &Ingest,
        stats: Arc<Stats>,
    ) -> Result<Publisher, BusError> {
        let reconnected = Arc::new(AtomicBool::new(false));
        let (client, last_error) = connect(&config, &stats, reconnected.clone()).await?;
        wait_connected(&client, &config, &last_error).await?;
        let subjects = Subjects::new(&config.prefix);
        let js = jetstream::new(client.clone());
        let stream = ensure_stream(&js, &config, &subjects).await?;
        let last = read_last_values(&stream, format!("{}.>", subjects.prefix()), &stats)
            .await
            .map_err(|message| BusError::Seed {
                stream: config.stream.clone(),
                message,
            })?;
        let n = last.len();
        // `seq` continues from these values, so their epoch does too: the
        // newest one's (they all share it unless an operator mixed two
        // deployments on one stream). None read back (a first start, or
        // the store lost with a NATS restart on memory storage): `seq`
        // restarts at 1, and so does the epoch this process drew.
        if let Some(newest) = last.iter().filter(|t| t.epoch.0 != 0).max_by_key(|t| t.rx) {
            ingest.set_epoch(newest.epoch);
        }
        tracing::info!(epoch = %ingest.epoch(), continued = n > 0, "feed epoch");
        for t in last {
            if let Some(t) = localize(ingest, t) {
                ingest.resume_sequence(t);
            }
        }
        tracing::info!(keys = n, stream = %config.stream, "sequence continued from the bus's last values");
        Ok(Publisher {
            client,
            js,
            subjects,
            config,
            stats,
            reconnected,
            node: format!("{}-{}", std::process::id(), wall_clock_ns() / 1_000_000_000),
            subject_of: HashMap::new(),
            published: 0,
            epoch: ingest.epoch(),
        })
    }

    /// Publishes the ring's ticks as they come, a heartbeat when there are
    /// none, until shutdown.
    async fn run(mut self, mut reader: IngestReader, mut shutdown: Shutdown) {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<RingItem> = Vec::with_capacity(1024);
        loop {
            batch.clear();
            if reader.read_batch(&mut batch, 1024) == 0 {
                tokio::select! {
                    _ = reader.waker.notified() => continue,
                    _ = heartbeat.tick() => {
                        tokio::select! {
                            _ = self.heartbeat() => continue,
                            _ = shutdown.triggered() => break,
                        }
                    }
                    _ = shutdown.triggered() => break,
                }
            }
            // With NATS gone, publish and flush wait for a reconnect that
            // may never come: shutdown must not wait with them.
            tokio::select! {
                _ = self.publish(&batch) => {}
                _ = shutdown.triggered() => break,
            }
        }
        if tokio::time::timeout(FINAL_FLUSH, self.client.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                published = self.published,
                "shutting down without NATS: ticks not yet sent to the bus are abandoned"
            );
        }
    }

    async fn publish(&mut self, batch: &[RingItem]) {
        // Down: drop rather than stall the ring (and with it the local
        // clients and the publishers); gateways see a `seq` gap.
        if !is_connected(&self.client) {
            Stats::add(&self.stats.bus.publish_dropped, batch.len() as u64);
            return;
        }
        for item in batch {
            let t = &item.tick;
            if item.book.is_some() {
                // Books are not carried on the bus (the payload is a tick
                // record); their quote ticks are.
                continue;
            }
            let subject = self
                .subject_of
                .entry(t.key)
                .or_insert_with(|| self.subjects.tick(t.key.channel(), &t.sym).into())
                .clone();
            if self
                .client
                .publish(subject, payload::encode(t, item.epoch))
                .await
                .is_err()
            {
                Stats::add(&self.stats.bus.publish_dropped, 1);
            } else {
                self.published += 1;
                Stats::add(&self.stats.bus.published, 1);
            }
        }
        // publish() only queues; one flush per batch sends it.
        let _ = self.client.flush().await;
    }

    async fn heartbeat(&mut self) {
        if self.reconnected.swap(false, Ordering::AcqRel) {
            // A NATS restart with memory storage loses the stream.
            if let Err(e) = ensure_stream(&self.js, &self.config, &self.subjects).await {
                tracing::error!(error = %e, "cannot restore the last-value stream after a reconnect");
            }
        }
        let hb = heartbeat::payload(&self.node, self.published, self.epoch);
        if is_connected(&self.client) {
            let _ = self.client.publish(self.subjects.heartbeat(), hb).await;
            let _ = self.client.flush().await;
        }
    }
}
