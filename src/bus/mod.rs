//! Bus: the NATS link that spreads one feed over several nodes.
//!
//! A deployment has one **ingest** node and any number of **gateways**
//! (`serve --bus nats://… --role ingest|gateway`); `standalone`, the
//! default, is a single process with no bus.
//!
//! - The ingest node owns the sources and the sequencer, exactly as a
//!   standalone node does, and reads the ring like one more fan-out worker:
//!   each tick goes to NATS on its key's subject ([`subject`]) as a compact
//!   binary payload ([`payload`]). A JetStream stream keeping one message per
//!   subject captures those subjects: it is the deployment's last-value
//!   store. On start the ingest node reads it back and continues every
//!   key's `seq` from there, so `seq` never restarts when the node does.
//!   It also publishes a heartbeat.
//! - A gateway has no sources. Its workers report which keys their clients
//!   want ([`Interest`]); the bus thread holds one NATS subscription per
//!   wanted key (or one per channel for `*`) and drops it when the last
//!   local subscriber leaves. Ticks arrive with their `seq` and `rx` and
//!   enter the gateway's own ring unchanged
//!   ([`Ingest::publish_sequenced`]), which drops duplicates, so every
//!   gateway's clients see the same `seq`s. Snapshots come from JetStream,
//!   read after the subscription is in place ([`BusLink::prepare`]), so a
//!   snapshot is the same on every gateway and never older than the
//!   client's first live tick. No heartbeat for `stale_after` (ingest node
//!   gone, or NATS unreachable) makes the feed stale: clients get a
//!   `status` message, and another when it is live again.
//!
//! NATS reconnects are async-nats's own (it resubscribes by itself); this
//! module logs them, counts them in `/metrics` and, on a gateway, reads the
//! last values of every wanted key again after one, so clients catch up on
//! what the outage hid (as a `seq` gap, never a duplicate).

pub mod payload;
pub mod subject;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::stream::{AbortHandle, Abortable, SelectAll};
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::model::feed::FeedStatus;

use crate::model::tick::{Channel, ChannelSet, KeyId, Tick, wall_clock_ns};
use crate::pipeline::fanout::InterestSink;
use crate::pipeline::ingest::{Ingest, IngestReader, RingItem};
use crate::pipeline::stats::Stats;
use crate::shutdown::Shutdown;
use payload::BusTick;
use subject::Subjects;

/// What a node does in a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// One process: sources, sequencer and subscribers; no bus.
    #[default]
    Standalone,
    /// Sources and sequencer; publishes every tick to the bus (and serves
    /// subscribers of its own, like a standalone node).
    Ingest,
    /// No sources: ticks come from the bus.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Ingest => "ingest",
            Role::Gateway => "gateway",
        }
    }
}

/// How a node reaches the bus.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `nats://host:port` (several, comma-separated, for a NATS cluster).
    pub url: String,
    pub role: Role,
    /// Subject prefix: `PREFIX.trade.SYMBOL`, `PREFIX.heartbeat`.
    pub prefix: String,
    /// JetStream stream that keeps each key's last value.
    pub stream: String,
    /// Keep the last values on disk (survives a NATS restart) or in memory.
    pub file_storage: bool,
    /// How long an ingest node waits for NATS at start before giving up.
    pub connect_timeout: Duration,
    /// CA certificate (PEM) to verify the NATS server with; setting it
    /// makes TLS required (`tls://` URLs require it anyway).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Connection name NATS shows in its monitoring (`/connz`); the server
    /// sets it to `tickwire-ROLE-LISTENADDR` unless given.
    pub name: Option<String>,
    /// The ingest node's heartbeat period.
    pub heartbeat_every: Duration,
    /// A gateway without a heartbeat for this long reports the feed stale.
    pub stale_after: Duration,
}

impl BusConfig {
    pub fn new(url: &str, role: Role) -> BusConfig {
        BusConfig {
            url: url.to_owned(),
            role,
            prefix: "tickwire".into(),
            stream: "TICKWIRE_LAST".into(),
            file_storage: true,
            connect_timeout: Duration::from_secs(10),
            name: None,
            tls_ca: None,
            heartbeat_every: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
        }
    }
}

impl BusConfig {
    /// The URL(s) as logs and errors show them: user, password or token
    /// (`nats://user:pass@host`) replaced by `***`.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Credentials written in a bus URL, the NATS way: `user:pass@` or `token@`.
#[derive(Debug, PartialEq, Eq)]
enum UrlAuth {
    UserPassword(String, String),
    Token(String),
}

/// Takes credentials out of the URL(s): async-nats 0.51 does not read them
/// there, so they are passed as connect options instead. Returns the URLs
/// without them and the first credentials found.
fn split_credentials(urls: &str) -> (String, Option<UrlAuth>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut auth = None;
    let clean: Vec<String> = urls
        .split(',')
        .map(|u| {
            let Ok(mut parsed) = url::Url::parse(u.trim()) else {
                return u.to_owned(); // async-nats reports what is wrong with it
            };
            if parsed.username().is_empty() {
                return u.to_owned();
            }
            let user = decode(parsed.username());
            let found = match parsed.password() {
                Some(p) => UrlAuth::UserPassword(user, decode(p)),
                None => UrlAuth::Token(user),
            };
            auth.get_or_insert(found);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_owned()
        })
        .collect();
    (clean.join(","), auth)
}

/// `nats://user:pass@host:4222,nats://h2` → `nats://***@host:4222,nats://h2`.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Errors of the bus link, with what an operator needs to act on them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url} within {timeout:?}: {message}")]
    Connect {
        url: String,
        timeout: Duration,
        message: String,
    },
    #[error("JetStream stream `{stream}` at {url}: {message} (is nats-server running with -js?)")]
    Stream {
        url: String,
        stream: String,
        message: String,
    },
    #[error("reading the last values back from `{stream}`: {message}")]
    Seed { stream: String, message: String },
    #[error("cannot start the bus thread: {0}")]
    Thread(std::io::Error),
}

/// What workers tell the bus thread.
enum Command {
    /// A key's interest count crossed zero: subscribe or unsubscribe.
    Key(KeyId),
    /// A channel's `*` interest crossed zero.
    Star(Channel),
    /// Answer once the subscriptions sent before are in place at the NATS
    /// server; with `fetch`, first read the last values of these keys (or
    /// of every key on `star`) into the local cache.
    Ready {
        keys: Vec<KeyId>,
        star: ChannelSet,
        fetch: bool,
        done: oneshot::Sender<()>,
    },
}

/// Which keys a gateway's clients want, counted over workers and holds.
///
/// Workers call it only when a key gains its first or loses its last
/// subscriber in that worker, so it is off the per-tick path.
pub struct Interest {
    counts: Mutex<Counts>,
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Default)]
struct Counts {
    keys: HashMap<KeyId, u32>,
    star: [u32; 2],
}

impl InterestSink for Interest {
    fn add(&self, key: KeyId) {
        let mut c = self.counts.lock();
        let n = c.keys.entry(key).or_default();
        *n += 1;
        if *n == 1 {
            let _ = self.commands.send(Command::Key(key));
        }
    }

    fn remove(&self, key: KeyId) {
        let mut c = self.counts.lock();
        if let Some(n) = c.keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.keys.remove(&key);
                let _ = self.commands.send(Command::Key(key));
            }
        }
    }

    fn add_star(&self, ch: Channel) {
        let mut c = self.counts.lock();
        c.star[ch as usize] += 1;
        if c.star[ch as usize] == 1 {
            let _ = self.commands.send(Command::Star(ch));
        }
    }

    fn remove_star(&self, ch: Channel) {
        let mut c = self.counts.lock();
        let n = &mut c.star[ch as usize];
        if *n > 0 {
            *n -= 1;
            if *n == 0 {
                let _ = self.commands.send(Command::Star(ch));
            }
        }
    }
}

impl Interest {
    fn wants(&self, key: KeyId) -> bool {
        self.counts.lock().keys.contains_key(&key)
    }

    fn wants_star(&self, ch: Channel) -> bool {
        self.counts.lock().star[ch as usize] > 0
    }

    /// The channels some local client wants `*` on.
    fn wanted_star(&self) -> ChannelSet {
        let c = self.counts.lock();
        let mut set = ChannelSet::default();
        for ch in Channel::ALL {
            if c.star[ch as usize] > 0 {
                set.insert(ch);
            }
        }
        set
    }

    fn wanted_keys(&self) -> Vec<KeyId> {
        self.counts.lock().keys.keys().copied().collect()
    }
}

/// Interest held while a subscribe waits for its snapshot; released on drop.
pub struct Hold {
    interest: Arc<Interest>,
    keys: Vec<KeyId>,
    star: ChannelSet,
}

impl Drop for Hold {
    fn drop(&mut self) {
        for &k in &self.keys {
            self.interest.remove(k);
        }
        for ch in self.star.iter() {
            self.interest.remove_star(ch);
        }
    }
}

/// A node's handle on the bus, shared by its workers.
pub struct BusLink {
    pub role: Role,
    /// Gateways only: what the local clients want.
    pub interest: Option<Arc<Interest>>,
    status: watch::Receiver<FeedStatus>,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl BusLink {
    pub fn status(&self) -> watch::Receiver<FeedStatus> {
        self.status.clone()
    }

    /// The feed's status now.
    pub fn current_status(&self) -> FeedStatus {
        self.status.borrow().clone()
    }

    /// On a gateway, before a subscribe is answered: makes sure the bus
    /// subscriptions for `keys` (and `*` on `star`) are in place at the NATS
    /// server, so no tick published after the reply is missed, and, with
    /// `snapshot`, that their last values are in the local cache. The
    /// returned [`Hold`] keeps the interest until the client's own
    /// subscription has taken over. Waits at most `timeout`; with the bus
    /// down it returns at once (the snapshot comes from the cache).
    pub async fn prepare(
        &self,
        keys: &[KeyId],
        star: ChannelSet,
        snapshot: bool,
        timeout: Duration,
    ) -> Option<Hold> {
        let (interest, commands) = (self.interest.as_ref()?, self.commands.as_ref()?);
        for &k in keys {
            interest.add(k);
        }
        for ch in star.iter() {
            interest.add_star(ch);
        }
        let hold = Hold {
            interest: interest.clone(),
            keys: keys.to_vec(),
            star,
        };
        let (done, wait) = oneshot::channel();
        let _ = commands.send(Command::Ready {
            keys: keys.to_vec(),
            star,
            fetch: snapshot,
            done,
        });
        let _ = tokio::time::timeout(timeout, wait).await;
        Some(hold)
    }
}

/// The running bus link: its thread and its handle.
pub struct Bus {
    pub link: Arc<BusLink>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Connects to NATS, logging and counting connection events.
async fn connect(
    config: &BusConfig,
    stats: &Arc<Stats>,
    reconnected: Arc<AtomicBool>,
) -> Result<(async_nats::Client, LastError), BusError> {
    let ev_stats = stats.clone();
    let url = config.shown_url();
    let last_error: LastError = Arc::default();
    let ev_last_error = last_error.clone();
    let first = Arc::new(AtomicBool::new(true));
    let opts = async_nats::ConnectOptions::new()
        .name(
            config
                .name
                .clone()
                .unwrap_or_else(|| format!("tickwire-{}", config.role.as_str())),
        )
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Reconnect quickly: a feed would rather retry every 250 ms than
        // back off to seconds while its clients wait.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).clamp(50, 250))
        })
        .subscription_capacity(1 << 16)
        // A CA of its own for the NATS server's certificate; TLS required.
        .require_tls(config.tls_ca.is_some())
        .event_callback(move |event| {
            let stats = ev_stats.clone();
            let url = url.clone();
            let first = first.clone();
            let reconnected = reconnected.clone();
            let last_error = ev_last_error.clone();
            async move {
                let b = &stats.bus;
                match event {
                    async_nats::Event::Connected => {
                        Stats::gauge_set(&b.connected, 1);
                        if first.swap(false, Ordering::Relaxed) {
                            tracing::info!(%url, "connected to the NATS bus");
                        } else {
                            Stats::add(&b.reconnects, 1);
                            reconnected.store(true, Ordering::Release);
                            tracing::warn!(%url, "reconnected to the NATS bus; ticks published meanwhile were lost (a seq gap for clients)");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        Stats::gauge_set(&b.connected, 0);
                        Stats::add(&b.disconnects, 1);
                        tracing::error!(%url, "lost the NATS bus; reconnecting");
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        Stats::add(&b.slow_consumer, 1);
                        tracing::warn!(%url, sid, "NATS dropped messages for a slow subscription (this node fell behind the bus)");
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(%url, error = %e, "NATS server error");
                        *last_error.lock() = Some(e.to_string());
                    }
                    async_nats::Event::ClientError(e) => {
                        tracing::warn!(%url, error = %e, "NATS client error");
                        *last_error.lock() = Some(e.to_string());
                    }
                    other => tracing::info!(%url, event = %other, "NATS event"),
                }
            }
        });
    let opts = match &config.tls_ca {
        Some(ca) => opts.add_root_certificates(ca.clone()),
        None => opts,
    };
    let (urls, auth) = split_credentials(&config.url);
    let opts = match auth {
        Some(UrlAuth::UserPassword(u, p)) => opts.user_and_password(u, p),
        Some(UrlAuth::Token(t)) => opts.token(t),
        None => opts,
    };
    let client = opts
        .connect(urls.as_str())
        .await
        .map_err(|e| BusError::Connect {
            url: config.shown_url(),
            timeout: config.connect_timeout,
            message: e.to_string(),
        })?;
    Ok((client, last_error))
}

/// The last error NATS reported (authorization, TLS…), for the operator.
type LastError = Arc<Mutex<Option<String>>>;

/// Waits until the client is connected, for at most `timeout`.
async fn wait_connected(
    client: &async_nats::Client,
    config: &BusConfig,
    last_error: &LastError,
) -> Result<(), BusError> {
    let deadline = Instant::now() + config.connect_timeout;
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() >= deadline {
            return Err(BusError::Connect {
                url: config.shown_url(),
                timeout: config.connect_timeout,
                message: match last_error.lock().as_ref() {
                    Some(e) => format!("no connection; NATS said: {e}"),
                    None => {
                        "no connection (is nats-server running, with this scheme and certificate?)"
                            .into()
                    }
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Creates the last-value stream if it is missing; returns it.
async fn ensure_stream(
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

/// Every last value in the stream under `filter` (a subject or wildcard).
async fn read_last_values(
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

/// Interns a bus tick's symbol here and makes it a local [`Tick`].
fn localize(ingest: &Ingest, t: BusTick) -> Option<Tick> {
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the bus runtime")
}

/// Starts an ingest node's bus link: connects, continues every key's `seq`
/// from the last-value stream, then publishes what `reader` reads from the
/// ring. Returns once the sequence is restored (sources may start).
pub fn start_ingest(
    config: BusConfig,
    ingest: Arc<Ingest>,
    reader: IngestReader,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<Bus, BusError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BusError>>();
    let (_status_tx, status) = watch::channel(FeedStatus::Live);
    let thread = std::thread::Builder::new()
        .name("tickwire-bus".into())
        .spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let _status_tx = _status_tx;
                let reconnected = Arc::new(AtomicBool::new(false));
                let setup = async {
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
                    for t in last {
                        if let Some(t) = localize(&ingest, t) {
                            ingest.resume_sequence(t);
                        }
                    }
                    tracing::info!(keys = n, stream = %config.stream, "sequence continued from the bus's last values");
                    Ok::<_, BusError>((client, js, subjects))
                };
                let (client, js, subjects) = match setup.await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                publish_loop(client, js, subjects, config, reader, stats, reconnected, shutdown).await;
            });
        })
        .map_err(BusError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Bus {
            link: Arc::new(BusLink {
                role: Role::Ingest,
                interest: None,
                status,
                commands: None,
            }),
            thread,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(BusError::Connect {
            url: String::new(),
            timeout: Duration::ZERO,
            message: "the bus thread ended before connecting".into(),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
    mut reader: IngestReader,
    stats: Arc<Stats>,
    reconnected: Arc<AtomicBool>,
    mut shutdown: Shutdown,
) {
    let node = format!("{}-{}", std::process::id(), wall_clock_ns() / 1_000_000_000);
    let heartbeat_subject = subjects.heartbeat();
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Subject strings per local key, built once.
    let mut subject_of: HashMap<KeyId, async_nats::Subject> = HashMap::new();
    let mut batch: Vec<RingItem> = Vec::with_capacity(1024);
    let mut published: u64 = 0;
    loop {
        batch.clear();
        if reader.read_batch(&mut batch, 1024) == 0 {
            tokio::select! {
                _ = reader.waker.notified() => continue,
                _ = heartbeat.tick() => {
                    if reconnected.swap(false, Ordering::AcqRel) {
                        // A NATS restart with memory storage loses the stream.
                        if let Err(e) = ensure_stream(&js, &config, &subjects).await {
                            tracing::error!(error = %e, "cannot restore the last-value stream after a reconnect");
                        }
                    }
                    let mut o = crate::wire::json::JsonObject::new("heartbeat");
                    o.str("node", &node).u64("ts", wall_clock_ns()).u64("published", published);
                    if client.connection_state() == async_nats::connection::State::Connected {
                        let _ = client.publish(heartbeat_subject.clone(), Bytes::from(o.into_bytes())).await;
                        let _ = client.flush().await;
                    }
                    continue;
                }
                _ = shutdown.triggered() => break,
            }
        }
        // Down: drop rather than stall the ring (and with it the local
        // clients and the publishers); gateways see a `seq` gap.
        if client.connection_state() != async_nats::connection::State::Connected {
            Stats::add(&stats.bus.publish_dropped, batch.len() as u64);
            continue;
        }
        for item in &batch {
            let t = &item.tick;
            let subject = subject_of
                .entry(t.key)
                .or_insert_with(|| subjects.tick(t.key.channel(), &t.sym).into())
                .clone();
            if client.publish(subject, payload::encode(t)).await.is_err() {
                Stats::add(&stats.bus.publish_dropped, 1);
            } else {
                published += 1;
                Stats::add(&stats.bus.published, 1);
            }
        }
        // publish() only queues; one flush per batch sends it.
        let _ = client.flush().await;
    }
    let _ = client.flush().await;
}

/// Starts a gateway's bus link. It connects in the background (the
/// gateway serves its clients, with a stale feed, until NATS answers).
pub fn start_gateway(
    config: BusConfig,
    ingest: Arc<Ingest>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<Bus, BusError> {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let interest = Arc::new(Interest {
        counts: Mutex::new(Counts::default()),
        commands: commands.clone(),
    });
    let (status_tx, status) = watch::channel(FeedStatus::Stale {
        reason: "not yet connected to the message bus".into(),
        since_ns: wall_clock_ns(),
    });
    Stats::gauge_set(&stats.bus.feed_stale, 1);
    let gw_interest = interest.clone();
    let thread = std::thread::Builder::new()
        .name("tickwire-bus".into())
        .spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let reconnected = Arc::new(AtomicBool::new(false));
                let client = match connect(&config, &stats, reconnected.clone()).await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "gateway cannot use the bus");
                        return;
                    }
                };
                let gw = Gateway {
                    subjects: Subjects::new(&config.prefix),
                    js: jetstream::new(client.clone()),
                    stream: None,
                    client,
                    config,
                    ingest,
                    interest: gw_interest,
                    stats,
                    status: status_tx,
                    key_subs: HashMap::new(),
                    subs: SelectAll::new(),
                    live: std::collections::HashSet::new(),
                    star_subs: [None, None],
                    reconnected,
                };
                gw.run(command_rx, shutdown).await;
            });
        })
        .map_err(BusError::Thread)?;
    Ok(Bus {
        link: Arc::new(BusLink {
            role: Role::Gateway,
            interest: Some(interest),
            status,
            commands: Some(commands),
        }),
        thread,
    })
}

/// A gateway's bus thread state.
struct Gateway {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: Option<stream::Stream>,
    subjects: Subjects,
    config: BusConfig,
    ingest: Arc<Ingest>,
    interest: Arc<Interest>,
    stats: Arc<Stats>,
    status: watch::Sender<FeedStatus>,
    /// One NATS subscription per wanted key, while no `*` covers its channel.
    key_subs: HashMap<KeyId, AbortHandle>,
    /// Every tick subscription, polled as one stream by the gateway loop
    /// (no task or queue per subscription). Aborting one's handle ends it:
    /// it is dropped at the next poll, which sends NATS its `UNSUB`.
    subs: SelectAll<Abortable<async_nats::Subscriber>>,
    /// Keys that got a live tick since the bus last started covering them:
    /// their cached last value is as new as any the bus has delivered, and
    /// anything newer is on its way, so a snapshot needs no JetStream read.
    live: std::collections::HashSet<KeyId>,
    star_subs: [Option<AbortHandle>; 2],
    reconnected: Arc<AtomicBool>,
}

impl Gateway {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut shutdown: Shutdown) {
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
        let mut last_heartbeat: Option<Instant> = None;
        let mut ingest_node = String::new();
        let mut msgs: Vec<async_nats::Message> = Vec::with_capacity(1024);
        let mut ticks: Vec<Tick> = Vec::with_capacity(1024);
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
                    msgs.push(m);
                    // Whatever else has arrived, as one batch.
                    while msgs.len() < 1024 {
                        match self.subs.next().now_or_never() {
                            Some(Some(m)) => msgs.push(m),
                            _ => break,
                        }
                    }
                    ticks.clear();
                    for m in msgs.drain(..) {
                        Stats::add(&self.stats.bus.received, 1);
                        match payload::decode(&m.payload) {
                            Ok(t) => ticks.extend(localize(&self.ingest, t)),
                            Err(e) => {
                                Stats::add(&self.stats.bus.malformed, 1);
                                tracing::warn!(subject = %m.subject, error = %e, "dropping a malformed bus message");
                            }
                        }
                    }
                    self.ingest.publish_sequenced(&ticks).await;
                    self.live.extend(ticks.iter().map(|t| t.key));
                }
                hb = heartbeats.next() => {
                    let Some(hb) = hb else { break };
                    last_heartbeat = Some(Instant::now());
                    let node = heartbeat_node(&hb.payload);
                    if node != ingest_node {
                        tracing::info!(node, "heartbeat from the ingest node");
                        ingest_node = node;
                    }
                    self.set_status(FeedStatus::Live);
                }
                _ = check.tick() => {
                    if self.reconnected.swap(false, Ordering::AcqRel) {
                        self.live.clear();
                        self.catch_up().await;
                    }
                    let connected = self.client.connection_state() == async_nats::connection::State::Connected;
                    let quiet = last_heartbeat.is_none_or(|t| t.elapsed() > self.config.stale_after);
                    if !connected || quiet {
                        let reason = if !connected {
                            "the message bus is unreachable".to_string()
                        } else if last_heartbeat.is_none() {
                            "no heartbeat from the ingest node yet".to_string()
                        } else {
                            format!("no heartbeat from the ingest node for {:?}", self.config.stale_after)
                        };
                        if matches!(*self.status.borrow(), FeedStatus::Live) {
                            tracing::warn!(reason, "feed is stale");
                            self.set_status(FeedStatus::Stale { reason, since_ns: wall_clock_ns() });
                        }
                    }
                }
            }
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
            Command::Star(ch) => {
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
                    self.live.retain(|k| {
                        k.channel() != ch || subs.contains_key(k) || interest.wants(*k)
                    });
                    // The keys' own subscriptions come back before the
                    // wildcard goes (NATS handles them in this order), so
                    // no tick falls between; the overlap is deduplicated.
                    for k in keys(self) {
                        self.reconcile_key(k).await;
                    }
                    h.abort();
                }
            }
            Command::Ready {
                keys,
                star,
                fetch,
                done,
            } => {
                if self.client.connection_state() != async_nats::connection::State::Connected {
                    return; // `done` dropped: the session goes on at once
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
                let stream = if fetch { self.stream().await } else { None };
                let client = self.client.clone();
                let sync_subject = self.subjects.sync();
                let ingest = self.ingest.clone();
                let subjects = self.subjects.clone();
                let stats = self.stats.clone();
                tokio::spawn(async move {
                    match stream {
                        Some(stream) => {
                            // Kept for snapshots; see `Ingest::offer_last_value`.
                            for t in
                                read_keys(&stream, &subjects, &ingest, &stats, &keys, star).await
                            {
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
        }
        Stats::gauge_set(
            &self.stats.bus.subjects,
            (self.key_subs.len() + self.star_subs.iter().flatten().count()) as i64,
        );
    }

    async fn reconcile_key(&mut self, key: KeyId) {
        let want = self.interest.wants(key) && self.star_subs[key.channel() as usize].is_none();
        let have = self.key_subs.contains_key(&key);
        if want && !have {
            let Some(sym) = self.ingest.symbols().name(key.symbol()) else {
                return;
            };
            match self
                .client
                .subscribe(self.subjects.tick(key.channel(), &sym))
                .await
            {
                Ok(sub) => {
                    let h = self.poll_with_others(sub);
                    self.key_subs.insert(key, h);
                }
                Err(e) => tracing::error!(symbol = %sym, error = %e, "cannot subscribe to the bus"),
            }
        } else if !want && let Some(h) = self.key_subs.remove(&key) {
            if self.star_subs[key.channel() as usize].is_none() {
                self.live.remove(&key);
            }
            h.abort();
        }
    }

    /// The last-value stream, looked up once it exists.
    async fn stream(&mut self) -> Option<stream::Stream> {
        if self.stream.is_none() {
            match self.js.get_stream(&self.config.stream).await {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    tracing::warn!(stream = %self.config.stream, error = %e, "no last-value stream yet; snapshots come from this node's cache");
                }
            }
        }
        self.stream.clone()
    }

    /// After a reconnect: the ticks published while this gateway was cut
    /// off are gone, but each wanted key's last value is in JetStream.
    /// Newer ones are published into the local ring as live ticks, so
    /// clients get each key's latest value now, after a `seq` gap.
    async fn catch_up(&mut self) {
        self.stream = None;
        let Some(stream) = self.stream().await else {
            return;
        };
        let keys = self.interest.wanted_keys();
        let star = self.interest.wanted_star();
        let fresh = read_keys(
            &stream,
            &self.subjects,
            &self.ingest,
            &self.stats,
            &keys,
            star,
        )
        .await;
        let newer: Vec<Tick> = fresh
            .into_iter()
            .filter(|t| t.seq > self.ingest.published_seq(t.key))
            .collect();
        tracing::info!(
            keys = keys.len(),
            caught_up = newer.len(),
            "read last values after reconnecting"
        );
        self.ingest.publish_sequenced(&newer).await;
    }
}

fn heartbeat_node(payload: &[u8]) -> String {
    use simd_json::prelude::*;
    let mut p = payload.to_vec();
    simd_json::to_borrowed_value(&mut p)
        .ok()
        .and_then(|v| v.get_str("node").map(str::to_owned))
        .unwrap_or_default()
}

/// The last values of `keys` and of every key on `star`, localized.
async fn read_keys(
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
    let wanted: Vec<(KeyId, String)> = keys
        .iter()
        .filter(|k| !star.contains(k.channel()))
        .filter_map(|&k| {
            let sym = ingest.symbols().name(k.symbol())?;
            Some((k, subjects.tick(k.channel(), &sym)))
        })
        .collect();
    Stats::add(&stats.bus.last_value_reads, wanted.len() as u64);
    let got: Vec<Option<BusTick>> = futures_util::stream::iter(wanted)
        .map(|(_, subject)| async move {
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

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_urls_become_connect_options() {
        use super::{UrlAuth, split_credentials};
        assert_eq!(
            split_credentials("tls://tw:s3%40cret@127.0.0.1:4222,nats://h2:4222"),
            (
                "tls://127.0.0.1:4222,nats://h2:4222".into(),
                Some(UrlAuth::UserPassword("tw".into(), "s3@cret".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://tok3n@h:1"),
            ("nats://h:1".into(), Some(UrlAuth::Token("tok3n".into())))
        );
        assert_eq!(split_credentials("nats://h:1"), ("nats://h:1".into(), None));
    }

    #[test]
    fn credentials_never_show_in_urls() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("tls://tw:s3cret@127.0.0.1:4222,nats://tok@h2:4222/x@y"),
            "tls://***@127.0.0.1:4222,nats://***@h2:4222/x@y"
        );
        assert_eq!(redact_url("user:pw@host:4222"), "***@host:4222");
    }
}
