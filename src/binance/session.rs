//! One Binance stream connection: its queue of stream events, its live
//! requests, the message-rate limit and the ping/pong keepalive.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::binance::encode::TimeUnit;
use crate::binance::hub::{ConnId, Hub, SubscribeError};
use crate::binance::limits::{Limits, MessageRate};
use crate::binance::request::{self, Method, RequestError};
use crate::shutdown::Shutdown;

/// How a connection starts: what the URL asked for.
pub struct Opening {
    /// Streams named in the path or `streams=` query.
    pub streams: Vec<String>,
    /// `/stream` (true) or `/ws` (false).
    pub combined: bool,
    /// `timeUnit=`.
    pub unit: TimeUnit,
}

/// Stream events written per flush at most, so requests are read between.
const EVENTS_PER_FLUSH: usize = 256;

/// Runs a connection until it closes.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    hub: Rc<RefCell<Hub>>,
    limits: Limits,
    opening: Opening,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel(limits.queue_len);
    let id = hub
        .borrow_mut()
        .register(tx, opening.combined, opening.unit);
    // The URL's streams were checked before the upgrade.
    let _ = hub.borrow_mut().subscribe(id, &opening.streams);
    let (mut sink, mut stream) = ws.split();
    let mut rate = MessageRate::new(limits.messages_per_sec);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    // When the oldest unanswered ping was sent.
    let mut ping_unanswered: Option<Instant> = None;
    let close = |code: CloseCode, why: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: why.to_owned().into(),
        }))
    };
    loop {
        tokio::select! {
            m = stream.next() => {
                let Some(Ok(m)) = m else { break };
                if matches!(m, Message::Close(_)) {
                    break;
                }
                if !matches!(m, Message::Frame(_)) && !rate.allow(Instant::now()) {
                    let _ = sink.send(close(CloseCode::Policy, "Too many messages")).await;
                    break;
                }
                let reply = match m {
                    Message::Text(t) => handle(&hub, id, t.as_str()),
                    Message::Binary(b) => handle(&hub, id, &String::from_utf8_lossy(&b)),
                    Message::Pong(_) => {
                        ping_unanswered = None;
                        continue;
                    }
                    _ => continue,
                };
                if sink.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
            out = rx.recv() => {
                let Some(first) = out else {
                    let _ = sink.send(close(CloseCode::Policy, "Client cannot keep up")).await;
                    break;
                };
                if sink.feed(first).await.is_err() {
                    break;
                }
                let mut n = 1;
                while n < EVENTS_PER_FLUSH {
                    let Ok(m) = rx.try_recv() else { break };
                    if sink.feed(m).await.is_err() {
                        break;
                    }
                    n += 1;
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if ping_unanswered.is_some_and(|t| t.elapsed() >= limits.pong_timeout) {
                    let _ = sink.send(close(CloseCode::Policy, "Pong timeout")).await;
                    break;
                }
                ping_unanswered.get_or_insert_with(Instant::now);
                let stamp = crate::model::tick::wall_clock_ns() / 1_000_000;
                if sink.send(Message::Ping(stamp.to_string().into_bytes().into())).await.is_err() {
                    break;
                }
            }
            _ = shutdown.triggered() => {
                let _ = sink.send(close(CloseCode::Away, "Server shutting down")).await;
                break;
            }
        }
    }
    hub.borrow_mut().remove(id);
}

/// Answers one request message.
fn handle(hub: &Rc<RefCell<Hub>>, id: ConnId, text: &str) -> String {
    let req = match request::parse(text) {
        Ok(r) => r,
        Err(e) => return request::error_reply(&e),
    };
    let mut hub = hub.borrow_mut();
    let result = match req.method {
        Method::Subscribe(names) => match hub.subscribe(id, &names) {
            Ok(()) => Value::Null,
            Err(e) => {
                let msg = match e {
                    SubscribeError::BadName(_) | SubscribeError::TooMany { .. } => {
                        format!("Invalid request: {e}")
                    }
                };
                return request::error_reply(&RequestError {
                    code: 2,
                    msg,
                    id: req.id,
                });
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
    request::result_reply(result, &req.id)
}
