//! Client control messages (`subscribe`, `unsubscribe`, `symbols`, `ping`),
//! parsed in place with simd-json (the frame payload is ours to mutate) and
//! checked, with errors a person can act on.

use simd_json::{BorrowedValue as Value, StaticNode};

use crate::model::book::DepthClass;
use crate::model::tick::{Channel, ChannelSet, validate_symbol};
use crate::wire::error::{ErrorCode, ProtocolError, json_syntax_error, truncate};
use crate::wire::resume::{Resume, SlowPolicy, parse_policy, parse_resume};

/// Most per-key positions one `resume` may carry: as many keys as a
/// connection may hold (`--max-keys-per-connection`'s default); the server
/// checks its own, possibly lower, limit after parsing.
pub const MAX_RESUME_KEYS: usize = 10_000;

/// Symbols named by a subscribe or unsubscribe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolList {
    /// `"*"` was named: every symbol, present and future.
    pub all: bool,
    /// Named symbols, validated, duplicates removed, in request order.
    pub names: Vec<String>,
}

/// A valid control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe {
        id: Option<i64>,
        symbols: SymbolList,
        channels: ChannelSet,
        snapshot: bool,
        /// The book window (`depth`), for the `book` channel.
        depth: DepthClass,
        /// A position to resume from (`resume`), if any.
        resume: Option<Resume>,
        /// The slow-consumer policy (`policy`, `on_gap`).
        policy: SlowPolicy,
    },
    Unsubscribe {
        id: Option<i64>,
        symbols: SymbolList,
        channels: ChannelSet,
    },
    Symbols {
        id: Option<i64>,
    },
    Ping {
        id: Option<i64>,
    },
}

const OPS: &str = "subscribe, unsubscribe, symbols, ping";

/// Parses one control message. `payload` is the text frame's bytes; simd-json
/// rewrites it in place.
pub fn parse_request(payload: &mut [u8]) -> Result<Request, ProtocolError> {
    // simd-json parses in place: keep the bytes as sent for the error path.
    let sent = payload.to_vec();
    let value = simd_json::to_borrowed_value(payload).map_err(|_| {
        ProtocolError::new(
            None,
            ErrorCode::BadJson,
            format!(
                "the message is not valid JSON: {}; send one JSON object per text frame",
                json_syntax_error(&sent)
            ),
        )
    })?;
    let Value::Object(obj) = &value else {
        return Err(ProtocolError::new(
            None,
            ErrorCode::BadJson,
            "the message must be a JSON object such as {\"op\":\"ping\",\"id\":1}",
        ));
    };
    let id = match obj.get("id") {
        None | Some(Value::Static(StaticNode::Null)) => None,
        Some(Value::Static(StaticNode::I64(v))) => Some(*v),
        Some(Value::Static(StaticNode::U64(v))) if i64::try_from(*v).is_ok() => Some(*v as i64),
        Some(_) => {
            return Err(ProtocolError::new(
                None,
                ErrorCode::BadField,
                "field `id` must be an integer",
            ));
        }
    };
    let bad = |msg: String| ProtocolError::new(id, ErrorCode::BadField, msg);
    let op = match obj.get("op") {
        Some(Value::String(s)) => s.as_ref(),
        Some(_) => return Err(bad("field `op` must be a string".into())),
        None => {
            return Err(bad(format!("field `op` is missing; it is one of {OPS}")));
        }
    };
    let allowed: &[&str] = match op {
        "subscribe" => &[
            "op", "id", "symbols", "channels", "snapshot", "resume", "policy", "on_gap", "depth",
        ],
        "unsubscribe" => &["op", "id", "symbols", "channels"],
        "symbols" | "ping" => &["op", "id"],
        other => {
            return Err(ProtocolError::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op `{}`; the ops are {OPS}", truncate(other, 40)),
            ));
        }
    };
    if let Some((k, _)) = obj.iter().find(|(k, _)| !allowed.contains(&k.as_ref())) {
        return Err(bad(format!(
            "unknown field `{}` for op `{op}`; its fields are {}",
            truncate(k, 40),
            allowed.join(", ")
        )));
    }
    match op {
        "subscribe" | "unsubscribe" => {
            let symbols = parse_symbols(obj.get("symbols"), id)?;
            let channels = parse_channels(obj.get("channels"), id)?;
            if op == "unsubscribe" {
                return Ok(Request::Unsubscribe {
                    id,
                    symbols,
                    channels,
                });
            }
            let snapshot = match obj.get("snapshot") {
                None | Some(Value::Static(StaticNode::Null)) => true,
                Some(Value::Static(StaticNode::Bool(b))) => *b,
                Some(_) => return Err(bad("field `snapshot` must be true or false".into())),
            };
            let depth = parse_depth(obj.get("depth"), id)?;
            if channels.contains(Channel::Book) && symbols.all {
                return Err(bad(
                    "the `book` channel needs named symbols; `*` covers trade, quote and bars only"
                        .into(),
                ));
            }
            if obj.contains_key("depth") && !channels.contains(Channel::Book) {
                return Err(bad(
                    "field `depth` belongs to the `book` channel; add \"book\" to `channels`"
                        .into(),
                ));
            }
            let resume = parse_resume(obj.get("resume"), id, MAX_RESUME_KEYS)?;
            let policy = parse_policy(obj.get("policy"), obj.get("on_gap"), id)?;
            Ok(Request::Subscribe {
                id,
                symbols,
                channels,
                snapshot,
                depth,
                resume,
                policy,
            })
        }
        "symbols" => Ok(Request::Symbols { id }),
        _ => Ok(Request::Ping { id }),
    }
}

fn parse_symbols(v: Option<&Value>, id: Option<i64>) -> Result<SymbolList, ProtocolError> {
    let Some(Value::Array(items)) = v else {
        return Err(ProtocolError::new(
            id,
            ErrorCode::BadField,
            "field `symbols` must be an array of symbol strings, e.g. [\"AAPL\"] or [\"*\"]",
        ));
    };
    if items.is_empty() {
        return Err(ProtocolError::new(
            id,
            ErrorCode::BadField,
            "field `symbols` is empty; name at least one symbol, or \"*\" for all",
        ));
    }
    let mut list = SymbolList::default();
    let mut invalid = Vec::new();
    // Duplicates found by hash: a subscribe may name tens of thousands.
    let mut named = std::collections::HashSet::with_capacity(items.len());
    for item in items.iter() {
        let Value::String(s) = item else {
            return Err(ProtocolError::new(
                id,
                ErrorCode::BadField,
                "field `symbols` must hold only strings",
            ));
        };
        if s == "*" {
            list.all = true;
        } else if let Err(why) = validate_symbol(s) {
            invalid.push(why);
        } else if named.insert(s.as_ref()) {
            list.names.push(s.to_string());
        }
    }
    if !invalid.is_empty() {
        let shown: Vec<_> = invalid.iter().take(3).cloned().collect();
        let more = if invalid.len() > 3 {
            format!(" (and {} more)", invalid.len() - 3)
        } else {
            String::new()
        };
        return Err(ProtocolError::new(
            id,
            ErrorCode::InvalidSymbol,
            format!("{}{more}; nothing was changed", shown.join("; ")),
        ));
    }
    Ok(list)
}

/// `depth`: 10 (the default), 25, or `"full"` (also written 0).
fn parse_depth(v: Option<&Value>, id: Option<i64>) -> Result<DepthClass, ProtocolError> {
    let n = match v {
        None | Some(Value::Static(StaticNode::Null)) => return Ok(DepthClass::D10),
        Some(Value::String(s)) if s == "full" => return Ok(DepthClass::Full),
        Some(Value::Static(StaticNode::I64(n))) => u64::try_from(*n).ok(),
        Some(Value::Static(StaticNode::U64(n))) => Some(*n),
        Some(_) => None,
    };
    n.and_then(DepthClass::from_wire).ok_or_else(|| {
        ProtocolError::new(
            id,
            ErrorCode::BadField,
            "field `depth` must be 10, 25 or \"full\" (levels per side of the book)",
        )
    })
}

fn parse_channels(v: Option<&Value>, id: Option<i64>) -> Result<ChannelSet, ProtocolError> {
    let bad = || {
        ProtocolError::new(
            id,
            ErrorCode::BadField,
            format!(
                "field `channels` must be an array of channel names: {}",
                Channel::NAMES
            ),
        )
    };
    match v {
        None | Some(Value::Static(StaticNode::Null)) => Ok(ChannelSet::BOTH),
        Some(Value::Array(items)) => {
            let mut set = ChannelSet::default();
            for item in items.iter() {
                let Value::String(s) = item else {
                    return Err(bad());
                };
                set.insert(Channel::parse(s).ok_or_else(|| {
                    ProtocolError::new(
                        id,
                        ErrorCode::BadField,
                        format!(
                            "field `channels`: unknown channel `{}`; channels are {}",
                            s.chars().take(32).collect::<String>(),
                            Channel::NAMES
                        ),
                    )
                })?);
            }
            if set.is_empty() {
                return Err(bad());
            }
            Ok(set)
        }
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Request, ProtocolError> {
        parse_request(&mut s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_op() {
        assert_eq!(
            req(
                r#"{"op":"subscribe","id":1,"symbols":["AAPL","MSFT","AAPL"],"channels":["trade"],"snapshot":false}"#
            ),
            Ok(Request::Subscribe {
                id: Some(1),
                symbols: SymbolList {
                    all: false,
                    names: vec!["AAPL".into(), "MSFT".into()]
                },
                channels: ChannelSet(Channel::Trade.bit()),
                snapshot: false,
                depth: DepthClass::D10,
                resume: None,
                policy: SlowPolicy::default(),
            })
        );
        assert!(matches!(
            req(r#"{"op":"subscribe","symbols":["*"]}"#),
            Ok(Request::Subscribe {
                id: None,
                symbols: SymbolList { all: true, .. },
                channels: ChannelSet::BOTH,
                snapshot: true,
                ..
            })
        ));
        assert!(matches!(
            req(r#"{"op":"unsubscribe","id":2,"symbols":["AAPL"]}"#),
            Ok(Request::Unsubscribe { id: Some(2), .. })
        ));
        assert_eq!(
            req(r#"{"op":"symbols","id":3}"#),
            Ok(Request::Symbols { id: Some(3) })
        );
        assert_eq!(
            req(r#"{"op":"ping","id":4}"#),
            Ok(Request::Ping { id: Some(4) })
        );
    }

    #[test]
    fn refuses_bad_messages_with_the_right_code() {
        let code = |s: &str| req(s).unwrap_err().code;
        assert_eq!(code("{nope"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"op":"dance","id":9}"#), ErrorCode::UnknownOp);
        assert_eq!(req(r#"{"op":"dance","id":9}"#).unwrap_err().id, Some(9));
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"op":"ping","id":"x"}"#), ErrorCode::BadField);
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":"AAPL"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":[]}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":[1]}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A"],"channels":["bok"]}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["*"],"channels":["book"]}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A"],"channels":["book"],"depth":11}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A"],"depth":10}"#),
            ErrorCode::BadField
        );
        assert!(matches!(
            req(r#"{"op":"subscribe","symbols":["A"],"channels":["book"],"depth":"full"}"#),
            Ok(Request::Subscribe {
                depth: DepthClass::Full,
                ..
            })
        ));
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A"],"snapshot":"yes"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["A"],"extra":1}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["BAD SYMBOL"]}"#),
            ErrorCode::InvalidSymbol
        );
        let long = format!(r#"{{"op":"subscribe","symbols":["{}"]}}"#, "X".repeat(33));
        assert_eq!(code(&long), ErrorCode::InvalidSymbol);
    }
}
