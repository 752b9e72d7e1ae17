//! What every streaming client goes through, WebSocket or SSE: the one
//! place each step is decided.
//!
//! - [`authorize`]: the API key check, with its counters and log lines; a
//!   refusal is a [`Refusal`] each front end writes in its own way (a hyper
//!   response before the upgrade, a hand-written one on `/v1/sse`).
//! - [`admit`]: the connection limits ([`crate::access::limits`]).
//! - [`ClientGuard`]: the client's registration with the fan-out worker
//!   (gauges, writer task, open and close log lines), undone on drop.
//! - [`withhold_unentitled`], [`Plan`] and [`subscribe`]: the symbols the
//!   key may not see taken out, the rest interned and the key limit checked
//!   before anything waits or changes, then the bus made ready, the
//!   subscription put in place and the snapshot queued.

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::access::auth::{Entitlement, Identity, Role, presented_key};
use crate::access::limits::Permit;
use crate::model::feed::FeedStatus;
use crate::model::symbols::TableFull;
use crate::model::tick::{ChannelSet, KeyId, SymbolId};
use crate::net::transport::{Conn, ReadHalf};
use crate::pipeline::fanout::{Client, ClientId};
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::{Refusal as Counter, Stats};
use crate::server::context::Context;
use crate::wire::encode::Encoding;
use crate::wire::message::status_message;
use crate::wire::request::SymbolList;

/// How long a subscribe on a gateway waits for the bus to deliver its
/// snapshot before answering from the node's own cache (bus down).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// What a connection is for: which endpoint it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// `/v1/stream` or `/v1/sse`.
    Subscriber,
    /// `/v1/publish`.
    Publisher,
    /// The conformance listener (`serve --echo-listen`, off by default):
    /// every text or binary message is sent back as one frame of the same
    /// opcode, through the same reader, limits and outbox as `/v1/stream`,
    /// so Autobahn's fuzzing cases test the framing stack subscribers get.
    Echo,
}

impl SessionKind {
    /// The name in log lines and in `hello.role`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionKind::Subscriber => "subscriber",
            SessionKind::Publisher => "publisher",
            SessionKind::Echo => "echo",
        }
    }

    /// The API key role the endpoint needs; `None`: no key is asked for.
    fn role(self) -> Option<Role> {
        match self {
            SessionKind::Subscriber => Some(Role::Subscriber),
            SessionKind::Publisher => Some(Role::Publisher),
            SessionKind::Echo => None,
        }
    }

    /// The gauge of open connections of this kind, if it has one.
    fn gauge(self, stats: &Stats) -> Option<&AtomicI64> {
        match self {
            SessionKind::Subscriber => Some(&stats.subscribers),
            SessionKind::Publisher => Some(&stats.publishers),
            SessionKind::Echo => None,
        }
    }
}

/// The front end a client came through: where the wording of a refusal or
/// of an error differs, it differs by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    /// An HTTP upgrade to a WebSocket session.
    WebSocket,
    /// `GET /v1/sse`, answered by hand.
    Sse,
}

/// A request refused before it streams anything; each front end turns it
/// into its own HTTP response.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// The reason, for the body (without its final newline).
    pub(crate) message: String,
    /// The `WWW-Authenticate` value, for a 401.
    pub(crate) challenge: Option<&'static str>,
    /// `Retry-After: 5`, for a refusal that may pass later (503).
    pub(crate) retry_after: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            challenge: None,
            retry_after: false,
        }
    }

    /// The same refusal, asking the client to come back in 5 s.
    pub(crate) fn retry_later(self) -> Refusal {
        Refusal {
            retry_after: true,
            ..self
        }
    }
}

/// The key a request may present, wherever its front end found it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presented<'a> {
    /// The `Authorization` header's value.
    pub(crate) authorization: Option<&'a [u8]>,
    /// The raw query, for `token=KEY` (browsers cannot set headers on a
    /// WebSocket or an `EventSource`).
    pub(crate) query: Option<&'a str>,
    /// The request's path, for the log lines.
    pub(crate) path: &'a str,
}

/// The outcome of [`authorize`]: the key's identity (`None`: the server has
/// no keys, or the endpoint needs none), or why the request is refused.
pub(crate) type Decision = Result<Option<Arc<Identity>>, Refusal>;

/// Checks the API key a request presents, when the server has keys. A
/// refusal is counted (`tickwire_upgrades_refused_total`) and logged here;
/// the key itself is never logged, only its configured name.
pub(crate) fn authorize(
    ctx: &Context,
    front: Front,
    kind: SessionKind,
    presented: Presented<'_>,
    peer: IpAddr,
) -> Decision {
    let (Some(keys), Some(want)) = (&ctx.config.auth, kind.role()) else {
        return Ok(None);
    };
    let path = presented.path;
    let refuse = |status: StatusCode, counter: Counter, challenge, why: &str| {
        Stats::add(&ctx.fanout.stats.upgrades_refused[counter as usize], 1);
        Refusal {
            challenge,
            ..Refusal::new(status, why)
        }
    };
    let unauthorized = |challenge: &'static str, why: &str| {
        tracing::debug!(%peer, path, why, "upgrade refused: 401");
        refuse(
            StatusCode::UNAUTHORIZED,
            Counter::Unauthorized,
            Some(challenge),
            why,
        )
    };
    let Some(key) = presented_key(presented.authorization, presented.query) else {
        // On /v1/sse the URL already has a query (`?symbols=`).
        return Err(unauthorized(
            r#"Bearer realm="tickwire""#,
            match front {
                Front::WebSocket => {
                    "an API key is required: send `Authorization: Bearer KEY` or add `?token=KEY` to the URL"
                }
                Front::Sse => {
                    "an API key is required: send `Authorization: Bearer KEY` or add `&token=KEY` to the URL"
                }
            },
        ));
    };
    let Some(identity) = keys.find(key) else {
        return Err(unauthorized(
            r#"Bearer realm="tickwire", error="invalid_token""#,
            "the API key is not valid",
        ));
    };
    if identity.role != want {
        tracing::info!(%peer, key = identity.name, path, "upgrade refused: 403");
        let why = match identity.role {
            Role::Subscriber => "this API key may subscribe (/v1/stream) but not publish",
            Role::Publisher => "this API key may publish (/v1/publish) but not subscribe",
        };
        return Err(refuse(StatusCode::FORBIDDEN, Counter::Forbidden, None, why));
    }
    Ok(Some(identity))
}

/// Takes a place under the connection limits (total, per address, per key,
/// publishers), held by the returned [`Permit`] until the client is gone.
pub(crate) fn admit(
    ctx: &Context,
    front: Front,
    kind: SessionKind,
    identity: Option<&Identity>,
    peer: IpAddr,
) -> Result<Permit, Refusal> {
    ctx.admission
        .admit(peer, kind == SessionKind::Publisher, identity)
        .map_err(|refused| {
            tracing::debug!(%peer, %refused, "upgrade refused");
            // `/v1/sse` has never counted its limit refusals (only its 401
            // and 403): kept as it was.
            if front == Front::WebSocket {
                Stats::add(
                    &ctx.fanout.stats.upgrades_refused[Counter::Limit as usize],
                    1,
                );
            }
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).retry_later()
        })
}

/// The `status` message a new client gets first when the feed is not live
/// (on a gateway whose bus is down); later changes reach it from the
/// fan-out worker.
pub(crate) fn feed_status(ctx: &Context, encoding: Encoding) -> Option<Bytes> {
    let status = ctx.bus.as_ref()?.current_status();
    (status != FeedStatus::Live).then(|| status_message(&status, encoding))
}

/// A client registered with its worker's fan-out: counted in its gauge,
/// its writer task running, its open line logged. Dropping it removes the
/// client and every subscription it held, uncounts it, logs the close line
/// and gives its admission place back.
pub(crate) struct ClientGuard {
    /// The worker the client is registered with.
    ctx: Rc<Context>,
    /// The client's slot in the fan-out worker.
    id: ClientId,
    /// Which gauge counts it; named in the log lines.
    kind: SessionKind,
    /// The client's encoding: `hello.protocol`, and the log lines.
    encoding: Encoding,
    /// The peer's address, for the log lines (`?` if unknown).
    peer: String,
    /// The API key, when the server has keys: its entitlements, and its
    /// name in the log lines.
    identity: Option<Arc<Identity>>,
    /// Notified by the fan-out when it gives up on the client (evicted,
    /// write failed, close grace over): the session then ends.
    kill: Rc<Notify>,
    /// Writes the client's queue out whenever its socket was full.
    writer: JoinHandle<()>,
    /// Why the connection ended, for the close line, unless the fan-out
    /// recorded a reason of its own.
    reason: Cell<&'static str>,
    /// The admission place; released after the client is removed.
    _permit: Permit,
}

impl ClientGuard {
    /// Registers a streaming connection as a fan-out client: `early` (bytes
    /// read past the request) is read first from the returned half.
    pub(crate) fn open(
        ctx: Rc<Context>,
        conn: Conn,
        early: Bytes,
        kind: SessionKind,
        encoding: Encoding,
        identity: Option<Arc<Identity>>,
        permit: Permit,
    ) -> (ClientGuard, ReadHalf) {
        let peer = conn
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |p| p.to_string());
        if kind == SessionKind::Subscriber {
            let _ = socket2::SockRef::from(conn.tcp())
                .set_send_buffer_size(ctx.config.socket_send_buffer);
        }
        let (read, write) = conn.into_split(early);
        let fanout = &ctx.fanout;
        let id = fanout.state.borrow_mut().add_client(
            write,
            fanout.stats.clone(),
            ctx.config.client_buffer_bytes,
            encoding,
        );
        let (wake, kill) = {
            let mut st = fanout.state.borrow_mut();
            let c = st.client(id).expect("just added");
            // A key limited to some symbols: `*` delivers only those.
            c.set_entitlement(entitled(identity.as_ref()).cloned());
            (c.writer_wake.clone(), c.kill.clone())
        };
        if let Some(g) = kind.gauge(&fanout.stats) {
            g.fetch_add(1, Ordering::Relaxed);
        }
        Stats::add(&fanout.stats.connections_total, 1);
        let writer = tokio::task::spawn_local(fanout.clone().run_writer(id, wake));
        let guard = ClientGuard {
            ctx: ctx.clone(),
            id,
            kind,
            encoding,
            peer,
            identity,
            kill,
            writer,
            reason: Cell::new("client closed"),
            _permit: permit,
        };
        tracing::info!(
            worker = ctx.fanout.id,
            client = id,
            peer = %guard.peer,
            kind = kind.as_str(),
            key = guard.key_name(),
            protocol = encoding.protocol(),
            "connection open"
        );
        (guard, read)
    }

    pub(crate) fn context(&self) -> &Rc<Context> {
        &self.ctx
    }

    pub(crate) fn id(&self) -> ClientId {
        self.id
    }

    pub(crate) fn kind(&self) -> SessionKind {
        self.kind
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// What the key may see; `None`: everything.
    pub(crate) fn entitlement(&self) -> Option<&Arc<Entitlement>> {
        entitled(self.identity.as_ref())
    }

    /// Notified when the fan-out has given up on the client.
    pub(crate) fn kill(&self) -> Rc<Notify> {
        self.kill.clone()
    }

    /// Sets the close line's reason (the fan-out's own, if any, wins).
    pub(crate) fn set_reason(&self, reason: &'static str) {
        self.reason.set(reason);
    }

    /// Queues a control frame and flushes it.
    pub(crate) fn send(&self, frame: Bytes) {
        let mut st = self.ctx.fanout.state.borrow_mut();
        if let Some(c) = st.client(self.id) {
            c.push_control(frame);
        }
        st.flush_client(self.id);
    }

    /// Starts the close (a Close frame, or the end of an SSE stream),
    /// waiting at most the close grace for the peer.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut st = self.ctx.fanout.state.borrow_mut();
        if let Some(c) = st.client(self.id) {
            c.close(code, reason, self.ctx.config.close_timeout);
        }
        st.flush_client(self.id);
    }

    fn key_name(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.name.as_str())
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.writer.abort();
        let fanout = &self.ctx.fanout;
        let client = fanout.state.borrow_mut().remove_client(self.id);
        if let Some(g) = self.kind.gauge(&fanout.stats) {
            g.fetch_sub(1, Ordering::Relaxed);
        }
        let (dropped, frames, end_reason) = client
            .map(|c| (c.dropped, c.frames_sent, c.end_reason))
            .unwrap_or_default();
        tracing::info!(
            worker = fanout.id,
            client = self.id,
            peer = %self.peer,
            kind = self.kind.as_str(),
            key = self.key_name(),
            protocol = self.encoding.protocol(),
            reason = end_reason.unwrap_or(self.reason.get()),
            frames,
            dropped,
            "connection closed"
        );
    }
}

/// A key's entitlement when it limits anything.
fn entitled(identity: Option<&Arc<Identity>>) -> Option<&Arc<Entitlement>> {
    identity.map(|i| &i.entitlement).filter(|e| !e.is_all())
}

/// Takes the names `entitlement` does not allow out of `symbols` and
/// returns them, in request order. A WebSocket subscribes the rest and says
/// what was left out; `/v1/sse`, with no error channel once it streams,
/// refuses the request whole.
pub(crate) fn withhold_unentitled(
    entitlement: Option<&Entitlement>,
    symbols: &mut SymbolList,
) -> Vec<String> {
    let mut denied = Vec::new();
    if let Some(e) = entitlement {
        symbols.names.retain(|n| {
            let ok = e.allows(n);
            if !ok {
                denied.push(n.clone());
            }
            ok
        });
    }
    denied
}

/// Why a subscribe was refused whole.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    /// A new symbol would take the server past `--max-symbols`.
    Symbols(TableFull),
    /// The connection would hold more keys than `max_keys_per_connection`.
    TooManyKeys { total: usize, limit: usize },
}

impl SubscribeError {
    /// The reason as the front end words it: in an `error` message on a
    /// WebSocket, in a 400 on `/v1/sse`.
    pub(crate) fn message(&self, front: Front) -> String {
        match (self, front) {
            (SubscribeError::Symbols(e), _) => format!("{e}; nothing was subscribed"),
            (SubscribeError::TooManyKeys { total, limit }, Front::WebSocket) => format!(
                "this would make {total} subscribed (symbol, channel) keys on this connection; the limit is {limit}. Nothing was subscribed"
            ),
            (SubscribeError::TooManyKeys { total, limit }, Front::Sse) => {
                format!("{total} (symbol, channel) keys requested; the limit is {limit}")
            }
        }
    }
}

/// A subscribe checked and ready to apply: its symbols interned, its keys
/// within the connection's limit. Nothing has changed yet.
pub(crate) struct Plan<'a> {
    /// The request's symbols (`*` and names, entitled ones only).
    pub(crate) symbols: &'a SymbolList,
    /// Each named symbol with its id, in request order.
    pub(crate) named: Vec<(&'a str, SymbolId)>,
    /// Every named (symbol, channel) key.
    pub(crate) keys: Vec<KeyId>,
    pub(crate) channels: ChannelSet,
    /// Whether the keys' last values are sent first.
    pub(crate) snapshot: bool,
}

impl<'a> Plan<'a> {
    /// Interns the symbols and checks the key limit, counting the keys the
    /// client already holds (`client`: `None` before it is registered).
    pub(crate) fn new(
        ctx: &Context,
        client: Option<&ClientGuard>,
        symbols: &'a SymbolList,
        channels: ChannelSet,
        snapshot: bool,
    ) -> Result<Plan<'a>, SubscribeError> {
        let table = ctx.fanout.ingest.symbols();
        let named = symbols
            .names
            .iter()
            .map(|name| Ok((name.as_str(), table.intern(name)?.0)))
            .collect::<Result<Vec<_>, TableFull>>()
            .map_err(SubscribeError::Symbols)?;
        let keys: Vec<KeyId> = named
            .iter()
            .flat_map(|&(_, sid)| channels.iter().map(move |ch| KeyId::new(sid, ch)))
            .collect();
        let st = ctx.fanout.state.borrow();
        let held = client.and_then(|g| st.clients.get(g.id));
        let new = keys
            .iter()
            .filter(|&&k| held.is_none_or(|c| !c.is_subscribed(k)))
            .count();
        let total = held.map_or(0, Client::named_keys) + new;
        let limit = ctx.config.max_keys_per_connection;
        if total > limit {
            return Err(SubscribeError::TooManyKeys { total, limit });
        }
        Ok(Plan {
            symbols,
            named,
            keys,
            channels,
            snapshot,
        })
    }

    /// The channels subscribed for `*`, if it was named.
    fn star(&self) -> ChannelSet {
        if self.symbols.all {
            self.channels
        } else {
            ChannelSet::default()
        }
    }
}

/// Applies a [`Plan`] to a registered client. On a gateway it first waits
/// (at most [`SNAPSHOT_WAIT`]) until the bus subscriptions are in place and
/// the snapshot's last values are here, holding the interest until the
/// client's own subscription takes over. Then it subscribes the keys (and
/// `*`), lets the front end queue its answer (`reply`: `subscribed`, or the
/// SSE response head), queues the snapshot and flushes.
pub(crate) async fn subscribe(
    client: &ClientGuard,
    plan: &Plan<'_>,
    reply: impl FnOnce(&mut Client),
) {
    let ctx = &client.ctx;
    let _hold = match &ctx.bus {
        Some(bus) => {
            bus.prepare(&plan.keys, plan.star(), plan.snapshot, SNAPSHOT_WAIT)
                .await
        }
        None => None,
    };
    let id = client.id;
    let mut st = ctx.fanout.state.borrow_mut();
    if st.client(id).is_none() {
        return;
    }
    st.subscribe_keys(id, &plan.keys);
    if plan.symbols.all {
        st.subscribe_star(id, plan.channels);
    }
    if let Some(c) = st.client(id) {
        reply(c);
    }
    if plan.snapshot {
        // `*` takes every key's last value; the client's entitlement
        // filters them as it filters live ticks.
        let mut last: Vec<RingItem> = Vec::new();
        if plan.symbols.all {
            ctx.fanout.ingest.all_last_values(plan.channels, &mut last);
        } else {
            ctx.fanout
                .ingest
                .last_values(plan.keys.iter().copied(), &mut last);
        }
        st.offer_snapshots(id, &last);
    }
    st.flush_client(id);
}
