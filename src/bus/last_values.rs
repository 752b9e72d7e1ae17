//! The deployment's last-value store: a JetStream stream keeping one
//! message (the latest tick) per subject.
//!
//! The ingest node creates it and reads all of it back at start to
//! continue every key's `seq`; a gateway reads the keys its clients
//! subscribe to (for snapshots) and, after a reconnect, every wanted key
//! (to catch up). What comes back is made local with [`localize`], as live
//! ticks from the bus are.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use super::payload::{self, BusTick};
use super::subject::Subjects;
use super::{BusConfig, BusError};
use crate::model::tick::{Channel, ChannelSet, KeyId, Tick};
use crate::pipeline::ingest::Ingest;
use crate::pipeline::stats::Stats;

/// Creates the last-value stream if it is missing; returns it.
pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    config: &BusConfig,
    subjects: &Subjects,
) -> Result<stream::Stream, BusError> {
    let cfg = stream::Config {
        name: config.stream.clone(),
        subjects: Channel::ALL
            .iter()
            .map(|&ch| subjects.channel_wildcard(ch))
            .collect(),
        max_messages_per_subject: 1,
        storage: if config.file_storage {
            stream::StorageType::File
        } else {
            stream::StorageType::Memory
        },
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.get_or_create_stream(cfg)
        .await
        .map_err(|e| BusError::Stream {
            url: config.shown_url(),
            stream: config.stream.clone(),
            message: e.to_string(),
        })
}

/// A gateway's handle on the last-value stream: looked up on first use by
/// whichever task needs it (never on the gateway's loop: with NATS
/// unresponsive, a lookup waits for JetStream's timeout, and the loop must
/// keep checking the heartbeat meanwhile), then kept.
#[derive(Clone)]
pub(super) struct LastValueStream {
    js: jetstream::Context,
    /// The stream's name (`--bus-stream`).
    name: String,
    /// The stream once found; forgotten after a reconnect (a NATS restart
    /// may have recreated it).
    found: Arc<Mutex<Option<stream::Stream>>>,
}

impl LastValueStream {
    pub(super) fn new(js: jetstream::Context, name: String) -> Self {
        LastValueStream {
            js,
            name,
            found: Arc::default(),
        }
    }

    /// The stream, looked up if not known yet; `None` if NATS has none
    /// (or does not answer).
    pub(super) async fn get(&self) -> Option<stream::Stream> {
        if let Some(s) = self.found.lock().clone() {
            return Some(s);
        }
        match self.js.get_stream(&self.name).await {
            Ok(s) => {
                *self.found.lock() = Some(s.clone());
                Some(s)
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e, "no last-value stream yet; snapshots come from this node's cache");
                None
            }
        }
    }

    /// Looks the stream up again next time.
    pub(super) fn forget(&self) {
        *self.found.lock() = None;
    }
}

/// Every last value in the stream under `filter` (a subject or wildcard).
pub(super) async fn read_last_values(
    stream: &stream::Stream,
    filter: String,
    stats: &Stats,
) -> Result<Vec<BusTick>, String> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .map_err(|_| "timed out reading last values".to_string())?
    {
        let m = m.map_err(|e| e.to_string())?;
        match payload::decode(&m.payload) {
            Ok(t) => out.push(t),
            Err(e) => {
                Stats::add(&stats.bus.malformed, 1);
                tracing::warn!(subject = %m.subject, error = %e, "skipping a malformed last value");
            }
        }
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// The last values of `keys` and of every key on `star`, localized: one
/// consumer per `*` channel, one direct read per key (32 at a time).
pub(super) async fn read_keys(
    stream: &stream::Stream,
    subjects: &Subjects,
    ingest: &Ingest,
    stats: &Stats,
    keys: &[KeyId],
    star: ChannelSet,
) -> Vec<Tick> {
    let mut out = Vec::new();
    for ch in star.iter() {
        Stats::add(&stats.bus.last_value_reads, 1);
        match read_last_values(stream, subjects.channel_wildcard(ch), stats).await {
            Ok(v) => out.extend(v.into_iter().filter_map(|t| localize(ingest, t))),
            Err(e) => tracing::warn!(channel = ch.as_str(), error = %e, "cannot read last values"),
        }
    }
    let wanted: Vec<String> = keys
        .iter()
        .filter(|k| !star.contains(k.channel()))
        .filter_map(|&k| {
            let sym = ingest.symbols().name(k.symbol())?;
            Some(subjects.tick(k.channel(), &sym))
        })
        .collect();
    Stats::add(&stats.bus.last_value_reads, wanted.len() as u64);
    let got: Vec<Option<BusTick>> = futures_util::stream::iter(wanted)
        .map(|subject| async move {
            let m = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok()?;
            payload::decode(&m.payload).ok()
        })
        .buffer_unordered(32)
        .collect()
        .await;
    out.extend(
        got.into_iter()
            .flatten()
            .filter_map(|t| localize(ingest, t)),
    );
    out
}

/// Interns a bus tick's symbol here and makes it a local [`Tick`]: each
/// node numbers symbols itself, so the ingest node's id means nothing here.
pub(super) fn localize(ingest: &Ingest, t: BusTick) -> Option<Tick> {
    match ingest.symbols().intern(&t.sym) {
        Ok((id, sym)) => Some(Tick {
            key: KeyId::new(id, t.event.channel()),
            sym,
            seq: t.seq,
            ts: t.ts,
            rx: t.rx,
            event: t.event,
        }),
        Err(e) => {
            tracing::warn!(symbol = %t.sym, error = %e, "dropping a bus tick");
            None
        }
    }
}
