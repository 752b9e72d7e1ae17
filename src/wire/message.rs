//! Server → client control messages that are not replies to a request:
//! `symbol`, `lagging`, `status`, and their SSE forms.

use std::time::Duration;

use bytes::Bytes;

use crate::model::feed::FeedStatus;
use crate::model::tick::{Channel, ChannelSet, Tick};
use crate::wire::encode::Encoding;
use crate::wire::frame::{OPCODE_TEXT, frame};
use crate::wire::json::JsonObject;
use crate::wire::sse;

/// The `status` message clients get (`docs/PROTOCOL.md`).
pub fn status_json(status: &FeedStatus) -> Vec<u8> {
    let mut o = JsonObject::new("status");
    match status {
        FeedStatus::Live => {
            o.str("feed", "live");
        }
        FeedStatus::Stale { reason, since_ns } => {
            o.str("feed", "stale")
                .str("reason", reason)
                .u64("since", *since_ns);
        }
    }
    o.into_bytes()
}

/// Channel list for replies, in protocol order.
pub fn channel_names(set: ChannelSet) -> Vec<&'static str> {
    set.iter().map(Channel::as_str).collect()
}

/// `{"type":"symbol","sym":…,"id":…}`: tells a binary client the id of a
/// symbol before its first record.
pub fn symbol_message(tick: &Tick) -> Bytes {
    let mut o = JsonObject::new("symbol");
    o.str("sym", &tick.sym)
        .u64("id", u64::from(tick.key.symbol()));
    o.into_frame()
}

/// The `lagging` notice sent before a slow-consumer close.
pub fn lagging_message(behind: Duration) -> Bytes {
    let mut o = JsonObject::new("lagging");
    o.u64("behind_ms", behind.as_millis() as u64);
    o.into_frame()
}

/// The same notice for an SSE client: `event: lagging` with the same JSON.
pub fn sse_lagging_event(behind: Duration) -> Bytes {
    let mut o = JsonObject::new("lagging");
    o.u64("behind_ms", behind.as_millis() as u64);
    sse::event("lagging", &o.into_bytes())
}

/// The `status` message (feed live or stale, on a gateway) for a client.
pub fn status_message(status: &FeedStatus, encoding: Encoding) -> Bytes {
    let json = status_json(status);
    if encoding == Encoding::Sse {
        sse::event("status", &json)
    } else {
        frame(OPCODE_TEXT, &json)
    }
}
