//! One Binance stream connection: its live requests, the message-rate
//! limit, the ping/pong keepalive, and the writes the hub left to it.
//!
//! Stream events reach the socket without this task: the hub queues them
//! in the connection's [`Outbox`] and writes it at the end of each batch.
//! The session reads requests (fastwebsockets, through the main
//! endpoint's [`MessageReader`], which enforces RFC 6455's framing rules),
//! queues its replies, pings, pongs and Close in the same outbox (so they
//! never split an event's frame and keep their place among the events),
//! and wakes only to read, to wait for room when the socket was full, to
//! ping, or to end the connection.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::OpCode;
use serde_json::Value;

use crate::binance::encode::TimeUnit;
use crate::binance::hub::{ConnId, Hub, SubscribeError};
use crate::binance::limits::{Limits, MessageRate};
use crate::binance::outbox::{Flushed, Outbox};
use crate::binance::request::{self, Method, RequestError};
use crate::net::transport::Conn;
use crate::server::session::reader::{Inbound, MessageReader, ReadEnd};
use crate::shutdown::Shutdown;
use crate::wire::frame::{OPCODE_PING, OPCODE_TEXT, close_code, frame};

/// How a connection starts: what the URL asked for.
pub struct Opening {
    /// Streams named in the path or `streams=` query.
    pub streams: Vec<String>,
    /// `/stream` (true) or `/ws` (false).
    pub combined: bool,
    /// `timeUnit=`.
    pub unit: TimeUnit,
}

/// Largest request message (a SUBSCRIBE of 1,024 streams is ~30 KiB); a
/// bigger one closes the connection with 1009.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long, once our Close is out, the client's EOF is waited for (a
/// Close still queued behind a full socket waits the pong timeout: a
/// client that reads nothing for that long is gone).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why the wait for the next message ended without one.
enum Woken {
    /// The outbox is finished (our Close is out, or the socket failed).
    Finished,
    /// Our Close is queued and the socket took none of it in time.
    CloseTimedOut,
}

/// Runs a connection until it closes. `early`: bytes the client sent
/// right after its upgrade request (hyper read them).
pub async fn run(
    conn: Conn,
    early: Bytes,
    hub: Rc<RefCell<Hub>>,
    limits: Limits,
    opening: Opening,
    mut shutdown: Shutdown,
) {
    let (read, write) = conn.into_split(early);
    let out = Rc::new(RefCell::new(Outbox::new(write, limits.queue_len)));
    let wake = out.borrow().wake();
    let id = hub
        .borrow_mut()
        .register(out.clone(), opening.combined, opening.unit);
    // The URL's streams were checked before the upgrade.
    let now = hub
        .borrow_mut()
        .subscribe(id, &opening.streams)
        .unwrap_or_default();
    for f in now {
        out.borrow_mut().push_control(f);
    }
    write_now(&out);
    let mut reader = MessageReader::new(read, MAX_REQUEST_BYTES, false, false).reporting_pings();
    // Pongs to the client's pings and the echo of its Close, in order
    // with everything queued.
    let obliged_out = out.clone();
    let mut obligated = move |op: OpCode, f: Bytes| {
        let mut o = obliged_out.borrow_mut();
        if op == OpCode::Close {
            o.close_with_frame(f);
        } else {
            o.push_control(f);
        }
    };
    let mut rate = MessageRate::new(limits.messages_per_sec);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    // When the oldest unanswered ping was sent.
    let mut ping_unanswered: Option<Instant> = None;
    // When our Close was queued (it must be out within the pong timeout).
    let mut closing_since: Option<tokio::time::Instant> = None;
    let mut shutting_down = false;
    loop {
        // The read future stays pinned while the rest happens:
        // `read_frame` is not cancel-safe.
        let next = {
            let read = reader.next(&mut obligated);
            tokio::pin!(read);
            loop {
                if out.borrow().is_finished() {
                    break Err(Woken::Finished);
                }
                if out.borrow().is_closing() {
                    closing_since.get_or_insert_with(tokio::time::Instant::now);
                }
                // Room on a full socket: only waited for while blocked.
                let writer = out
                    .borrow()
                    .write_half()
                    .filter(|_| out.borrow().is_blocked());
                let room = async {
                    match &writer {
                        Some(w) => w.writable().await,
                        None => std::future::pending().await,
                    }
                };
                let close_by = closing_since.map(|t| t + limits.pong_timeout);
                tokio::select! {
                    r = &mut read => break Ok(r),
                    _ = wake.notified() => {}
                    _ = room => write_now(&out),
                    _ = ping.tick() => {
                        let mut o = out.borrow_mut();
                        if ping_unanswered.is_some_and(|t| t.elapsed() >= limits.pong_timeout) {
                            o.close(close_code::POLICY, "Pong timeout");
                        } else {
                            ping_unanswered.get_or_insert_with(Instant::now);
                            let stamp = crate::model::tick::wall_clock_ns() / 1_000_000;
                            o.push_control(frame(OPCODE_PING, stamp.to_string().as_bytes()));
                        }
                        drop(o);
                        write_now(&out);
                    }
                    _ = shutdown.triggered(), if !shutting_down => {
                        shutting_down = true;
                        out.borrow_mut().close(close_code::GOING_AWAY, "Server shutting down");
                        write_now(&out);
                    }
                    _ = tokio::time::sleep_until(close_by.unwrap_or_else(tokio::time::Instant::now)),
                        if close_by.is_some() => break Err(Woken::CloseTimedOut),
                }
            }
        };
        let m = match next {
            Ok(Ok(m)) => m,
            // The peer went away, or broke the protocol: close with its code.
            Ok(Err(ReadEnd::Gone)) | Err(Woken::CloseTimedOut) => break,
            Ok(Err(ReadEnd::Violation(code, why))) => {
                out.borrow_mut().close(code, &why);
                write_now(&out);
                break;
            }
            Err(Woken::Finished) => {
                // Our Close is out: read until the client's EOF (closing a
                // socket with unread input resets it), within the grace.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    let mut discard = |_: OpCode, _: Bytes| {};
                    while reader.next(&mut discard).await.is_ok() {}
                })
                .await;
                break;
            }
        };
        if matches!(m, Inbound::Close) {
            // The echo is queued (`obligated`): write it and end.
            write_now(&out);
            break;
        }
        if out.borrow().is_closing() {
            continue; // nothing is answered after our Close
        }
        // Text, binary, ping and pong frames all count, as on Binance.
        if !rate.allow(Instant::now()) {
            out.borrow_mut()
                .close(close_code::POLICY, "Too many messages");
        } else if matches!(m, Inbound::Pong) {
            ping_unanswered = None;
        } else {
            answer(&hub, id, &out, m);
        }
        write_now(&out);
    }
    hub.borrow_mut().remove(id);
}

/// Answers a request (a text or binary message) in the outbox: its reply,
/// then what a SUBSCRIBE sends at once. A ping's pong is already queued
/// (`obligated`); an oversized message closed the connection.
fn answer(hub: &Rc<RefCell<Hub>>, id: ConnId, out: &Rc<RefCell<Outbox>>, m: Inbound) {
    let text = match m {
        Inbound::Text(t) => String::from_utf8_lossy(&t).into_owned(),
        Inbound::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        Inbound::Ping | Inbound::Pong | Inbound::Oversized(_) | Inbound::Close => return,
    };
    let (reply, now) = handle(hub, id, &text);
    let mut o = out.borrow_mut();
    o.push_control(frame(OPCODE_TEXT, reply.as_bytes()));
    for f in now {
        o.push_control(f);
    }
}

/// Writes what the outbox holds, unless the socket is known to be full
/// (then the session is already waiting for room).
fn write_now(out: &Rc<RefCell<Outbox>>) {
    let mut o = out.borrow_mut();
    if !o.is_finished() {
        // An error leaves the outbox finished: the loop ends the session.
        let _: Result<Flushed, _> = o.flush();
    }
}

/// Answers one request message: the reply, and the frames a SUBSCRIBE
/// sends at once after it (current partial depth, open kline).
fn handle(hub: &Rc<RefCell<Hub>>, id: ConnId, text: &str) -> (String, Vec<Bytes>) {
    let req = match request::parse(text) {
        Ok(r) => r,
        Err(e) => return (request::error_reply(&e), Vec::new()),
    };
    let mut now = Vec::new();
    let mut hub = hub.borrow_mut();
    let result = match req.method {
        Method::Subscribe(names) => match hub.subscribe(id, &names) {
            Ok(frames) => {
                now = frames;
                Value::Null
            }
            Err(e) => {
                let msg = match e {
                    SubscribeError::BadName(_) | SubscribeError::TooMany { .. } => {
                        format!("Invalid request: {e}")
                    }
                };
                return (
                    request::error_reply(&RequestError {
                        code: 2,
                        msg,
                        id: req.id,
                    }),
                    Vec::new(),
                );
            }
        },
        Method::Unsubscribe(names) => {
            hub.unsubscribe(id, &names);
            Value::Null
        }
        Method::ListSubscriptions => Value::from(hub.list(id)),
        Method::SetCombined(b) => {
            hub.set_combined(id, b);
            Value::Null
        }
        Method::GetCombined => Value::Bool(hub.combined(id)),
    };
    (request::result_reply(result, &req.id), now)
}
