//! Server → client replies to a request: `hello` (to the connection itself),
//! `subscribed`, `unsubscribed`, `symbols`, `pong`, `error`, and SSE's
//! resume `status`. Every message's shape is here; the server decides what
//! goes in it. Notices nobody asked for are in [`super::message`].

use bytes::Bytes;

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
pub(crate) fn hello(protocol: &str, role: &str, l: &HelloLimits) -> Bytes {
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

/// `subscribed`: the symbols (`*` first) and channels, with each symbol's id.
pub(crate) fn subscribed<'a>(
    id: Option<i64>,
    names: impl IntoIterator<Item = &'a str>,
    channels: ChannelSet,
    ids: impl IntoIterator<Item = (&'a str, u32)>,
) -> Bytes {
    let mut o = JsonObject::new("subscribed");
    o.id(id)
        .strs("symbols", names)
        .strs("channels", channel_names(channels))
        .ids("ids", ids);
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

/// What a resumed SSE stream is told first (`event: status`).
pub(crate) struct SseResume<'a> {
    /// Every key continues after the client's `Last-Event-ID`.
    pub resumed: bool,
    /// Ticks were missed (the snapshot replaces them).
    pub missed: bool,
    pub last_event_id: &'a str,
    /// The newest `seq` of the named key, when known.
    pub newest_seq: Option<u64>,
    /// Why the resume was not complete; empty when it was.
    pub reason: &'a str,
}

/// The `event: status` sent first on a resumed SSE stream.
pub(crate) fn sse_resume_status(r: &SseResume<'_>) -> Bytes {
    let mut o = JsonObject::new("status");
    o.raw("resumed", if r.resumed { b"true" } else { b"false" })
        .raw("missed", if r.missed { b"true" } else { b"false" })
        .str("last_event_id", r.last_event_id);
    if let Some(n) = r.newest_seq {
        o.u64("newest_seq", n);
    }
    if !r.reason.is_empty() {
        o.str("reason", r.reason);
    }
    sse::event("status", &o.into_bytes())
}
