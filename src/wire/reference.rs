//! A publisher's reference data on `/v1/publish`:
//! `{"type":"ref","sym":"ESH1","tick_size":"0.25","decimals":2,"currency":"USD","lot_size":"1"}`
//! (docs/PROTOCOL.md "Reference data"), with the field names
//! `/v1/symbols?ref=1` answers with, so an answer's object can be
//! published back as it is.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::decimal::Fixed;
use crate::model::instrument::{Instrument, decimals_of, validate_currency};
use crate::model::tick::validate_symbol;
use crate::wire::error::{ErrorCode, ProtocolError, truncate};
use crate::wire::json::json_string;
use crate::wire::publish::{Published, message_id, number};

/// The fields of a `ref` message, for the error naming an unknown one.
const REF_FIELDS: &str = "type, sym, tick_size, lot_size, decimals, currency, id";

/// A `ref` message as a publisher writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRef<'a> {
    // Checked by the caller: "ref".
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    #[serde(borrow)]
    sym: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tick_size: Option<&'a RawValue>,
    #[serde(borrow)]
    lot_size: Option<&'a RawValue>,
    #[serde(borrow)]
    decimals: Option<&'a RawValue>,
    #[serde(borrow)]
    currency: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// Just the `type` and `id`, read when the whole message is not readable.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// True for a JSON object whose `type` is `"ref"`.
pub(crate) fn is_reference(text: &[u8]) -> bool {
    serde_json::from_slice::<Kind>(text).is_ok_and(|k| k.kind.as_deref() == Some("ref"))
}

/// Parses a `ref` message (its `type` already known to be `"ref"`); every
/// refusal carries the message's `id`.
pub(crate) fn parse(text: &[u8]) -> Result<Published, ProtocolError> {
    let id = serde_json::from_slice::<Kind>(text)
        .ok()
        .and_then(|k| message_id(k.id).ok())
        .flatten();
    let bad = |m: String| ProtocolError::new(id, ErrorCode::BadField, m);
    let w: WireRef = serde_json::from_slice(text).map_err(|e| {
        let said = e.to_string();
        match said
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(f) => bad(format!(
                "unknown field `{}`; a ref's fields are {REF_FIELDS}",
                truncate(f, 40)
            )),
            None => bad(format!(
                "a ref message is {{\"type\":\"ref\",\"sym\":…}} with any of tick_size, lot_size, decimals, currency ({})",
                truncate(&said, 80)
            )),
        }
    })?;
    let id = message_id(w.id).map_err(|e| ProtocolError { id, ..e })?;
    let bad = |m: String| ProtocolError::new(id, ErrorCode::BadField, m);
    let sym = w.sym.ok_or_else(|| bad("field `sym` is missing".into()))?;
    validate_symbol(&sym).map_err(|m| ProtocolError::new(id, ErrorCode::InvalidSymbol, m))?;
    let step = |name: &str, raw: Option<&RawValue>| -> Result<Option<Fixed>, ProtocolError> {
        match raw.filter(|r| r.get() != "null") {
            None => Ok(None),
            Some(r) => {
                let v = number(name, Some(r)).map_err(|e| bad(e.message))?;
                if v.raw() <= 0 {
                    return Err(bad(format!("field `{name}` is {v}; a step is above zero")));
                }
                Ok(Some(v))
            }
        }
    };
    let tick_size = step("tick_size", w.tick_size)?;
    let lot_size = step("lot_size", w.lot_size)?;
    let decimals = match w.decimals.map(RawValue::get).filter(|&t| t != "null") {
        None => tick_size.map(decimals_of),
        Some(t) => match t.parse::<u8>() {
            Ok(d) if d <= 9 => Some(d),
            _ => {
                return Err(bad(format!(
                    "field `decimals` is `{}`; it is an integer from 0 to 9 (prices have 9)",
                    truncate(t, 20)
                )));
            }
        },
    };
    let currency = match w.currency.map(RawValue::get).filter(|&t| t != "null") {
        None => None,
        Some(t) => {
            let c: String = serde_json::from_str(t)
                .map_err(|_| bad("field `currency` must be a string, such as \"USD\"".into()))?;
            validate_currency(&c).map_err(|why| bad(format!("field `currency`: {why}")))?;
            Some(c)
        }
    };
    Ok(Published::Reference {
        id,
        sym: Arc::from(sym.as_ref()),
        instrument: Instrument {
            tick_size,
            decimals,
            currency,
            lot_size,
        },
    })
}

/// Writes an instrument's known fields as `,"tick_size":"0.01",…` (prices
/// and sizes as exact decimal strings), for `/v1/symbols?ref=1`.
pub fn write_fields(out: &mut Vec<u8>, i: &Instrument) {
    for (name, value) in [("tick_size", i.tick_size), ("lot_size", i.lot_size)] {
        if let Some(v) = value {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":\"");
            v.write_to(out);
            out.push(b'"');
        }
    }
    if let Some(d) = i.decimals {
        out.extend_from_slice(format!(",\"decimals\":{d}").as_bytes());
    }
    if let Some(c) = &i.currency {
        out.extend_from_slice(b",\"currency\":");
        json_string(out, c);
    }
}

#[cfg(test)]
mod tests {
    use crate::wire::publish::{Published, parse_publish};

    fn one(s: &str) -> Result<Published, crate::wire::error::ProtocolError> {
        parse_publish(s.as_bytes()).pop().unwrap()
    }

    #[test]
    fn parses_a_ref_and_derives_decimals() {
        let Ok(Published::Reference {
            id,
            sym,
            instrument,
        }) = one(
            r#"{"type":"ref","sym":"ESH1","tick_size":0.25,"currency":"USD","lot_size":"1","id":3}"#,
        )
        else {
            panic!()
        };
        assert_eq!((id, &*sym), (Some(3), "ESH1"));
        assert_eq!(instrument.decimals, Some(2));
        assert_eq!(instrument.currency.as_deref(), Some("USD"));
        // Only `sym`: the tick parse succeeds first and still yields a ref.
        assert!(matches!(
            one(r#"{"type":"ref","sym":"ESH1"}"#),
            Ok(Published::Reference { .. })
        ));
    }

    #[test]
    fn refuses_bad_values_with_the_id() {
        for (msg, words) in [
            (
                r#"{"type":"ref","sym":"A","tick_size":"0","id":7}"#,
                "above zero",
            ),
            (
                r#"{"type":"ref","sym":"A","tick_size":"x","id":7}"#,
                "tick_size",
            ),
            (
                r#"{"type":"ref","sym":"A","lot_size":-1,"id":7}"#,
                "above zero",
            ),
            (r#"{"type":"ref","sym":"A","decimals":12,"id":7}"#, "0 to 9"),
            (
                r#"{"type":"ref","sym":"A","decimals":1.5,"id":7}"#,
                "0 to 9",
            ),
            (
                r#"{"type":"ref","sym":"A","currency":"U S","id":7}"#,
                "currency",
            ),
            (
                r#"{"type":"ref","sym":"A","currency":5,"id":7}"#,
                "must be a string",
            ),
            (
                r#"{"type":"ref","sym":"A","tick":"0.25","id":7}"#,
                "unknown field `tick`",
            ),
            (
                r#"{"type":"ref","sym":"bad sym","currency":"USD","id":7}"#,
                "symbol",
            ),
            (
                r#"{"type":"ref","currency":"USD","id":7}"#,
                "`sym` is missing",
            ),
        ] {
            let e = one(msg).unwrap_err();
            assert_eq!(e.id, Some(7), "{msg}: {e:?}");
            assert!(e.message.contains(words), "{msg}: {}", e.message);
        }
    }
}
