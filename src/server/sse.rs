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

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net::tls::TlsConn;
use crate::net::transport::Conn;

use crate::access::auth::{Entitlement, Identity, Role, presented_key};
use crate::access::limits::Permit;
use crate::model::tick::{Channel, ChannelSet, KeyId, validate_symbol};
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::{Refusal as Refused, Stats};
use crate::server::context::Context;
use crate::shutdown::Shutdown;
use crate::wire::encode::Encoding;
use crate::wire::frame::close_code;
use crate::wire::json::JsonObject;

/// The endpoint's path.
pub const PATH: &str = "/v1/sse";

/// Largest request head accepted on `/v1/sse`.
const MAX_HEAD: usize = 16 * 1024;

/// The heartbeat comment.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeked {
    /// `GET /v1/sse` followed by `?` or a space.
    Sse,
    /// Anything else: hyper's.
    Other,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// Classifies the start of a request.
pub fn classify(head: &[u8]) -> Peeked {
    const PREFIX: &[u8] = b"GET /v1/sse";
    let n = head.len().min(PREFIX.len());
    if head[..n] != PREFIX[..n] {
        return Peeked::Other;
    }
    match head.get(PREFIX.len()) {
        None => Peeked::NeedMore,
        Some(b'?' | b' ') => Peeked::Sse,
        Some(_) => Peeked::Other,
    }
}

/// Peeks (without consuming) until the connection's first bytes tell
/// whether it is an SSE request. `None`: timeout, EOF or error.
pub async fn peek(conn: &mut Conn, timeout: Duration) -> Option<Peeked> {
    match conn {
        Conn::Plain(s) => peek_tcp(s, timeout).await,
        Conn::Tls(t) => peek_tls(t, timeout).await,
    }
}

/// [`peek`] over TLS: decrypted bytes are read ahead and kept in the
/// connection, which serves them again to whoever reads it next.
async fn peek_tls(conn: &mut TlsConn, timeout: Duration) -> Option<Peeked> {
    let deadline = Instant::now() + timeout;
    loop {
        match classify(conn.ahead()) {
            Peeked::NeedMore => {}
            p => return Some(p),
        }
        let n = tokio::time::timeout_at(deadline, conn.read_ahead())
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return Some(Peeked::Other); // EOF: hyper deals with it
        }
    }
}

async fn peek_tcp(stream: &TcpStream, timeout: Duration) -> Option<Peeked> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 12];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return Some(Peeked::Other); // EOF: hyper deals with it
        }
        match classify(&buf[..n]) {
            Peeked::NeedMore => {
                // peek returns at once while bytes are waiting: a request
                // split mid-line (rare) is polled, not spun on.
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            p => return Some(p),
        }
    }
}

/// A valid `/v1/sse` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseRequest {
    /// `*` was named.
    pub all: bool,
    /// Named symbols, validated, without duplicates, in request order.
    pub names: Vec<String>,
    pub channels: ChannelSet,
    /// The `Last-Event-ID` header, if any.
    pub last_event_id: Option<String>,
    /// The `Authorization` header and the raw query, for the API key
    /// (`Bearer KEY`, or `?token=KEY` as browsers' EventSource cannot set
    /// headers).
    pub authorization: Option<String>,
    pub query: String,
}

/// A request refused before streaming: HTTP status and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    /// `WWW-Authenticate` value, for 401s.
    pub challenge: Option<&'static str>,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        message: message.into(),
        challenge: None,
    }
}

fn percent_decode(s: &str) -> Result<String, Refusal> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("bad percent-escape in the query: {s}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("the query is not UTF-8 once decoded"))
}

/// Parses a request head (everything up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Result<SseRequest, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if method != Some("GET") || !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("send `GET /v1/sse?symbols=… HTTP/1.1`"));
    }
    let target = target.unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut last_event_id = None;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let v = value.trim();
            if name.trim().eq_ignore_ascii_case("last-event-id") && !v.is_empty() {
                last_event_id = Some(v.to_owned());
            } else if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.to_owned());
            }
        }
    }

    let mut symbols: Option<String> = None;
    let mut channels: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "symbols" => symbols = Some(percent_decode(v)?),
            "channels" => channels = Some(percent_decode(v)?),
            // The API key; checked in `serve`.
            "token" => {}
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{other}`; use symbols=A,B (or *), channels=trade,quote and token=KEY"
                )));
            }
        }
    }
    let symbols = symbols.ok_or_else(|| {
        bad("the query needs symbols, e.g. /v1/sse?symbols=AAPL,MSFT or symbols=*")
    })?;
    let mut all = false;
    let mut names: Vec<String> = Vec::new();
    for s in symbols.split(',').filter(|s| !s.is_empty()) {
        if s == "*" {
            all = true;
            continue;
        }
        validate_symbol(s).map_err(|e| bad(format!("invalid symbol: {e}")))?;
        if !names.iter().any(|n| n == s) {
            names.push(s.to_owned());
        }
    }
    if !all && names.is_empty() {
        return Err(bad(
            "symbols is empty; name at least one symbol, or * for all",
        ));
    }
    let channels = match channels {
        None => ChannelSet::BOTH,
        Some(list) => {
            let mut set = ChannelSet::default();
            for c in list.split(',').filter(|s| !s.is_empty()) {
                let ch = Channel::parse(c).ok_or_else(|| {
                    bad(format!(
                        "unknown channel `{c}`; channels are trade and quote"
                    ))
                })?;
                set.insert(ch);
            }
            if set.is_empty() {
                return Err(bad("channels is empty; use trade, quote or both"));
            }
            set
        }
    };
    Ok(SseRequest {
        all,
        names,
        channels,
        last_event_id,
        authorization,
        query: query.to_owned(),
    })
}

/// `SYM:CHANNEL:SEQ` (the symbol may itself contain `:`).
pub fn parse_event_id(id: &str) -> Option<(&str, Channel, u64)> {
    let mut it = id.rsplitn(3, ':');
    let seq = it.next()?.parse().ok()?;
    let channel = Channel::parse(it.next()?)?;
    let sym = it.next()?;
    validate_symbol(sym).ok()?;
    Some((sym, channel, seq))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a plain-text error response and ends the connection.
async fn refuse(stream: &mut Conn, r: &Refusal, retry_after: bool) {
    let body = format!("{}\n", r.message);
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{}{}\r\n",
        r.status,
        reason_phrase(r.status),
        body.len(),
        if retry_after {
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

/// Reads the request head; the bytes after it (a GET has no body) are left.
async fn read_head(stream: &mut Conn, timeout: Duration) -> Result<Vec<u8>, Refusal> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal {
                status: 431,
                message: format!("the request head is over {MAX_HEAD} bytes"),
                challenge: None,
            });
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut tmp)).await {
            Err(_) => {
                return Err(Refusal {
                    status: 408,
                    message: "the request head did not arrive in time".into(),
                    challenge: None,
                });
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(Refusal {
                    status: 400,
                    message: "connection ended inside the request head".into(),
                    challenge: None,
                });
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
    }
}

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\r\n";

/// The `event: status` sent first on a resumed stream.
fn status_event(
    resumed: bool,
    missed: bool,
    last_id: &str,
    newest: Option<u64>,
    why: &str,
) -> Bytes {
    let mut o = JsonObject::new("status");
    o.raw("resumed", if resumed { b"true" } else { b"false" })
        .raw("missed", if missed { b"true" } else { b"false" })
        .str("last_event_id", last_id);
    if let Some(n) = newest {
        o.u64("newest_seq", n);
    }
    if !why.is_empty() {
        o.str("reason", why);
    }
    let mut out = b"event: status\ndata: ".to_vec();
    out.extend_from_slice(&o.into_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Serves one connection whose first request is `GET /v1/sse…`.
/// `timeout` is what is left of the handshake budget for the request head.
pub async fn serve(
    worker: Rc<Context>,
    mut stream: Conn,
    peer: SocketAddr,
    shutdown: Shutdown,
    timeout: Duration,
) {
    let head = match read_head(&mut stream, timeout).await {
        Ok(h) => h,
        Err(r) => return refuse(&mut stream, &r, false).await,
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(r) => return refuse(&mut stream, &r, false).await,
    };
    if shutdown.is_triggered() {
        let r = Refusal {
            status: 503,
            message: "the server is shutting down".into(),
            challenge: None,
        };
        return refuse(&mut stream, &r, true).await;
    }
    // API keys and entitlements, as on /v1/stream (see `authenticate`).
    let identity = match authenticate(&worker, &req) {
        Ok(i) => i,
        Err(r) => return refuse(&mut stream, &r, false).await,
    };
    let entitlement = identity
        .as_ref()
        .map(|i| i.entitlement.clone())
        .filter(|e| !e.is_all());
    if let Some(e) = &entitlement {
        let denied: Vec<&str> = req
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| !e.allows(n))
            .collect();
        if !denied.is_empty() {
            // An event stream has no error channel for a partial success:
            // refuse the request whole, naming what is not allowed.
            let r = Refusal {
                status: 403,
                message: format!(
                    "this API key is not entitled to {}; nothing was streamed",
                    denied.join(", ")
                ),
                challenge: None,
            };
            return refuse(&mut stream, &r, false).await;
        }
    }
    let permit = match worker
        .admission
        .admit_key(peer.ip(), false, identity.as_deref())
    {
        Ok(p) => p,
        Err(refused) => {
            let r = Refusal {
                status: 503,
                message: refused.to_string(),
                challenge: None,
            };
            return refuse(&mut stream, &r, true).await;
        }
    };
    // Symbols and the key limit are checked before any byte of the stream.
    let table = worker.fanout.ingest.symbols();
    let mut keys: Vec<KeyId> = Vec::new();
    for name in &req.names {
        let (sid, _) = match table.intern(name) {
            Ok(x) => x,
            Err(e) => {
                let r = bad(format!("{e}; nothing was subscribed"));
                return refuse(&mut stream, &r, false).await;
            }
        };
        keys.extend(req.channels.iter().map(|ch| KeyId::new(sid, ch)));
    }
    if keys.len() > worker.config.max_keys_per_connection {
        let r = bad(format!(
            "{} (symbol, channel) keys requested; the limit is {}",
            keys.len(),
            worker.config.max_keys_per_connection
        ));
        return refuse(&mut stream, &r, false).await;
    }
    run(worker, stream, req, keys, entitlement, shutdown, permit).await;
}

/// The request's API key, when the server has keys: `Ok(None)` when it is
/// open, the identity of a subscriber key, or the 401/403 to answer.
fn authenticate(worker: &Context, req: &SseRequest) -> Result<Option<Arc<Identity>>, Refusal> {
    let Some(keys) = &worker.config.auth else {
        return Ok(None);
    };
    let refusal = |status, challenge, message: &str| {
        let reason = if status == 401 {
            Refused::Unauthorized
        } else {
            Refused::Forbidden
        };
        Stats::add(&worker.fanout.stats.upgrades_refused[reason as usize], 1);
        Err(Refusal {
            status,
            message: message.to_owned(),
            challenge,
        })
    };
    let presented = presented_key(
        req.authorization.as_deref().map(str::as_bytes),
        Some(&req.query),
    );
    let Some(presented) = presented else {
        return refusal(
            401,
            Some(r#"Bearer realm="tickwire""#),
            "an API key is required: send `Authorization: Bearer KEY` or add `&token=KEY` to the URL",
        );
    };
    let Some(identity) = keys.find(presented) else {
        return refusal(
            401,
            Some(r#"Bearer realm="tickwire", error="invalid_token""#),
            "the API key is not valid",
        );
    };
    if identity.role != Role::Subscriber {
        return refusal(
            403,
            None,
            "this API key may publish (/v1/publish) but not subscribe",
        );
    }
    Ok(Some(identity))
}

async fn run(
    worker: Rc<Context>,
    stream: Conn,
    req: SseRequest,
    keys: Vec<KeyId>,
    entitlement: Option<Arc<Entitlement>>,
    mut shutdown: Shutdown,
    _permit: Permit,
) {
    let peer = stream.peer_addr().ok();
    let _ =
        socket2::SockRef::from(stream.tcp()).set_send_buffer_size(worker.config.socket_send_buffer);
    // The head was read whole and a GET has no body: nothing to carry over.
    let (mut read, write) = stream.into_split(Bytes::new());
    let w = &worker;
    let id = w.fanout.state.borrow_mut().add_client(
        write,
        w.fanout.stats.clone(),
        w.config.client_buffer_bytes,
        Encoding::Sse,
    );
    w.fanout
        .stats
        .subscribers
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Stats::add(&w.fanout.stats.connections_total, 1);
    let peer_s = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    tracing::info!(worker = w.fanout.id, client = id, peer = %peer_s, kind = "subscriber", protocol = "sse", "connection open");

    let (wake, kill) = {
        let mut st = w.fanout.state.borrow_mut();
        let c = st.client(id).expect("just added");
        (c.writer_wake.clone(), c.kill.clone())
    };
    let writer = tokio::task::spawn_local(w.fanout.clone().run_writer(id, wake));

    // On a gateway, the snapshot (and a resume) needs the bus's last values
    // here first; see `BusLink::prepare`.
    let _hold = match &w.bus {
        Some(bus) => {
            let star = if req.all {
                req.channels
            } else {
                crate::model::tick::ChannelSet::default()
            };
            bus.prepare(&keys, star, true, Duration::from_secs(2)).await
        }
        None => None,
    };
    {
        let mut st = w.fanout.state.borrow_mut();
        st.subscribe_keys(id, &keys);
        if req.all {
            st.subscribe_star(id, req.channels);
        }
        let c = st.client(id).expect("just added");
        // A key limited to some symbols: `*` delivers only those.
        c.set_entitlement(entitlement.clone());
        c.push_control(Bytes::from_static(RESPONSE_HEAD));
        if let Some(bus) = &w.bus {
            let status = bus.current_status();
            if status != crate::model::feed::FeedStatus::Live {
                c.push_control(crate::wire::message::status_message(&status, Encoding::Sse));
            }
        }
        if let Some(last) = &req.last_event_id {
            let status = resume(w, c, &req, last);
            c.push_control(status);
        }
        let mut snap: Vec<RingItem> = Vec::new();
        if req.all {
            w.fanout.ingest.all_last_values(req.channels, &mut snap);
            if let Some(e) = &entitlement {
                snap.retain(|t| e.allows(&t.tick.sym));
            }
        }
        w.fanout.ingest.last_values(keys.iter().copied(), &mut snap);
        st.offer_snapshots(id, &snap);
        st.flush_client(id);
    }

    let every = w.config.sse_heartbeat.max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reason = "client closed";
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
            _ = shutdown.triggered(), if !shutting_down => {
                shutting_down = true;
                reason = "server shutting down";
                let mut st = w.fanout.state.borrow_mut();
                if let Some(c) = st.client(id) {
                    c.close(close_code::GOING_AWAY, reason, w.config.close_timeout);
                }
                st.flush_client(id);
            }
            _ = heartbeat.tick() => {
                let mut st = w.fanout.state.borrow_mut();
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

    writer.abort();
    let client = w.fanout.state.borrow_mut().remove_client(id);
    w.fanout
        .stats
        .subscribers
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let (dropped, frames, end_reason) = client
        .map(|c| (c.dropped, c.frames_sent, c.end_reason))
        .unwrap_or_default();
    tracing::info!(worker = w.fanout.id, client = id, peer = %peer_s, kind = "subscriber", protocol = "sse", reason = end_reason.unwrap_or(reason), frames, dropped, "connection closed");
}

/// Works out the `status` event for a `Last-Event-ID` and, when the id is
/// a position in this server run's sequence of a subscribed key, skips what
/// the client already has of that key.
fn resume(
    w: &Context,
    c: &mut crate::pipeline::fanout::Client,
    req: &SseRequest,
    last: &str,
) -> Bytes {
    let Some((sym, channel, seq)) = parse_event_id(last) else {
        return status_event(
            false,
            true,
            last,
            None,
            "not an id this server sent (SYM:CHANNEL:SEQ)",
        );
    };
    let subscribed =
        req.channels.contains(channel) && (req.all || req.names.iter().any(|n| n == sym));
    if !subscribed {
        return status_event(
            false,
            true,
            last,
            None,
            "that key is not in this subscription",
        );
    }
    let Some((sid, _)) = w.fanout.ingest.symbols().lookup(sym) else {
        return status_event(false, true, last, None, "unknown symbol");
    };
    let key = KeyId::new(sid, channel);
    let mut newest = Vec::new();
    w.fanout.ingest.last_values([key], &mut newest);
    let newest = newest.first().map_or(0, |i| i.tick.seq);
    if seq > newest {
        // From another server run (sequences restarted): nothing to resume.
        return status_event(
            false,
            true,
            last,
            Some(newest),
            "the id is ahead of this server's sequence (server restarted?)",
        );
    }
    c.resume_after(key, seq);
    status_event(true, newest > seq + 1, last, Some(newest), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: A:B:trade:7\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn classifies_the_first_bytes() {
        assert_eq!(classify(b"GET /v1/sse?symbols=A"), Peeked::Sse);
        assert_eq!(classify(b"GET /v1/sse HTTP/1.1"), Peeked::Sse);
        assert_eq!(classify(b"GET /v1/ss"), Peeked::NeedMore);
        assert_eq!(classify(b"GET /v1/sse"), Peeked::NeedMore);
        assert_eq!(classify(b"GET /v1/sseX"), Peeked::Other);
        assert_eq!(classify(b"GET /v1/stream"), Peeked::Other);
        assert_eq!(classify(b"POST /v1/sse"), Peeked::Other);
    }

    #[test]
    fn parses_symbols_channels_and_the_last_event_id() {
        let r = parse_head(&head("/v1/sse?symbols=AAPL,%2A,AAPL,BRK.B&channels=quote")).unwrap();
        assert!(r.all);
        assert_eq!(r.names, ["AAPL", "BRK.B"]);
        assert_eq!(r.channels, ChannelSet(Channel::Quote.bit()));
        assert_eq!(r.last_event_id.as_deref(), Some("A:B:trade:7"));
        assert_eq!(
            parse_event_id("A:B:trade:7"),
            Some(("A:B", Channel::Trade, 7))
        );
        assert_eq!(parse_event_id("A:book:7"), None);
        let r = parse_head(&head("/v1/sse?symbols=X")).unwrap();
        assert_eq!(r.channels, ChannelSet::BOTH);
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        for (target, words) in [
            ("/v1/sse", "needs symbols"),
            ("/v1/sse?symbols=", "empty"),
            ("/v1/sse?symbols=BAD%20SYM", "contains"),
            ("/v1/sse?symbols=A&channels=book", "unknown channel"),
            ("/v1/sse?symbols=A&symbol=B", "unknown query parameter"),
            ("/v1/sse?symbols=%ZZ", "percent-escape"),
        ] {
            let e = parse_head(&head(target)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(words), "{target}: {}", e.message);
        }
    }
}
