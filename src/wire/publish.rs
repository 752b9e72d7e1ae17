//! Publisher ticks on `/v1/publish`, parsed with serde_json's `RawValue` so
//! that prices and sizes are read from their exact text, never via `f64`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::book::{BookChange, BookSide, Level};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, NewTick, Side, validate_symbol};
use crate::wire::error::{ErrorCode, ProtocolError, json_syntax_error, truncate};

mod bar;

/// One tick as a publisher writes it. Unknown fields are refused so that a
/// misspelt field never silently loses data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTick<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sym: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow)]
    px: Option<&'a RawValue>,
    #[serde(borrow)]
    qty: Option<&'a RawValue>,
    #[serde(borrow)]
    side: Option<Cow<'a, str>>,
    #[serde(borrow)]
    bid: Option<&'a RawValue>,
    #[serde(borrow)]
    bsz: Option<&'a RawValue>,
    #[serde(borrow)]
    ask: Option<&'a RawValue>,
    #[serde(borrow)]
    asz: Option<&'a RawValue>,
    /// Bars (docs/PROTOCOL.md "Bars"): the interval, `1s` … `1d`.
    #[serde(borrow)]
    interval: Option<Cow<'a, str>>,
    /// Bars: the interval's start, ns.
    #[serde(borrow)]
    start: Option<&'a RawValue>,
    /// Bars: written by the server (start + interval); accepted, ignored.
    #[serde(default, rename = "end")]
    _end: serde::de::IgnoredAny,
    /// Bars: the four prices and three volumes.
    #[serde(borrow)]
    open: Option<&'a RawValue>,
    #[serde(borrow)]
    high: Option<&'a RawValue>,
    #[serde(borrow)]
    low: Option<&'a RawValue>,
    #[serde(borrow)]
    close: Option<&'a RawValue>,
    #[serde(borrow)]
    volume: Option<&'a RawValue>,
    #[serde(borrow)]
    quote_volume: Option<&'a RawValue>,
    #[serde(borrow)]
    buy_volume: Option<&'a RawValue>,
    /// Bars: the number of trades (0 when unknown).
    #[serde(borrow)]
    trades: Option<&'a RawValue>,
    /// Bars: the interval has ended.
    closed: Option<bool>,
    // Assigned by the server; accepted and ignored so that recorded ticks
    // can be published back as they were received.
    #[serde(default, rename = "seq")]
    _seq: serde::de::IgnoredAny,
    #[serde(default, rename = "rx")]
    _rx: serde::de::IgnoredAny,
    /// Books: `true` for a snapshot (replaces the book); ignored on ticks.
    #[serde(default)]
    snap: Option<bool>,
    /// Books: levels as `[price, size]` pairs, best first or in any order.
    #[serde(borrow, default)]
    bids: Option<Vec<(&'a RawValue, &'a RawValue)>>,
    #[serde(borrow, default)]
    asks: Option<Vec<(&'a RawValue, &'a RawValue)>>,
    // Written by the server on book messages; accepted and ignored like
    // `seq`, so a received book message can be published back.
    #[serde(default, rename = "from")]
    _from: serde::de::IgnoredAny,
    #[serde(default, rename = "depth")]
    _depth: serde::de::IgnoredAny,
    #[serde(default, rename = "cs")]
    _cs: serde::de::IgnoredAny,
    // A publisher may also send {"op":"ping","id":N}.
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// What one element of a publish message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Tick(NewTick),
    /// An order-book snapshot or diff for one symbol.
    Book {
        sym: Arc<str>,
        ts: u64,
        change: BookChange,
    },
    Ping {
        id: Option<i64>,
    },
    /// An instrument's reference data (`{"type":"ref",…}`), replacing
    /// what the server held for `sym`.
    Reference {
        /// The message's `id`, echoed in an error.
        id: Option<i64>,
        sym: Arc<str>,
        instrument: crate::model::instrument::Instrument,
    },
}

/// Parses a publish message: one tick object, or an array of them. Each
/// element is parsed on its own, so one bad tick does not sink the others;
/// its error says which element it was.
pub fn parse_publish(payload: &[u8]) -> Vec<Result<Published, ProtocolError>> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        match serde_json::from_slice::<Vec<&RawValue>>(payload) {
            Ok(items) => items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    parse_one(raw.get().as_bytes()).map_err(|mut e| {
                        e.message = format!("tick {} of {}: {}", i + 1, items.len(), e.message);
                        e
                    })
                })
                .collect(),
            Err(_) => vec![Err(ProtocolError::new(
                None,
                ErrorCode::BadJson,
                format!(
                    "the message is not valid JSON: {}; send a tick object or an array of them",
                    json_syntax_error(payload)
                ),
            ))],
        }
    } else {
        vec![parse_one(payload)]
    }
}

/// What every publish message has whatever else it holds: read when a
/// message is not a tick, to answer with its `id` and its `op`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// The fields of a publish message, for the error naming an unknown one.
const TICK_FIELDS: &str = "type, sym, ts, then px, qty, side (trades), bid, bsz, ask, asz (quotes), bids, asks (books) or interval, start, open, high, low, close, volume, quote_volume, buy_volume, trades, closed (bars); seq, rx, end and snap are accepted and ignored; {\"op\":\"ping\",\"id\":N} is the one op";

/// The ops a subscriber sends on `/v1/stream`.
const SUBSCRIBER_OPS: [&str; 3] = ["subscribe", "unsubscribe", "symbols"];

/// A message's `id`: `None` when absent or null; an error when it is not
/// an integer.
pub(crate) fn message_id(raw: Option<&RawValue>) -> Result<Option<i64>, ProtocolError> {
    match raw.map(|r| r.get()) {
        None | Some("null") => Ok(None),
        Some(text) => text.parse::<i64>().map(Some).map_err(|_| {
            ProtocolError::new(None, ErrorCode::BadField, "field `id` must be an integer")
        }),
    }
}

/// Any op but `ping`, refused: a subscriber's op is pointed to `/v1/stream`.
fn refuse_op(op: &str, id: Option<i64>) -> ProtocolError {
    let message = if SUBSCRIBER_OPS.contains(&op) {
        format!(
            "`{op}` is a subscriber request: send it on /v1/stream; /v1/publish takes ticks, and `ping`"
        )
    } else {
        format!(
            "unknown op `{}` on /v1/publish; publishers send ticks, and `ping`",
            truncate(op, 40)
        )
    };
    ProtocolError::new(id, ErrorCode::UnknownOp, message)
}

/// Why `text`, valid JSON or not, is not a tick object, in our words (not
/// serde's), with the message's `id` when it has a readable one.
fn refuse_unparsed(text: &[u8], e: &serde_json::Error) -> ProtocolError {
    if e.is_syntax() || e.is_eof() {
        return ProtocolError::new(
            None,
            ErrorCode::BadJson,
            format!("the message is not valid JSON: {}", json_syntax_error(text)),
        );
    }
    let Ok(env) = serde_json::from_slice::<Envelope>(text) else {
        return ProtocolError::new(
            None,
            ErrorCode::BadField,
            "a publish message is a tick object (or an array of them), such as {\"type\":\"trade\",\"sym\":\"AAPL\",\"ts\":1700000000000000000,\"px\":189.23,\"qty\":100}",
        );
    };
    let id = match message_id(env.id) {
        Ok(id) => id,
        Err(e) => return e,
    };
    if let Some(op) = env.op.as_deref().filter(|&op| op != "ping") {
        return refuse_op(op, id);
    }
    let said = e.to_string();
    let message = if let Some(field) = said
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        format!(
            "unknown field `{}`; a tick's fields are {TICK_FIELDS}",
            truncate(field, 40)
        )
    } else if let Some(field) = said
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split('`').next())
    {
        format!("field `{field}` appears twice")
    } else {
        // A field of the wrong JSON type: name which, as serde does not.
        let wrong = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(text)
            .ok()
            .and_then(|m| {
                ["type", "sym", "side", "op"]
                    .into_iter()
                    .find(|f| m.get(*f).is_some_and(|v| !v.is_string() && !v.is_null()))
            });
        match wrong {
            Some(field) => format!("field `{field}` must be a string"),
            None => "a publish message is a tick object (or an array of them)".into(),
        }
    };
    ProtocolError::new(id, ErrorCode::BadField, message)
}

fn parse_one(text: &[u8]) -> Result<Published, ProtocolError> {
    let w: WireTick = match serde_json::from_slice(text) {
        Ok(w) => w,
        // A `ref` has fields a tick has not: told apart only when the tick
        // parse fails, so ticks pay nothing for it.
        Err(_) if crate::wire::reference::is_reference(text) => {
            return crate::wire::reference::parse(text);
        }
        Err(e) => return Err(refuse_unparsed(text, &e)),
    };
    if w.op.is_none() && w.kind.as_deref() == Some("ref") {
        return crate::wire::reference::parse(text);
    }
    let id = message_id(w.id)?;
    if let Some(op) = &w.op {
        return match op.as_ref() {
            "ping" => Ok(Published::Ping { id }),
            other => Err(refuse_op(other, id)),
        };
    }
    // Every refusal of the tick carries the message's `id`.
    parse_tick(w).map_err(|e| ProtocolError { id, ..e })
}

/// The tick in a message that is one (no `op`).
fn parse_tick(w: WireTick) -> Result<Published, ProtocolError> {
    let bad = |m: String| ProtocolError::new(None, ErrorCode::BadField, m);
    let kind = w.kind.clone().ok_or_else(|| {
        bad(
            "field `type` is missing; it is \"trade\", \"quote\", \"book\", \"bar\" or \"ref\""
                .into(),
        )
    })?;
    let sym = w
        .sym
        .clone()
        .ok_or_else(|| bad("field `sym` is missing".into()))?;
    validate_symbol(&sym).map_err(|m| ProtocolError::new(None, ErrorCode::InvalidSymbol, m))?;
    const TS: &str = "it is the event time as an integer of ns since the Unix epoch";
    let ts = match w.ts {
        None => return Err(bad(format!("field `ts` is missing; {TS}"))),
        Some(raw) => raw
            .get()
            .parse::<u64>()
            .map_err(|_| bad(format!("field `ts` is `{}`; {TS}", truncate(raw.get(), 30))))?,
    };
    if kind != "bar" {
        bar::forbid_bar_fields(&w, &kind)?;
    }
    if kind != "book" {
        forbid(
            &[
                ("bids", w.bids.as_ref().map(|_| RawValue::NULL)),
                ("asks", w.asks.as_ref().map(|_| RawValue::NULL)),
            ],
            &kind,
        )?;
    }
    let event = match kind.as_ref() {
        "book" => {
            forbid(
                &[
                    ("px", w.px),
                    ("qty", w.qty),
                    ("bid", w.bid),
                    ("bsz", w.bsz),
                    ("ask", w.ask),
                    ("asz", w.asz),
                ],
                "book",
            )?;
            if w.bids.is_none() && w.asks.is_none() {
                return Err(bad(
                    "a book message needs `bids` and/or `asks`: arrays of [price, size]".into(),
                ));
            }
            let mut levels = Vec::new();
            for (name, side, list) in [
                ("bids", BookSide::Bid, &w.bids),
                ("asks", BookSide::Ask, &w.asks),
            ] {
                for (i, (px, sz)) in list.iter().flatten().enumerate() {
                    let at = |m: ProtocolError| bad(format!("{name}[{i}]: {}", m.message));
                    levels.push(Level {
                        side,
                        px: number("price", Some(px)).map_err(at)?,
                        sz: size("size", Some(sz)).map_err(at)?,
                    });
                }
            }
            let change = if w.snap == Some(true) {
                BookChange::Snapshot(levels)
            } else {
                BookChange::Diff(levels)
            };
            return Ok(Published::Book {
                sym: Arc::from(sym.as_ref()),
                ts,
                change,
            });
        }
        "trade" => {
            forbid(
                &[
                    ("bid", w.bid),
                    ("bsz", w.bsz),
                    ("ask", w.ask),
                    ("asz", w.asz),
                ],
                "trade",
            )?;
            let side = match w.side.as_deref() {
                None => Side::Unknown,
                Some(s) => Side::parse(s).ok_or_else(|| {
                    bad(format!(
                        "field `side` is `{}`; it must be \"B\", \"S\" or \"N\"",
                        truncate(s, 10)
                    ))
                })?,
            };
            Event::Trade {
                px: number("px", w.px)?,
                qty: size("qty", w.qty)?,
                side,
            }
        }
        "bar" => bar::parse_bar(&w)?,
        "quote" => {
            forbid(&[("px", w.px), ("qty", w.qty)], "quote")?;
            if w.side.is_some() {
                return Err(bad("field `side` belongs to trades, not quotes".into()));
            }
            Event::Quote {
                bid: number("bid", w.bid)?,
                bsz: size("bsz", w.bsz)?,
                ask: number("ask", w.ask)?,
                asz: size("asz", w.asz)?,
            }
        }
        other => {
            return Err(bad(format!(
                "field `type` is `{}`; it must be \"trade\", \"quote\", \"book\", \"bar\" or \"ref\"",
                truncate(other, 20)
            )));
        }
    };
    Ok(Published::Tick(NewTick {
        book: None,
        sym: Arc::from(sym.as_ref()),
        ts,
        event,
    }))
}

fn forbid(fields: &[(&str, Option<&RawValue>)], kind: &str) -> Result<(), ProtocolError> {
    match fields.iter().find(|(_, v)| v.is_some()) {
        Some((name, _)) => Err(ProtocolError::new(
            None,
            ErrorCode::BadField,
            format!("field `{name}` does not belong to a {kind}"),
        )),
        None => Ok(()),
    }
}

/// A price: a JSON number, or a string holding one (as many venues send).
pub(crate) fn number(name: &str, raw: Option<&RawValue>) -> Result<Fixed, ProtocolError> {
    let raw = raw.ok_or_else(|| {
        ProtocolError::new(
            None,
            ErrorCode::BadField,
            format!("field `{name}` is missing"),
        )
    })?;
    let text = raw.get();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    Fixed::parse(text).map_err(|e| {
        ProtocolError::new(
            None,
            ErrorCode::BadField,
            format!("field `{name}`: {e}; write a decimal number such as 189.23"),
        )
    })
}

fn size(name: &str, raw: Option<&RawValue>) -> Result<Fixed, ProtocolError> {
    let v = number(name, raw)?;
    if v.raw() < 0 {
        return Err(ProtocolError::new(
            None,
            ErrorCode::BadField,
            format!("field `{name}` is negative; sizes are zero or more"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
