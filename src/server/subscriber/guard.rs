//! A client's registration with its worker's fan-out, for as long as the
//! connection lives.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::SessionKind;
use crate::access::auth::{Entitlement, Identity};
use crate::access::limits::Permit;
use crate::model::feed::FeedStatus;
use crate::net::transport::{Conn, ReadHalf};
use crate::pipeline::fanout::ClientId;
use crate::pipeline::stats::Stats;
use crate::server::context::Context;
use crate::wire::encode::Encoding;
use crate::wire::message::status_message;

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

/// A connection taken back from HTTP for a streaming session.
pub(crate) struct TakenConn {
    /// The socket, plain or TLS.
    pub(crate) conn: Conn,
    /// The client: the socket's peer, or the one a trusted load
    /// balancer's PROXY header named.
    pub(crate) peer: SocketAddr,
    /// Bytes read past the request, read first by the session.
    pub(crate) early: Bytes,
}

impl ClientGuard {
    /// Registers a streaming connection as a fan-out client: its `early`
    /// bytes are read first from the returned half.
    pub(crate) fn open(
        ctx: Rc<Context>,
        TakenConn { conn, peer, early }: TakenConn,
        kind: SessionKind,
        encoding: Encoding,
        identity: Option<Arc<Identity>>,
        permit: Permit,
    ) -> (ClientGuard, ReadHalf) {
        let peer = peer.to_string();
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

    /// How `ts`/`rx` are written in this client's JSON ticks (`?ts=`).
    pub(crate) fn set_ts_format(&self, format: crate::wire::ts_format::TsFormat) {
        if let Some(c) = self.ctx.fanout.state.borrow_mut().client(self.id) {
            c.set_ts_format(format);
        }
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
