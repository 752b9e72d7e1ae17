//! Server → client replies to a request: `hello` (to the connection itself),
//! `subscribed`, `unsubscribed`, `symbols`, `pong`, `error`, and SSE's
//! resume `status`. Every message's shape is here; the server decides what
//! goes in it. Notices nobody asked for are in [`super::message`].

use bytes::Bytes;

use crate::model::epoch::Epoch;
use crate::model::tick::{ChannelSet, wall_clock_ns};
use crate::wire::error::{ErrorCode, ProtocolError};
use crate::wire::json::JsonObject;
use crate::wire::message::channel_names;
use crate::wire::sse;

/// The limits a `hello` announces (docs/PROTOCOL.md, "hello").
pub(crate) struct HelloLimits {
    pub max_message_bytes: usize,
    pub max_keys_per_connection: usize,
    pub control_per_sec: u32,
    pub control_burst: u32,
    pub client_buffer_bytes: usize,
    pub evict_after_ms: u128,
}

/// The `hello` a session starts with: who we are, the subprotocol spoken,
/// the connection's role, and the limits that apply.
pub(crate) fn hello(protocol: &str, role: &str, epoch: &str, l: &HelloLimits) -> Bytes {
    let limits_json = format!(
        r#"{{"max_message_bytes":{},"max_keys_per_connection":{},"control_per_sec":{},"control_burst":{},"client_buffer_bytes":{},"evict_after_ms":{}}}"#,
        l.max_message_bytes,
        l.max_keys_per_connection,
        l.control_per_sec,
        l.control_burst,
        l.client_buffer_bytes,
        l.evict_after_ms
    );
    let mut o = JsonObject::new("hello");
    o.str("server", "tickwire")
        .str("version", env!("CARGO_PKG_VERSION"))
        .str("protocol", protocol)
        .str("role", role)
        .str("epoch", epoch)
        .raw("limits", limits_json.as_bytes());
    o.into_frame()
}

/// `{"type":"error",…}` for a refused message; the connection stays open.
pub(crate) fn error(e: &ProtocolError) -> Bytes {
    let mut o = JsonObject::new("error");
    o.id(e.id)
        .str("code", e.code.as_str())
        .str("message", &e.message);
    o.into_frame()
}

/// The `unauthorized` error of a subscribe: the symbols the API key may not
/// see are listed, as well as named in the message.
pub(crate) fn unauthorized(id: Option<i64>, message: &str, denied: &[String]) -> Bytes {
    let mut o = JsonObject::new("error");
    o.id(id)
        .str("code", ErrorCode::Unauthorized.as_str())
        .str("message", message)
        .strs("symbols", denied.iter().map(String::as_str));
    o.into_frame()
}

/// `pong`, with the server's clock.
pub(crate) fn pong(id: Option<i64>) -> Bytes {
    let mut o = JsonObject::new("pong");
    o.id(id).u64("ts", wall_clock_ns());
    o.into_frame()
}

/// `symbols`: the names the connection may see.
pub(crate) fn symbols<'a>(id: Option<i64>, names: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut o = JsonObject::new("symbols");
    o.id(id).strs("symbols", names);
    o.into_frame()
}

/// Where a subscription stands in the feed, for `subscribed`.
pub(crate) struct Position<'a> {
    /// The feed epoch (16 hex digits).
    pub epoch: &'a str,
    /// The client has, or is being given, every tick of the subscription
    /// after this global ingest offset: what it resumes from next time.
    pub offset: u64,
    /// The `resumed` object (per-key `recovered`), when it asked to resume.
    pub resumed: Option<Vec<u8>>,
}

/// `subscribed`: the symbols (`*` first) and channels, with each symbol's
/// id, the epoch and position, and how a resume went.
pub(crate) fn subscribed<'a>(
    id: Option<i64>,
    names: impl IntoIterator<Item = &'a str>,
    channels: ChannelSet,
    ids: impl IntoIterator<Item = (&'a str, u32)>,
    position: &Position<'_>,
) -> Bytes {
    let mut o = JsonObject::new("subscribed");
    o.id(id)
        .strs("symbols", names)
        .strs("channels", channel_names(channels))
        .ids("ids", ids)
        .str("epoch", position.epoch)
        .u64("offset", position.offset);
    if let Some(r) = &position.resumed {
        o.raw("resumed", r);
    }
    o.into_frame()
}

/// `unsubscribed`: the symbols (`*` first) and channels removed.
pub(crate) fn unsubscribed<'a>(
    id: Option<i64>,
    names: impl IntoIterator<Item = &'a str>,
    channels: ChannelSet,
) -> Bytes {
    let mut o = JsonObject::new("unsubscribed");
    o.id(id)
        .strs("symbols", names)
        .strs("channels", channel_names(channels));
    o.into_frame()
}

/// What an SSE stream is told first, after its response head.
pub(crate) struct SsePosition<'a> {
    /// The feed epoch.
    pub epoch: Epoch,
    /// The stream holds every tick of its keys after this offset; the
    /// event's `id:` is `EPOCH:OFFSET`, so a reconnect right after it loses
    /// nothing.
    pub offset: u64,
    /// The client's `Last-Event-ID`, if it sent one.
    pub last_event_id: Option<&'a str>,
    /// How the resume went (the `resumed` object of `subscribed`).
    pub resumed: Option<&'a [u8]>,
    /// The `Last-Event-ID` is not an id this server writes.
    pub unreadable: bool,
}

/// The first event of an SSE stream: `event: position` on a fresh stream,
/// `event: resume` when the client sent a `Last-Event-ID` (its own type:
/// `status` is the gateway feed's live/stale notice).
pub(crate) fn sse_position(p: &SsePosition<'_>) -> Bytes {
    let kind = if p.last_event_id.is_some() {
        "resume"
    } else {
        "position"
    };
    let mut o = JsonObject::new(kind);
    o.str("epoch", &p.epoch.to_string()).u64("offset", p.offset);
    if let Some(last) = p.last_event_id {
        o.str("last_event_id", last);
    }
    if let Some(r) = p.resumed {
        o.raw("resumed", r);
    }
    if p.unreadable {
        o.raw(
            "resumed",
            br#"{"recovered":false,"reason":"unreadable_id","keys":[]}"#,
        );
    }
    let mut out = Vec::with_capacity(160);
    sse::open_event(&mut out, kind);
    out.extend_from_slice(&o.into_bytes());
    sse::open_id(&mut out);
    out.extend_from_slice(format!("{}:{}", p.epoch, p.offset).as_bytes());
    sse::close_event(&mut out);
    Bytes::from(out)
}
