//! Server-Sent Events on `GET /v1/sse?symbols=A,B&channels=trade,quote`.
//!
//! An SSE subscriber is an ordinary fan-out client in [`Encoding::Sse`]: its
//! ticks go through the same outbox (byte cap, one pending slot per key,
//! writer task, eviction) as WebSocket subscribers, written straight to the
//! connection. To own that connection, the server recognises `GET /v1/sse`
//! by peeking at the first bytes of a new connection before hyper sees them
//! (over TLS: at the first decrypted bytes, read ahead and kept for hyper),
//! and answers the request by hand: hyper only gives a connection back for
//! a 101 upgrade, and a streaming hyper body would add a second, unbounded
//! buffer (hyper's) between the outbox and the socket that hides whether the
//! client is keeping up. HTTP keep-alive is off, so every request is the
//! first on its connection and can be recognised this way.
//!
//! The response is HTTP/1.1 200 with `Connection: close` and no length: the
//! stream is the body and ends when the connection does.

mod request;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::access::auth::Identity;
use crate::access::limits::Permit;
use crate::net::transport::{Conn, ReadHalf};
use crate::server::context::Context;
use crate::server::subscriber::{
    ClientGuard, Front, Plan, Presented, Refusal, SessionKind, TakenConn, admit, authorize,
    feed_status, subscribe, withhold_unentitled,
};
use crate::shutdown::Shutdown;
use crate::wire::encode::Encoding;
use crate::wire::frame::close_code;
use crate::wire::reply;

pub(crate) use request::{Peeked, peek};
use request::{SseRequest, bad, event_id_position, parse_head, read_head};

/// The endpoint's path.
pub(crate) const PATH: &str = "/v1/sse";

/// The heartbeat comment.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The answer that opens the stream: no length, the stream ends with the
/// connection.
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\r\n";

/// Writes a plain-text error response and ends the connection.
async fn refuse(stream: &mut Conn, r: &Refusal) {
    let body = format!("{}\n", r.message);
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{}{}\r\n",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or("Error"),
        body.len(),
        if r.retry_after {
            "Retry-After: 5\r\n"
        } else {
            ""
        },
        r.challenge
            .map(|c| format!("WWW-Authenticate: {c}\r\n"))
            .unwrap_or_default(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one connection whose first request is `GET /v1/sse…`.
/// `timeout` is what is left of the handshake budget for the request head.
pub(crate) async fn serve(
    ctx: Rc<Context>,
    mut conn: Conn,
    peer: SocketAddr,
    shutdown: Shutdown,
    timeout: Duration,
) {
    let (req, identity, permit) = match accept(&ctx, &mut conn, peer, &shutdown, timeout).await {
        Ok(accepted) => accepted,
        Err(r) => return refuse(&mut conn, &r).await,
    };
    // Symbols and the key limit are checked before any byte of the stream.
    let mut plan = match Plan::new(&ctx, None, &req.symbols, req.channels, true) {
        Ok(plan) => plan.with_depth(req.depth),
        Err(e) => return refuse(&mut conn, &bad(e.message(Front::Sse))).await,
    };
    plan.policy = req.policy;
    plan.resume = req
        .last_event_id
        .as_deref()
        .and_then(|id| event_id_position(id, ctx.fanout.ingest.epoch()));
    // The head was read whole and a GET has no body: nothing to carry over.
    let (client, read) = ClientGuard::open(
        ctx,
        TakenConn {
            conn,
            peer,
            early: Bytes::new(),
        },
        SessionKind::Subscriber,
        Encoding::Sse,
        identity,
        permit,
    );
    client.set_ts_format(req.ts_format);
    stream(client, read, &req, &plan, shutdown).await;
}

/// Reads and checks the request up to its admission: the head, the API key
/// and its entitlements, the connection limits.
async fn accept(
    ctx: &Context,
    conn: &mut Conn,
    peer: SocketAddr,
    shutdown: &Shutdown,
    timeout: Duration,
) -> Result<(SseRequest, Option<Arc<Identity>>, Permit), Refusal> {
    let mut req = parse_head(&read_head(conn, timeout).await?)?;
    if shutdown.is_triggered() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .retry_later());
    }
    let presented = Presented {
        authorization: req.authorization.as_deref().map(str::as_bytes),
        query: Some(&req.query),
        path: PATH,
    };
    let identity = authorize(
        ctx,
        Front::Sse,
        SessionKind::Subscriber,
        presented,
        peer.ip(),
    )?;
    let entitlement = identity.as_ref().map(|i| &*i.entitlement);
    let denied = withhold_unentitled(entitlement, &mut req.symbols);
    if !denied.is_empty() {
        // An event stream has no error channel for a partial success:
        // refuse the request whole, naming what is not allowed.
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "this API key is not entitled to {}; nothing was streamed",
                denied.join(", ")
            ),
        ));
    }
    let permit = admit(
        ctx,
        Front::Sse,
        SessionKind::Subscriber,
        identity.as_deref(),
        peer.ip(),
    )?;
    Ok((req, identity, permit))
}

/// Subscribes a registered SSE client, answers with the response head (and
/// a resume's `status`), and streams until the peer or the server ends it.
async fn stream(
    client: ClientGuard,
    mut read: ReadHalf,
    req: &SseRequest,
    plan: &Plan<'_>,
    mut shutdown: Shutdown,
) {
    let ctx = client.context().clone();
    // The head is queued as the client is registered: on a gateway,
    // `subscribe` first waits for the bus, and a `status` broadcast to
    // every client meanwhile must come after `HTTP/1.1 200`, not before.
    if let Some(c) = ctx.fanout.state.borrow_mut().client(client.id()) {
        c.push_control(Bytes::from_static(RESPONSE_HEAD));
        c.push_control(crate::wire::sse::retry(ctx.config.sse_retry));
    }
    subscribe(&client, plan, |c, outcome| {
        if let Some(status) = feed_status(&ctx, Encoding::Sse) {
            c.push_control(status);
        }
        let epoch = ctx.fanout.ingest.epoch();
        let resumed = plan.resume.as_ref().map(|_| outcome.json());
        let unreadable = req.last_event_id.is_some() && plan.resume.is_none();
        c.push_control(reply::sse_position(&reply::SsePosition {
            epoch,
            offset: outcome.offset,
            last_event_id: req.last_event_id.as_deref(),
            resumed: resumed.as_deref(),
            unreadable,
        }));
    })
    .await;

    let id = client.id();
    let kill = client.kill();
    let every = ctx.config.sse_heartbeat.max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `heartbeat=MS`, started once the response head is queued.
    let beats = async {
        match req.heartbeat {
            Some(every) => crate::server::heartbeat::run(ctx.clone(), id, every).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(beats);
    let mut shutting_down = false;
    let mut discard = [0u8; 1024];
    loop {
        tokio::select! {
            // The client sends nothing after its request: anything is read
            // and dropped; EOF or an error ends the stream.
            r = read.read(&mut discard) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = kill.notified() => break,
            _ = &mut beats => {}
            _ = shutdown.triggered(), if !shutting_down => {
                shutting_down = true;
                client.set_reason("server shutting down");
                client.close(close_code::GOING_AWAY, "server shutting down");
            }
            _ = heartbeat.tick() => {
                let mut st = ctx.fanout.state.borrow_mut();
                if let Some(c) = st.client(id)
                    && !c.is_blocked()
                {
                    // A blocked client is not idle; its queue needs no more.
                    c.push_control(Bytes::from_static(HEARTBEAT));
                    st.flush_client(id);
                }
            }
        }
    }
}
