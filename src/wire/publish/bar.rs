//! A bar as a publisher (or a JSON-lines recording) writes it: the bar
//! message of docs/PROTOCOL.md "Bars" less `seq`/`rx`. A published bar
//! marks its key as fed from outside: the server builds no bars of its own
//! for that symbol and interval.

use serde_json::value::RawValue;

use super::{WireTick, forbid, number, size};
use crate::model::bar::{Bar, BarInterval};
use crate::model::tick::Event;
use crate::wire::error::{ErrorCode, ProtocolError, truncate};

fn bad(m: String) -> ProtocolError {
    ProtocolError::new(None, ErrorCode::BadField, m)
}

/// An integer field of a bar (`start`, `trades`).
fn integer(name: &str, raw: Option<&RawValue>) -> Result<u64, ProtocolError> {
    let raw = raw.ok_or_else(|| bad(format!("field `{name}` is missing")))?;
    raw.get().parse::<u64>().map_err(|_| {
        bad(format!(
            "field `{name}` is `{}`; it must be a non-negative integer",
            truncate(raw.get(), 30)
        ))
    })
}

/// Refuses bar fields on a message of another `kind`.
pub(super) fn forbid_bar_fields(w: &WireTick, kind: &str) -> Result<(), ProtocolError> {
    if w.interval.is_some() {
        return Err(bad(format!("field `interval` does not belong to a {kind}")));
    }
    let closed = w.closed.map(|_| RawValue::NULL);
    forbid(
        &[
            ("start", w.start),
            ("open", w.open),
            ("high", w.high),
            ("low", w.low),
            ("close", w.close),
            ("volume", w.volume),
            ("quote_volume", w.quote_volume),
            ("buy_volume", w.buy_volume),
            ("trades", w.trades),
            ("closed", closed),
        ],
        kind,
    )
}

/// The bar in a `"type":"bar"` message, checked: a known interval, a start
/// on the interval's boundary, low ≤ open, close ≤ high, volumes ≥ 0.
pub(super) fn parse_bar(w: &WireTick) -> Result<Event, ProtocolError> {
    forbid(
        &[
            ("px", w.px),
            ("qty", w.qty),
            ("bid", w.bid),
            ("bsz", w.bsz),
            ("ask", w.ask),
            ("asz", w.asz),
        ],
        "bar",
    )?;
    let name = w.interval.as_deref().ok_or_else(|| {
        bad("field `interval` is missing; it is \"1s\", \"1m\", \"1h\" or \"1d\"".into())
    })?;
    let interval = BarInterval::parse(name).ok_or_else(|| {
        bad(format!(
            "field `interval` is `{}`; it must be \"1s\", \"1m\", \"1h\" or \"1d\"",
            truncate(name, 20)
        ))
    })?;
    let start = integer("start", w.start)?;
    if !start.is_multiple_of(interval.nanos()) {
        return Err(bad(format!(
            "field `start` is {start}, not the start of a {name} interval (a multiple of {} ns)",
            interval.nanos()
        )));
    }
    let bar = Bar {
        interval,
        start,
        open: number("open", w.open)?,
        high: number("high", w.high)?,
        low: number("low", w.low)?,
        close: number("close", w.close)?,
        volume: size("volume", w.volume)?,
        quote_volume: match w.quote_volume {
            None => crate::model::decimal::Fixed::ZERO,
            raw => size("quote_volume", raw)?,
        },
        buy_volume: match w.buy_volume {
            None => crate::model::decimal::Fixed::ZERO,
            raw => size("buy_volume", raw)?,
        },
        trades: match w.trades {
            None => 0,
            raw => integer("trades", raw)?,
        },
        closed: w.closed.unwrap_or(false),
    };
    if bar.low > bar.open.min(bar.close) || bar.high < bar.open.max(bar.close) {
        return Err(bad(format!(
            "bar prices are inconsistent: low {} and high {} must bound open {} and close {}",
            bar.low, bar.high, bar.open, bar.close
        )));
    }
    Ok(Event::Bar(Box::new(bar)))
}
