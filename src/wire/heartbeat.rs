//! The opt-in application heartbeat (`?heartbeat=MS` on `/v1/stream` and
//! `/v1/sse`): the server's clock and its ingest position, sent every MS
//! milliseconds, so a client can tell a quiet symbol from a dead feed and
//! estimate its clock offset. Coinbase's `heartbeats` channel is the model
//! (a sequence and a time each second); here the position is the count of
//! ticks this server has sequenced, which keeps growing whatever symbols
//! the client holds.

use std::time::Duration;

use bytes::Bytes;

use crate::wire::encode::{Encoding, RECORD_LEN};
use crate::wire::frame::{FrameBuilder, OPCODE_BINARY, OPCODE_TEXT};
use crate::wire::json::push_u64;

/// Shortest interval accepted: more often would be a cost, not a signal.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval accepted (a minute: the idle timeout's scale).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// `kind` of the heartbeat record in `tickwire.bin.v1` (ticks are 1 and 2).
pub const RECORD_KIND: u8 = 3;

/// The `heartbeat` parameter of a request's query string: `None` when
/// absent, the interval when it is a whole number of ms in range.
pub fn from_query(query: Option<&str>) -> Result<Option<Duration>, String> {
    let mut every = None;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("heartbeat=") {
            every = Some(parse(v)?);
        }
    }
    Ok(every)
}

/// `MS`, from 100 to 60000.
pub fn parse(v: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "heartbeat={v} is not an interval; write milliseconds from {} to {} (heartbeat=1000 for one a second)",
            MIN_INTERVAL.as_millis(),
            MAX_INTERVAL.as_millis()
        )
    };
    let ms: u64 = v.parse().map_err(|_| bad())?;
    let d = Duration::from_millis(ms);
    if (MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        Ok(d)
    } else {
        Err(bad())
    }
}

/// The heartbeat's JSON: `{"type":"heartbeat","time":NS,"pos":N}`.
fn json(time_ns: u64, pos: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"type":"heartbeat","time":"#);
    push_u64(&mut out, time_ns);
    out.extend_from_slice(br#","pos":"#);
    push_u64(&mut out, pos);
    out.push(b'}');
    out
}

/// The heartbeat as the client's encoding carries it: a JSON text frame, a
/// 64-byte binary record (kind 3: `pos` where ticks have `seq`, `time`
/// where they have `ts`, the rest zero), or an SSE `event: heartbeat`.
pub fn message(encoding: Encoding, time_ns: u64, pos: u64) -> Bytes {
    match encoding {
        Encoding::Json => {
            let mut b = FrameBuilder::with_capacity(64);
            b.payload().extend_from_slice(&json(time_ns, pos));
            b.finish(OPCODE_TEXT)
        }
        Encoding::Binary => {
            let mut r = [0u8; RECORD_LEN];
            r[0] = RECORD_KIND;
            r[8..16].copy_from_slice(&pos.to_le_bytes());
            r[16..24].copy_from_slice(&time_ns.to_le_bytes());
            let mut b = FrameBuilder::with_capacity(RECORD_LEN);
            b.payload().extend_from_slice(&r);
            b.finish(OPCODE_BINARY)
        }
        Encoding::Sse => crate::wire::sse::event("heartbeat", &json(time_ns, pos)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_checked() {
        assert_eq!(from_query(Some("ts=string")), Ok(None));
        assert_eq!(
            from_query(Some("heartbeat=250")),
            Ok(Some(Duration::from_millis(250)))
        );
        for bad in [
            "heartbeat=99",
            "heartbeat=60001",
            "heartbeat=1s",
            "heartbeat=",
        ] {
            let e = from_query(Some(bad)).unwrap_err();
            assert!(e.contains("milliseconds from 100 to 60000"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_encoding_carries_time_and_pos() {
        let j = message(Encoding::Json, 7, 9);
        assert!(j.ends_with(br#"{"type":"heartbeat","time":7,"pos":9}"#));
        let b = message(Encoding::Binary, 7, 9);
        let rec = &b[b.len() - RECORD_LEN..];
        assert_eq!(rec[0], RECORD_KIND);
        assert_eq!(u64::from_le_bytes(rec[8..16].try_into().unwrap()), 9);
        assert_eq!(u64::from_le_bytes(rec[16..24].try_into().unwrap()), 7);
        let s = message(Encoding::Sse, 7, 9);
        assert_eq!(
            &s[..],
            b"event: heartbeat\ndata: {\"type\":\"heartbeat\",\"time\":7,\"pos\":9}\n\n"
        );
    }
}
