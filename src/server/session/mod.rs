//! Sessions: one WebSocket connection each, subscriber or publisher.
//!
//! A session's task owns the connection's read side: it reads whole
//! messages ([`reader`]), answers control messages or takes in published
//! ticks, and when it ends its [`ClientGuard`] removes the client and its
//! subscriptions. Reading has its own task because fastwebsockets'
//! `read_frame` is not cancel-safe; writing goes through the client's outbox
//! in [`crate::pipeline::fanout`].

pub(crate) mod reader;

use bytes::Bytes;
use fastwebsockets::OpCode;
use tokio::io::AsyncRead;
use tokio::time::Instant;

use crate::access::rate::RateLimit;
use crate::model::tick::{ChannelSet, KeyId};
use crate::net::transport::ReadHalf;
use crate::pipeline::fanout::Client;
use crate::pipeline::ingest::{Admitted, FeedClock};
use crate::pipeline::stats::{Origin, Stats};
use crate::server::context::Context;
use crate::server::subscriber::{
    ClientGuard, Front, Plan, ResumeOutcome, SessionKind, epoch_str, feed_status, subscribe,
    withhold_unentitled,
};
use crate::shutdown::Shutdown;
use crate::wire::encode::Encoding;
use crate::wire::error::{ErrorCode, ProtocolError};
use crate::wire::frame::{OPCODE_BINARY, OPCODE_PING, OPCODE_TEXT, close_code, frame};
use crate::wire::oversized::{SizeLimits, oversized_error};
use crate::wire::publish::{Published, parse_publish};
use crate::wire::reply;
use crate::wire::request::{Request, SymbolList, parse_request};
use reader::{Inbound, MessageReader, ReadEnd};

/// The largest message this kind of session reads (bigger: answered
/// `message_too_large`; the echo closes 1009).
fn max_message_bytes(c: &crate::server::config::Config, kind: SessionKind) -> usize {
    match kind {
        SessionKind::Echo => c.echo_max_message_bytes,
        SessionKind::Subscriber => c.subscriber_max_message_bytes(),
        SessionKind::Publisher => c.max_message_bytes,
    }
}

/// The `hello` a session starts with.
fn hello_frame(ctx: &Context, kind: SessionKind, encoding: Encoding) -> Bytes {
    let c = &ctx.config;
    reply::hello(
        encoding.protocol(),
        kind.as_str(),
        &epoch_str(&ctx.fanout.ingest),
        &reply::HelloLimits {
            max_message_bytes: max_message_bytes(c, kind),
            max_keys_per_connection: c.max_keys_per_connection,
            control_per_sec: c.control_rate_per_sec,
            control_burst: c.control_burst,
            client_buffer_bytes: c.client_buffer_bytes,
            evict_after_ms: c.evict_after.as_millis(),
        },
    )
}

/// Runs one upgraded connection to completion; the client is removed when
/// `client` is dropped at the end.
pub(crate) async fn run(client: ClientGuard, read: ReadHalf, shutdown: Shutdown) {
    let ctx = client.context().clone();
    let kill = client.kill();
    let kind = client.kind();
    let mut session = Session {
        limit: RateLimit::new(ctx.config.control_rate_per_sec, ctx.config.control_burst),
        client,
        clock: FeedClock::new(),
    };
    // A conformance peer expects nothing but its own messages back.
    if kind != SessionKind::Echo {
        let encoding = session.client.encoding();
        session.client.send(hello_frame(&ctx, kind, encoding));
        if let Some(status) = feed_status(&ctx, encoding) {
            session.client.send(status);
        }
    }

    // Subscribers and publishers are answered when a message is too large;
    // a conformance peer is closed with 1009, as RFC 6455 suggests.
    let answer_oversized = kind != SessionKind::Echo;
    let reader = MessageReader::new(
        read,
        max_message_bytes(&ctx.config, kind),
        answer_oversized,
        kind == SessionKind::Publisher,
    );
    tokio::select! {
        _ = session.read_loop(reader, shutdown) => {}
        _ = kill.notified() => {}
    }
}

/// A WebSocket session's state besides its reader.
struct Session {
    /// The fan-out client; dropped with the session, which removes it.
    client: ClientGuard,
    /// Control messages (and publishers' pings) are rate limited.
    limit: RateLimit,
    /// A publisher's own time: the bars of the symbols it trades close by
    /// it, not by other publishers' (which may replay another date).
    clock: FeedClock,
}

impl Session {
    fn ctx(&self) -> &Context {
        self.client.context()
    }

    fn refuse(&self, e: &ProtocolError) {
        Stats::add(&self.ctx().fanout.stats.request_errors, 1);
        self.client.send(reply::error(e));
    }

    async fn read_loop<S: AsyncRead + Unpin>(
        &mut self,
        mut reader: MessageReader<S>,
        mut shutdown: Shutdown,
    ) {
        let ctx = self.client.context().clone();
        let id = self.client.id();
        let mut obligated = |op: OpCode, frame: Bytes| {
            let mut st = ctx.fanout.state.borrow_mut();
            if let Some(c) = st.client(id) {
                if op == OpCode::Close {
                    c.close_with_frame(frame, ctx.config.close_timeout);
                } else {
                    c.push_control(frame);
                }
            }
            st.flush_client(id);
        };
        let kind = self.client.kind();
        let mut shutting_down = false;
        // Idle timeout: a peer silent for half of it is pinged; one still
        // silent at the end of it is closed with 1008 (policy: it does not
        // keep the connection alive), once.
        let idle = self.ctx().config.idle_timeout;
        let heard = reader.heard();
        let mut pinged_at: Option<Instant> = None;
        let mut idle_closed = idle.is_zero();
        loop {
            // The read future stays pinned while timers and shutdown fire:
            // `read_frame` is not cancel-safe, so it is never dropped midway.
            let next = {
                let read = reader.next(&mut obligated);
                tokio::pin!(read);
                loop {
                    let last = heard.get();
                    let ping_due = !idle_closed && pinged_at.is_none_or(|p| p < last);
                    tokio::select! {
                        r = &mut read => break r,
                        _ = shutdown.triggered(), if !shutting_down => {
                            shutting_down = true;
                            self.client.set_reason("server shutting down");
                            self.client.close(close_code::GOING_AWAY, "server shutting down");
                        }
                        // The read future takes pongs in without returning, so
                        // a timer may fire on a stale `last`: check it again.
                        _ = tokio::time::sleep_until(last + idle / 2), if ping_due => {
                            if heard.get() != last {
                                continue;
                            }
                            self.client.send(frame(OPCODE_PING, b"idle"));
                            pinged_at = Some(Instant::now());
                        }
                        _ = tokio::time::sleep_until(last + idle), if !idle_closed => {
                            if heard.get() != last {
                                continue;
                            }
                            idle_closed = true;
                            self.client.set_reason("idle timeout");
                            self.client.close(close_code::POLICY, "idle timeout: no answer to ping");
                        }
                    }
                }
            };
            let closing = self
                .ctx()
                .fanout
                .state
                .borrow_mut()
                .client(id)
                .is_none_or(|c| c.is_closing());
            match next {
                Err(ReadEnd::Gone) => return,
                Ok(Inbound::Close) => {
                    // Our echo of the Close is queued (a second Close from
                    // the peer is ignored). Read on until the peer's EOF,
                    // within the close grace: closing a socket with unread
                    // input would reset the connection instead of ending it.
                    self.drain(&mut reader).await;
                    return;
                }
                Err(ReadEnd::Violation(code, why)) => {
                    // An oversized message breaks a limit, not the protocol.
                    let reason = if code == close_code::TOO_BIG {
                        "message too big (1009)"
                    } else {
                        "protocol violation"
                    };
                    tracing::debug!(client = id, code, why, reason, "closing the connection");
                    self.client.set_reason(reason);
                    self.client.close(code, &why);
                    self.drain(&mut reader).await;
                    return;
                }
                Ok(_) if closing => continue,
                // Not reported: this reader was not made `reporting_pings`.
                Ok(Inbound::Ping | Inbound::Pong) => continue,
                Ok(Inbound::Text(payload)) if kind == SessionKind::Echo => {
                    self.client.send(frame(OPCODE_TEXT, &payload));
                }
                Ok(Inbound::Binary(payload)) if kind == SessionKind::Echo => {
                    self.client.send(frame(OPCODE_BINARY, &payload));
                }
                Ok(Inbound::Binary(_)) => {
                    // A frame the session must answer costs a token like any.
                    if kind == SessionKind::Subscriber && self.rate_limited() {
                        continue;
                    }
                    self.refuse(&ProtocolError::new(
                        None,
                        ErrorCode::BadJson,
                        "binary frames are not accepted here; send JSON text frames",
                    ))
                }
                Ok(Inbound::Oversized(message)) => {
                    if kind == SessionKind::Subscriber && self.rate_limited() {
                        continue;
                    }
                    let limits = SizeLimits {
                        max_message_bytes: max_message_bytes(&self.ctx().config, kind),
                        max_keys_per_connection: (kind == SessionKind::Subscriber)
                            .then_some(self.ctx().config.max_keys_per_connection),
                    };
                    tracing::debug!(
                        client = id,
                        bytes = message.bytes,
                        "oversized message ignored"
                    );
                    self.refuse(&oversized_error(&message, &limits));
                }
                Ok(Inbound::Text(mut payload)) => match kind {
                    SessionKind::Subscriber => self.on_control(&mut payload).await,
                    SessionKind::Publisher => self.on_publish(&payload).await,
                    SessionKind::Echo => {}
                },
            }
        }
    }

    /// After a Close has been sent: reads and discards until the peer's EOF
    /// or the close grace runs out.
    async fn drain<S: AsyncRead + Unpin>(&self, reader: &mut MessageReader<S>) {
        let _ = tokio::time::timeout(self.ctx().config.close_timeout, async {
            let mut discard = |_: OpCode, _: Bytes| {};
            while reader.next(&mut discard).await.is_ok() {}
        })
        .await;
    }

    fn rate_limited(&mut self) -> bool {
        if self.limit.allow() {
            return false;
        }
        if self.limit.is_flood() {
            self.client.set_reason("control message flood");
            self.client
                .close(close_code::POLICY, "too many control messages");
        } else {
            self.refuse(&ProtocolError::new(
                None,
                ErrorCode::RateLimited,
                format!(
                    "more than {} control messages per second (burst {}); this message was ignored",
                    self.ctx().config.control_rate_per_sec,
                    self.ctx().config.control_burst
                ),
            ));
        }
        true
    }

    async fn on_control(&mut self, payload: &mut [u8]) {
        if self.rate_limited() {
            return;
        }
        match parse_request(payload) {
            Err(e) => self.refuse(&e),
            Ok(Request::Ping { id }) => {
                self.client.send(reply::pong(id));
            }
            Ok(Request::Symbols { id }) => {
                let seen = self.ctx().fanout.ingest.symbols().seen();
                let entitlement = self.client.entitlement();
                let entitled = |n: &&str| entitlement.is_none_or(|e| e.allows(n));
                self.client.send(reply::symbols(
                    id,
                    seen.iter().map(|(n, _)| n.as_ref()).filter(entitled),
                ));
            }
            Ok(Request::Subscribe {
                id,
                mut symbols,
                channels,
                snapshot,
                depth,
                resume,
                policy,
            }) => {
                // The one partial success: symbols outside the key's
                // entitlements are refused, the rest are subscribed.
                let limit = self.ctx().config.max_keys_per_connection;
                if let Some(r) = &resume
                    && r.seqs.len() > limit
                {
                    return self.refuse(&ProtocolError::new(
                        id,
                        ErrorCode::TooManySymbols,
                        format!(
                            "`resume.seq` names {} keys; the per-connection limit is {limit}. Nothing was subscribed",
                            r.seqs.len()
                        ),
                    ));
                }
                let entitlement = self.client.entitlement().map(|e| &**e);
                let denied = withhold_unentitled(entitlement, &mut symbols);
                let mut any = symbols.all || !symbols.names.is_empty();
                if any {
                    let client = &self.client;
                    match Plan::new(self.ctx(), Some(client), &symbols, channels, snapshot) {
                        Ok(plan) => {
                            let mut plan = plan.with_depth(depth);
                            plan.resume = resume;
                            plan.policy = policy;
                            subscribe(client, &plan, |c, outcome| {
                                subscribed(client, c, id, &plan, outcome)
                            })
                            .await;
                        }
                        Err(e) => {
                            // All-or-nothing for the entitled part.
                            any = false;
                            self.refuse(&ProtocolError::new(
                                id,
                                ErrorCode::TooManySymbols,
                                e.message(Front::WebSocket),
                            ));
                        }
                    }
                }
                if !denied.is_empty() {
                    self.refuse_unentitled(id, &denied, any);
                }
            }
            Ok(Request::Unsubscribe {
                id,
                symbols,
                channels,
            }) => self.unsubscribe(id, &symbols, channels),
        }
    }

    /// `unauthorized`, naming the symbols the key may not see.
    fn refuse_unentitled(&self, id: Option<i64>, denied: &[String], others: bool) {
        const SHOWN: usize = 10;
        let mut list = denied
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if denied.len() > SHOWN {
            list.push_str(&format!(" and {} more", denied.len() - SHOWN));
        }
        let rest = if others {
            "the other symbols of the request were subscribed"
        } else {
            "nothing was subscribed"
        };
        Stats::add(&self.ctx().fanout.stats.request_errors, 1);
        self.client.send(reply::unauthorized(
            id,
            &format!("this API key is not entitled to {list}; {rest}"),
            denied,
        ));
    }

    fn unsubscribe(&self, id: Option<i64>, symbols: &SymbolList, channels: ChannelSet) {
        let w = self.ctx();
        let me = self.client.id();
        let table = w.fanout.ingest.symbols();
        let keys: Vec<KeyId> = symbols
            .names
            .iter()
            .filter_map(|n| table.lookup(n))
            .flat_map(|(sid, _)| channels.iter().map(move |ch| KeyId::new(sid, ch)))
            .collect();
        let mut st = w.fanout.state.borrow_mut();
        st.unsubscribe_keys(me, &keys);
        if symbols.all {
            st.unsubscribe_star(me, channels);
        }
        let mut names: Vec<&str> = symbols.names.iter().map(String::as_str).collect();
        if symbols.all {
            names.insert(0, "*");
        }
        if let Some(c) = st.client(me) {
            c.push_control(reply::unsubscribed(id, names, channels));
        }
        st.flush_client(me);
    }

    async fn on_publish(&mut self, payload: &[u8]) {
        let mut batch: Vec<Admitted> = Vec::new();
        for item in parse_publish(payload) {
            match item {
                Ok(Published::Tick(t)) => match self.ctx().fanout.ingest.admit(t) {
                    Ok(a) => batch.push(a),
                    Err(e) => {
                        Stats::add(&self.ctx().fanout.stats.publish_errors, 1);
                        self.refuse(&ProtocolError::new(
                            None,
                            ErrorCode::TooManySymbols,
                            e.to_string(),
                        ));
                    }
                },
                Ok(Published::Book { sym, ts, change }) => {
                    // In order with the ticks before it.
                    let ingest = &self.ctx().fanout.ingest;
                    ingest
                        .publish_from_source(&batch, Origin::Publisher, &self.clock)
                        .await;
                    batch.clear();
                    let refused = match ingest.admit_book(&sym, ts, change) {
                        Ok(b) => ingest
                            .publish_book_from_source(&b, Origin::Publisher, &self.clock)
                            .await
                            .err()
                            .map(|e| ProtocolError::new(None, ErrorCode::BadBook, e.to_string())),
                        Err(e) => Some(ProtocolError::new(
                            None,
                            ErrorCode::TooManySymbols,
                            e.to_string(),
                        )),
                    };
                    if let Some(e) = refused {
                        Stats::add(&self.ctx().fanout.stats.publish_errors, 1);
                        self.refuse(&e);
                    }
                }
                Ok(Published::Reference {
                    id,
                    sym,
                    instrument,
                }) => {
                    // Not sequenced: applied at once, for `/v1/symbols?ref=1`.
                    let ctx = self.ctx();
                    if let Err(e) =
                        ctx.config
                            .reference
                            .set(&sym, instrument, ctx.config.max_symbols)
                    {
                        Stats::add(&ctx.fanout.stats.publish_errors, 1);
                        self.refuse(&ProtocolError::new(
                            id,
                            ErrorCode::TooManySymbols,
                            e.to_string(),
                        ));
                    }
                }
                Ok(Published::Ping { id }) => {
                    // A pong confirms every tick before it has been ingested.
                    self.publish(&batch).await;
                    batch.clear();
                    if self.rate_limited() {
                        continue;
                    }
                    self.client.send(reply::pong(id));
                }
                Err(e) => {
                    Stats::add(&self.ctx().fanout.stats.publish_errors, 1);
                    self.refuse(&e);
                }
            }
        }
        // Waits while the ring is full: this publisher is not read meanwhile.
        self.publish(&batch).await;
    }

    /// Publishes ticks of this publisher, on its clock.
    async fn publish(&self, batch: &[Admitted]) {
        self.ctx()
            .fanout
            .ingest
            .publish_from_source(batch, Origin::Publisher, &self.clock)
            .await;
    }
}

/// Queues the `subscribed` reply: the symbols and channels subscribed, with
/// every symbol's id (`*`: every symbol seen so far that the key may see).
fn subscribed(
    client: &ClientGuard,
    c: &mut Client,
    id: Option<i64>,
    plan: &Plan<'_>,
    outcome: &ResumeOutcome,
) {
    let mut names: Vec<&str> = plan.named.iter().map(|&(n, _)| n).collect();
    let seen;
    let id_pairs: Vec<(&str, u32)> = if plan.symbols.all {
        names.insert(0, "*");
        seen = client.context().fanout.ingest.symbols().seen();
        let entitlement = client.entitlement();
        let mut v: Vec<(&str, u32)> = seen
            .iter()
            .filter(|(n, _)| entitlement.is_none_or(|e| e.allows(n)))
            .map(|(n, i)| (n.as_ref(), *i))
            .collect();
        v.extend(
            plan.named
                .iter()
                .filter(|(n, _)| !seen.iter().any(|(s, _)| s.as_ref() == *n))
                .copied(),
        );
        v
    } else {
        plan.named.clone()
    };
    let ingest = &client.context().fanout.ingest;
    c.push_control(reply::subscribed(
        id,
        names,
        plan.channels,
        id_pairs.iter().copied(),
        &reply::Position {
            epoch: &epoch_str(ingest),
            offset: outcome.offset,
            resumed: plan.resume.as_ref().map(|_| outcome.json()),
        },
    ));
    c.learn_ids(id_pairs.iter().map(|&(_, sid)| sid));
}
