//! The link itself: the handle the workers hold ([`BusLink`]), the thread
//! behind it ([`Bus`]), and the NATS connection with its events logged and
//! counted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::interest::{Hold, Interest};
use super::{BusConfig, BusError, Role};
use crate::model::feed::FeedStatus;
use crate::model::tick::{ChannelSet, KeyId};
use crate::pipeline::stats::Stats;

/// A node's handle on the bus, shared by its workers.
///
/// `pub` only because `server::context::Context`, a `pub` struct, holds
/// one in a `pub` field; nothing outside the crate uses it.
pub(crate) struct BusLink {
    /// What this node is; the server refuses publishers on a gateway.
    pub(crate) role: Role,
    /// Gateways only: what the local clients want.
    pub(crate) interest: Option<Arc<Interest>>,
    /// The feed's status as the bus thread sees it (always live on an
    /// ingest node); workers tell their clients when it changes.
    status: watch::Receiver<FeedStatus>,
}

impl BusLink {
    pub(super) fn new(
        role: Role,
        interest: Option<Arc<Interest>>,
        status: watch::Receiver<FeedStatus>,
    ) -> BusLink {
        BusLink {
            role,
            interest,
            status,
        }
    }

    pub(crate) fn status(&self) -> watch::Receiver<FeedStatus> {
        self.status.clone()
    }

    /// The feed's status now.
    pub(crate) fn current_status(&self) -> FeedStatus {
        self.status.borrow().clone()
    }

    /// On a gateway, before a subscribe is answered: makes sure the bus
    /// subscriptions for `keys` (and `*` on `star`) are in place at the NATS
    /// server, so no tick published after the reply is missed, and, with
    /// `snapshot`, that their last values are in the local cache. The
    /// returned [`Hold`] keeps the interest until the client's own
    /// subscription has taken over. Waits at most `timeout`; with the bus
    /// down it returns at once (the snapshot comes from the cache).
    pub(crate) async fn prepare(
        &self,
        keys: &[KeyId],
        star: ChannelSet,
        snapshot: bool,
        timeout: Duration,
    ) -> Option<Hold> {
        let interest = self.interest.as_ref()?;
        let hold = interest.hold(keys, star);
        let answer = interest.ready(keys, star, snapshot);
        let _ = tokio::time::timeout(timeout, answer).await;
        Some(hold)
    }
}

/// The running bus link: its thread and its handle.
pub(crate) struct Bus {
    /// Handed to every worker.
    pub(crate) link: Arc<BusLink>,
    /// Joined at shutdown with the server's other threads.
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Runs `task` on a thread of its own (`tickwire-bus`) with a
/// single-threaded runtime: the bus never competes with the workers'
/// runtimes, and its state needs no locks.
pub(super) fn spawn_thread<F, Fut>(task: F) -> Result<std::thread::JoinHandle<()>, BusError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name("tickwire-bus".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the bus runtime")
                .block_on(task())
        })
        .map_err(BusError::Thread)
}

/// The last error NATS reported (authorization, TLS…), for the operator.
pub(super) type LastError = Arc<Mutex<Option<String>>>;

/// Connects to NATS, logging and counting connection events. Returns at
/// once: the connection is made, and remade, in the background.
/// `reconnected` is set on every reconnect, for the bus thread to notice.
pub(super) async fn connect(
    config: &BusConfig,
    stats: &Arc<Stats>,
    reconnected: Arc<AtomicBool>,
) -> Result<(async_nats::Client, LastError), BusError> {
    let events = Events {
        stats: stats.clone(),
        url: config.shown_url(),
        first: Arc::new(AtomicBool::new(true)),
        reconnected,
        last_error: LastError::default(),
        errors: ErrorLog::default(),
    };
    let last_error = events.last_error.clone();
    let opts = async_nats::ConnectOptions::new()
        .name(
            config
                .name
                .clone()
                .unwrap_or_else(|| format!("tickwire-{}", config.role.as_str())),
        )
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .subscription_capacity(1 << 16)
        .event_callback(move |event| {
            let events = events.clone();
            async move { events.record(event) }
        });
    let (urls, opts) = config.authenticate(opts);
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

/// How long to wait before reconnect attempt `attempts`: quick at first (a
/// feed would rather retry at once than keep its clients waiting when NATS
/// only blinked), doubling from 50 ms to at most 5 s for an outage that
/// lasts, so a node whose NATS is gone does not hammer the address.
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16) as u32;
    Duration::from_millis(50u64 << doublings).min(MAX_RECONNECT_DELAY)
}

/// The longest wait between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The least time between two logged NATS errors while an outage lasts;
/// the ones in between are counted and the count logged with the next.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// Logs NATS client and server errors (one per failed reconnect attempt)
/// at a bounded rate: the first of an outage at once, then one per
/// [`ERROR_LOG_EVERY`] with how many were not logged.
#[derive(Clone, Default)]
struct ErrorLog {
    /// When an error was last logged (`None`: none since connecting).
    last: Arc<Mutex<Option<Instant>>>,
    /// Errors not logged since the last one that was.
    suppressed: Arc<std::sync::atomic::AtomicU64>,
}

impl ErrorLog {
    /// Whether to log an error now, and how many were held back before it.
    fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < ERROR_LOG_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Connected again: the next outage's first error is logged at once.
    fn reset(&self) {
        *self.last.lock() = None;
        self.suppressed.store(0, Ordering::Relaxed);
    }
}

/// What the connection's events update: one copy per event.
#[derive(Clone)]
struct Events {
    /// `/metrics`' bus counters.
    stats: Arc<Stats>,
    /// The URL as logs show it (redacted).
    url: String,
    /// Tells the first connection from a reconnect.
    first: Arc<AtomicBool>,
    /// Set on a reconnect: the bus thread has ticks to make up for.
    reconnected: Arc<AtomicBool>,
    /// For an error message that says why the connection never came.
    last_error: LastError,
    /// Keeps a long outage from flooding the log.
    errors: ErrorLog,
}

impl Events {
    fn record(&self, event: async_nats::Event) {
        let (b, url) = (&self.stats.bus, &self.url);
        match event {
            async_nats::Event::Connected => {
                Stats::gauge_set(&b.connected, 1);
                self.errors.reset();
                if self.first.swap(false, Ordering::Relaxed) {
                    tracing::info!(%url, "connected to the NATS bus");
                } else {
                    Stats::add(&b.reconnects, 1);
                    self.reconnected.store(true, Ordering::Release);
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
                if let Some(not_logged) = self.errors.admit() {
                    tracing::warn!(%url, error = %e, not_logged, "NATS server error");
                }
                *self.last_error.lock() = Some(e.to_string());
            }
            async_nats::Event::ClientError(e) => {
                if let Some(not_logged) = self.errors.admit() {
                    tracing::warn!(%url, error = %e, not_logged, "NATS client error");
                }
                *self.last_error.lock() = Some(e.to_string());
            }
            other => tracing::info!(%url, event = %other, "NATS event"),
        }
    }
}

/// Whether the client is connected now.
pub(super) fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Waits until the client is connected, for at most the configured
/// connect timeout.
pub(super) async fn wait_connected(
    client: &async_nats::Client,
    config: &BusConfig,
    last_error: &LastError,
) -> Result<(), BusError> {
    let deadline = Instant::now() + config.connect_timeout;
    while !is_connected(client) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_a_ceiling() {
        let d: Vec<u64> = [1, 2, 3, 5, 8, 20, usize::MAX]
            .map(|a| reconnect_delay(a).as_millis() as u64)
            .to_vec();
        assert_eq!(d, [50, 100, 200, 800, 5000, 5000, 5000]);
    }

    #[test]
    fn errors_are_logged_once_per_period_with_a_count() {
        let log = ErrorLog::default();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        log.reset();
        assert_eq!(log.admit(), Some(0));
        *log.last.lock() = Some(Instant::now() - ERROR_LOG_EVERY);
        log.suppressed.store(7, Ordering::Relaxed);
        assert_eq!(log.admit(), Some(7));
    }
}
