//! Whether the feed is flowing: a gateway tells its clients when its
//! ingest node goes quiet and when it is back.

/// Whether a gateway's feed is flowing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    Live,
    /// No heartbeat from the ingest node; `reason` says what is known.
    Stale {
        reason: String,
        since_ns: u64,
    },
}
