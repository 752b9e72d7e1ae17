//! The resume and slow-consumer fields of a `subscribe`: a position to
//! resume from, and what happens when the client falls behind.
//!
//! ```json
//! {"op":"subscribe","symbols":["AAPL","*"],
//!  "resume":{"epoch":"9f2c…","seq":{"trade":{"AAPL":1200}},"offset":88123},
//!  "policy":{"trade":"catchup","quote":"conflate"},"on_gap":"conflate"}
//! ```
//!
//! Only the shape is checked here; whether a position can be served is the
//! server's business (each key gets `recovered: true|false` and a reason).

use simd_json::{BorrowedValue as Value, StaticNode};

use crate::model::epoch::Epoch;
use crate::model::tick::{Channel, ChannelSet, validate_symbol};
use crate::wire::error::{ErrorCode, ProtocolError, truncate};

/// A connection-wide position: everything after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// After this global ingest offset (`subscribed.offset`, SSE ids).
    Offset(u64),
    /// Every tick whose `rx` (server receive time, ns since the Unix
    /// epoch) is at or after this.
    Ts(u64),
}

/// Where a resuming client stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The epoch the positions belong to.
    pub epoch: Epoch,
    /// Per key: the last `seq` the client has, in request order.
    pub seqs: Vec<(String, Channel, u64)>,
    /// One position for every key of the subscription, if given.
    pub since: Option<Since>,
}

/// What a client does when it falls out of the history (`on_gap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnGap {
    /// The newest value of each of its keys, then live (default).
    #[default]
    Conflate,
    /// Close 4000, as a slow consumer.
    Evict,
}

/// A subscription's slow-consumer policy (`policy`, `on_gap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlowPolicy {
    /// Channels whose policy is `catchup`; the others `conflate` (the
    /// default on both channels, today's behaviour).
    pub catchup: ChannelSet,
    pub on_gap: OnGap,
}

/// A key of an object keyed by channel (`resume.seq`, `policy`): a tick
/// channel, as books always restart from a snapshot.
fn tick_channel(ch: &str, field: &str, id: Option<i64>) -> Result<Channel, ProtocolError> {
    Channel::parse(ch)
        .filter(|c| Channel::ALL.contains(c))
        .ok_or_else(|| {
            bad(
                id,
                format!(
                    "`{field}` is keyed by channel (trade, quote), not `{}`",
                    truncate(ch, 40)
                ),
            )
        })
}

fn bad(id: Option<i64>, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(id, ErrorCode::BadField, msg)
}

fn non_negative(v: &Value, what: &str, id: Option<i64>) -> Result<u64, ProtocolError> {
    match v {
        Value::Static(StaticNode::U64(n)) => Ok(*n),
        Value::Static(StaticNode::I64(n)) if *n >= 0 => Ok(*n as u64),
        _ => Err(bad(id, format!("{what} must be a non-negative integer"))),
    }
}

/// Parses `resume` (`None`: the field is absent or null). At most
/// `max_keys` per-key positions are accepted.
pub fn parse_resume(
    v: Option<&Value>,
    id: Option<i64>,
    max_keys: usize,
) -> Result<Option<Resume>, ProtocolError> {
    let obj = match v {
        None | Some(Value::Static(StaticNode::Null)) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(bad(
                id,
                "field `resume` must be an object: {\"epoch\":…, \"seq\":{…}, \"offset\" or \"ts\":…}",
            ));
        }
    };
    if let Some((k, _)) = obj
        .iter()
        .find(|(k, _)| !["epoch", "seq", "offset", "ts"].contains(&k.as_ref()))
    {
        return Err(bad(
            id,
            format!(
                "unknown field `resume.{}`; its fields are epoch, seq, offset, ts",
                truncate(k, 40)
            ),
        ));
    }
    let epoch = match obj.get("epoch") {
        Some(Value::String(s)) => Epoch::parse(s).ok_or_else(|| {
            bad(
                id,
                format!(
                    "`resume.epoch` `{}` is not an epoch (16 hex digits, as in `hello`)",
                    truncate(s, 40)
                ),
            )
        })?,
        _ => {
            return Err(bad(
                id,
                "`resume.epoch` is required: the `epoch` string of the `hello` or `subscribed` the positions came from",
            ));
        }
    };
    let since = match (obj.get("offset"), obj.get("ts")) {
        (Some(_), Some(_)) => {
            return Err(bad(id, "give `resume.offset` or `resume.ts`, not both"));
        }
        (Some(o), None) => Some(Since::Offset(non_negative(o, "`resume.offset`", id)?)),
        (None, Some(t)) => Some(Since::Ts(non_negative(t, "`resume.ts`", id)?)),
        (None, None) => None,
    };
    let mut seqs = Vec::new();
    match obj.get("seq") {
        None | Some(Value::Static(StaticNode::Null)) => {}
        Some(Value::Object(by_channel)) => {
            for (ch, keys) in by_channel.iter() {
                let channel = tick_channel(ch, "resume.seq", id)?;
                let Value::Object(keys) = keys else {
                    return Err(bad(
                        id,
                        format!("`resume.seq.{ch}` must map symbols to seqs"),
                    ));
                };
                for (sym, seq) in keys.iter() {
                    if seqs.len() == max_keys {
                        return Err(ProtocolError::new(
                            id,
                            ErrorCode::TooManySymbols,
                            format!(
                                "`resume.seq` names more than {max_keys} keys, the per-connection limit; nothing was subscribed"
                            ),
                        ));
                    }
                    validate_symbol(sym).map_err(|e| {
                        ProtocolError::new(id, ErrorCode::InvalidSymbol, format!("resume.seq: {e}"))
                    })?;
                    let n = non_negative(seq, &format!("`resume.seq.{ch}.{sym}`"), id)?;
                    seqs.push((sym.to_string(), channel, n));
                }
            }
        }
        Some(_) => {
            return Err(bad(
                id,
                "`resume.seq` must be an object such as {\"trade\":{\"AAPL\":1200}}",
            ));
        }
    }
    if seqs.is_empty() && since.is_none() {
        return Err(bad(
            id,
            "`resume` needs a position: `seq` per key, and/or `offset` or `ts` for the whole subscription",
        ));
    }
    Ok(Some(Resume { epoch, seqs, since }))
}

/// Parses `policy` and `on_gap`.
pub fn parse_policy(
    policy: Option<&Value>,
    on_gap: Option<&Value>,
    id: Option<i64>,
) -> Result<SlowPolicy, ProtocolError> {
    let mut p = SlowPolicy::default();
    match policy {
        None | Some(Value::Static(StaticNode::Null)) => {}
        Some(Value::Object(o)) => {
            for (ch, v) in o.iter() {
                let channel = tick_channel(ch, "policy", id)?;
                match v {
                    Value::String(s) if s == "catchup" => p.catchup.insert(channel),
                    Value::String(s) if s == "conflate" => {}
                    _ => {
                        return Err(bad(
                            id,
                            format!("`policy.{ch}` is \"catchup\" or \"conflate\""),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(bad(
                id,
                "field `policy` must be an object such as {\"trade\":\"catchup\",\"quote\":\"conflate\"}",
            ));
        }
    }
    p.on_gap = match on_gap {
        None | Some(Value::Static(StaticNode::Null)) => OnGap::Conflate,
        Some(Value::String(s)) if s == "conflate" => OnGap::Conflate,
        Some(Value::String(s)) if s == "evict" => OnGap::Evict,
        Some(_) => return Err(bad(id, "field `on_gap` is \"conflate\" or \"evict\"")),
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::request::{Request, parse_request};

    fn sub(extra: &str) -> Result<Request, ProtocolError> {
        let s = format!(r#"{{"op":"subscribe","id":5,"symbols":["AAPL"]{extra}}}"#);
        parse_request(&mut s.into_bytes())
    }

    #[test]
    fn parses_positions_and_policies() {
        let Ok(Request::Subscribe { resume, policy, .. }) = sub(
            r#","resume":{"epoch":"00000000000000ff","seq":{"trade":{"AAPL":12},"quote":{"AAPL":3}},"offset":40},"policy":{"trade":"catchup"},"on_gap":"evict""#,
        ) else {
            panic!("should parse");
        };
        let r = resume.unwrap();
        assert_eq!(r.epoch, Epoch(255));
        assert_eq!(
            r.seqs,
            [
                ("AAPL".to_string(), Channel::Trade, 12),
                ("AAPL".to_string(), Channel::Quote, 3)
            ]
        );
        assert_eq!(r.since, Some(Since::Offset(40)));
        assert_eq!(policy.catchup, ChannelSet(Channel::Trade.bit()));
        assert_eq!(policy.on_gap, OnGap::Evict);
    }

    #[test]
    fn refuses_malformed_positions_precisely() {
        for (extra, words) in [
            (r#","resume":1"#, "must be an object"),
            (r#","resume":{"seq":{}}"#, "epoch` is required"),
            (r#","resume":{"epoch":"xyz","ts":1}"#, "not an epoch"),
            (
                r#","resume":{"epoch":"00000000000000ff"}"#,
                "needs a position",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","ts":-5}"#,
                "non-negative",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","ts":1,"offset":2}"#,
                "not both",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","seq":{"book":{}}}"#,
                "keyed by channel",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","seq":{"trade":{"AAPL":"7"}}}"#,
                "non-negative",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","seq":{"trade":{"BAD SYM":7}}}"#,
                "resume.seq",
            ),
            (
                r#","resume":{"epoch":"00000000000000ff","at":1}"#,
                "unknown field `resume.at`",
            ),
            (r#","policy":{"trade":"queue"}"#, "catchup"),
            (r#","on_gap":"wait""#, "evict"),
        ] {
            let e = sub(extra).unwrap_err();
            assert!(e.message.contains(words), "{extra}: {}", e.message);
            assert_eq!(e.id, Some(5));
        }
    }

    #[test]
    fn a_position_list_longer_than_the_key_limit_is_refused_before_it_is_kept() {
        let mut text =
            br#"{"epoch":"00000000000000ff","seq":{"trade":{"A":1,"B":2,"C":3}}}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut text).unwrap();
        let e = parse_resume(Some(&v), None, 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManySymbols);
        assert!(parse_resume(Some(&v), None, 3).is_ok());
    }
}
