//! The ingest node's heartbeat: how gateways tell a live feed from one
//! whose ingest node (or bus) is gone.
//!
//! The ingest node publishes `{"type":"heartbeat","node":…,"ts":…,
//! "published":…,"epoch":…}` on `PREFIX.heartbeat` every `heartbeat_every`, whether
//! or not it has ticks to send. A gateway that hears none for
//! `stale_after`, or that has lost NATS, reports the feed stale. The
//! epoch is the ingest node's: gateways report it as their own, so a
//! client's positions mean the same on every gateway.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::model::epoch::Epoch;
use crate::model::tick::wall_clock_ns;
use crate::wire::json::JsonObject;

/// A heartbeat's payload: `node` names the ingest node's process (a
/// restart shows as a new name), `published` counts its ticks so far,
/// `epoch` names the feed's `seq` numbering.
pub(super) fn payload(node: &str, published: u64, epoch: Epoch) -> Bytes {
    let mut o = JsonObject::new("heartbeat");
    o.str("node", node)
        .u64("ts", wall_clock_ns())
        .u64("published", published)
        .str("epoch", &epoch.to_string());
    Bytes::from(o.into_bytes())
}

/// The node a heartbeat came from (empty if the payload does not say)
/// and the epoch it names (`None` if absent or malformed).
fn read(payload: &[u8]) -> (String, Option<Epoch>) {
    use simd_json::prelude::*;
    let mut p = payload.to_vec();
    let Ok(v) = simd_json::to_borrowed_value(&mut p) else {
        return (String::new(), None);
    };
    (
        v.get_str("node").map(str::to_owned).unwrap_or_default(),
        v.get_str("epoch").and_then(Epoch::parse),
    )
}

/// The node a heartbeat came from; empty if the payload does not say.
#[cfg(test)]
fn node_of(payload: &[u8]) -> String {
    read(payload).0
}

/// What a gateway has heard of the ingest node.
#[derive(Default)]
pub(super) struct Heartbeats {
    /// When the last heartbeat came; `None` before the first.
    last: Option<Instant>,
    /// The node it came from, to log a change of ingest node once.
    node: String,
}

impl Heartbeats {
    /// Notes a heartbeat received at `now`; returns the epoch it names.
    pub(super) fn beat(&mut self, payload: &[u8], now: Instant) -> Option<Epoch> {
        self.last = Some(now);
        let (node, epoch) = read(payload);
        if node != self.node {
            tracing::info!(node, "heartbeat from the ingest node");
            self.node = node;
        }
        epoch
    }

    /// Why the feed is stale at `now`, or `None` while it is live: the
    /// reason clients get in their `status` message.
    pub(super) fn stale_reason(
        &self,
        connected: bool,
        stale_after: Duration,
        now: Instant,
    ) -> Option<String> {
        if !connected {
            return Some("the message bus is unreachable".into());
        }
        match self.last {
            None => Some("no heartbeat from the ingest node yet".into()),
            Some(t) if now.duration_since(t) > stale_after => Some(format!(
                "no heartbeat from the ingest node for {stale_after:?}"
            )),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_names_its_node() {
        assert_eq!(node_of(&payload("123-456", 7, Epoch(9))), "123-456");
        assert_eq!(read(&payload("n", 7, Epoch(9))).1, Some(Epoch(9)));
        assert_eq!(read(br#"{"node":"n","epoch":"zz"}"#).1, None);
        assert_eq!(node_of(b"not json"), "");
        assert_eq!(node_of(br#"{"type":"heartbeat"}"#), "");
    }

    #[test]
    fn the_feed_is_stale_without_the_bus_or_a_recent_heartbeat() {
        let after = Duration::from_secs(3);
        let t0 = Instant::now();
        let mut h = Heartbeats::default();
        assert_eq!(
            h.stale_reason(true, after, t0).as_deref(),
            Some("no heartbeat from the ingest node yet")
        );
        assert_eq!(h.beat(&payload("n", 0, Epoch(3)), t0), Some(Epoch(3)));
        assert_eq!(h.stale_reason(true, after, t0 + after), None);
        assert_eq!(
            h.stale_reason(false, after, t0).as_deref(),
            Some("the message bus is unreachable")
        );
        assert_eq!(
            h.stale_reason(true, after, t0 + after + Duration::from_millis(1))
                .as_deref(),
            Some("no heartbeat from the ingest node for 3s")
        );
    }
}
