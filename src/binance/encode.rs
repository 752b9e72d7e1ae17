//! Binance payloads, written by hand like tickwire's own JSON: integers
//! with itoa, prices and quantities as exact decimal strings (never `f64`).
//! Each is written once per tick per stream and time unit, and shared by
//! every client of that stream (see [`super::hub`]).

use crate::model::book::{BookSide, Level};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, Side, Tick};
use crate::wire::json::push_u64;

/// The unit of `E` and `T`: Binance's default milliseconds, or
/// microseconds with `?timeUnit=MICROSECOND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Millis = 0,
    Micros = 1,
}

impl TimeUnit {
    /// From the `timeUnit` query value (case-insensitive, as Binance).
    pub fn parse(s: &str) -> Option<TimeUnit> {
        match s.to_ascii_uppercase().as_str() {
            "MILLISECOND" => Some(TimeUnit::Millis),
            "MICROSECOND" => Some(TimeUnit::Micros),
            _ => None,
        }
    }

    /// Nanoseconds in this unit.
    pub fn of_ns(self, ns: u64) -> u64 {
        match self {
            TimeUnit::Millis => ns / 1_000_000,
            TimeUnit::Micros => ns / 1_000,
        }
    }
}

/// Fraction digits Binance's spot API writes every price and quantity with.
const BINANCE_DECIMALS: usize = 8;

/// `"1.50000000"`: a decimal as a JSON string with at least Binance's 8
/// fraction digits (clients compare strings: python-binance removes a
/// level only when its quantity reads `"0.00000000"`); a 9th digit
/// tickwire carries is kept, never rounded away.
pub fn push_str_fixed(out: &mut Vec<u8>, v: Fixed) {
    out.push(b'"');
    let start = out.len();
    v.write_to(out);
    let digits = match out[start..].iter().position(|&b| b == b'.') {
        Some(dot) => out.len() - start - dot - 1,
        None => {
            out.push(b'.');
            0
        }
    };
    for _ in digits..BINANCE_DECIMALS {
        out.push(b'0');
    }
    out.push(b'"');
}

fn push_key_u64(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key);
    push_u64(out, v);
}

fn push_key_fixed(out: &mut Vec<u8>, key: &[u8], v: Fixed) {
    out.extend_from_slice(key);
    push_str_fixed(out, v);
}

/// "Is the buyer the market maker?": true when the seller was the aggressor.
fn buyer_is_maker(side: Side) -> bool {
    side == Side::Sell
}

/// `<symbol>@trade` (`aggregate`: `<symbol>@aggTrade`, with the tick's
/// `seq` as the aggregate, first and last trade id). `E` is when tickwire
/// received the tick, `T` the trade's own time.
pub fn trade(out: &mut Vec<u8>, t: &Tick, symbol: &str, unit: TimeUnit, aggregate: bool) {
    let Event::Trade { px, qty, side } = t.event else {
        return;
    };
    out.extend_from_slice(if aggregate {
        br#"{"e":"aggTrade","E":"#
    } else {
        br#"{"e":"trade","E":"#
    });
    push_u64(out, unit.of_ns(t.rx));
    out.extend_from_slice(br#","s":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.push(b'"');
    push_key_u64(
        out,
        if aggregate { br#","a":"# } else { br#","t":"# },
        t.seq,
    );
    push_key_fixed(out, br#","p":"#, px);
    push_key_fixed(out, br#","q":"#, qty);
    if aggregate {
        push_key_u64(out, br#","f":"#, t.seq);
        push_key_u64(out, br#","l":"#, t.seq);
    }
    push_key_u64(out, br#","T":"#, unit.of_ns(t.ts));
    out.extend_from_slice(if buyer_is_maker(side) {
        br#","m":true,"M":true}"#
    } else {
        br#","m":false,"M":true}"#
    });
}

/// `<symbol>@bookTicker`: `u` is the quote's per-symbol `seq`.
pub fn book_ticker(out: &mut Vec<u8>, t: &Tick, symbol: &str) {
    let (Event::Quote { bid, bsz, ask, asz }
    | Event::Book(crate::model::book::TopOfBook { bid, bsz, ask, asz })) = t.event
    else {
        return;
    };
    push_key_u64(out, br#"{"u":"#, t.seq);
    out.extend_from_slice(br#","s":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.push(b'"');
    push_key_fixed(out, br#","b":"#, bid);
    push_key_fixed(out, br#","B":"#, bsz);
    push_key_fixed(out, br#","a":"#, ask);
    push_key_fixed(out, br#","A":"#, asz);
    out.push(b'}');
}

/// `[["px","qty"],…]` of one side's levels, in the order given.
fn push_levels<'a>(out: &mut Vec<u8>, levels: impl Iterator<Item = &'a Level>) {
    out.push(b'[');
    for (i, l) in levels.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        push_str_fixed(out, l.px);
        out.push(b',');
        push_str_fixed(out, l.sz);
        out.push(b']');
    }
    out.push(b']');
}

/// `"bids":[…],"asks":[…]` from levels listed bids first.
fn push_sides(out: &mut Vec<u8>, bids_key: &[u8], asks_key: &[u8], levels: &[Level]) {
    out.extend_from_slice(bids_key);
    push_levels(out, levels.iter().filter(|l| l.side == BookSide::Bid));
    out.extend_from_slice(asks_key);
    push_levels(out, levels.iter().filter(|l| l.side == BookSide::Ask));
}

/// What a depth payload is built from.
pub struct DepthUpdate<'a> {
    /// Binance symbol, uppercase.
    pub symbol: &'a str,
    /// First update id covered (`U`).
    pub first: u64,
    /// Last update id covered (`u`): the book's `seq`.
    pub last: u64,
    /// Event time, ns.
    pub event_ns: u64,
    /// Levels set (size 0: removed), bids first.
    pub levels: &'a [Level],
}

/// `<symbol>@depth`: `{"e":"depthUpdate","E":…,"s":…,"U":…,"u":…,"b":…,"a":…}`.
pub fn depth_update(out: &mut Vec<u8>, d: &DepthUpdate, unit: TimeUnit) {
    push_key_u64(out, br#"{"e":"depthUpdate","E":"#, unit.of_ns(d.event_ns));
    out.extend_from_slice(br#","s":""#);
    out.extend_from_slice(d.symbol.as_bytes());
    out.push(b'"');
    push_key_u64(out, br#","U":"#, d.first);
    push_key_u64(out, br#","u":"#, d.last);
    push_sides(out, br#","b":"#, br#","a":"#, d.levels);
    out.push(b'}');
}

/// `<symbol>@depthN` and `/api/v3/depth`: `{"lastUpdateId":…,"bids":…,"asks":…}`.
pub fn partial_depth(out: &mut Vec<u8>, last_update_id: u64, levels: &[Level]) {
    push_key_u64(out, br#"{"lastUpdateId":"#, last_update_id);
    push_sides(out, br#","bids":"#, br#","asks":"#, levels);
    out.push(b'}');
}

/// `{"stream":"<name>","data":<payload>}`: a combined stream's event,
/// written into `out` (the hub's frame), the payload by `write`.
pub fn combined_into(out: &mut Vec<u8>, stream: &str, write: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(br#"{"stream":""#);
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(br#"","data":"#);
    write(out);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tick::{Channel, KeyId};

    fn tick(event: Event) -> Tick {
        Tick {
            key: KeyId::new(0, event.channel()),
            sym: "BTC/USDT".into(),
            seq: 7,
            ts: 1_582_329_600_123_456_789,
            rx: 1_582_329_600_200_000_000,
            event,
        }
    }

    #[test]
    fn trade_has_binance_fields() {
        let t = tick(Event::Trade {
            px: "9662.05".parse().unwrap(),
            qty: "0.004".parse().unwrap(),
            side: Side::Sell,
        });
        let mut out = Vec::new();
        trade(&mut out, &t, "BTCUSDT", TimeUnit::Millis, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"e":"trade","E":1582329600200,"s":"BTCUSDT","t":7,"p":"9662.05000000","q":"0.00400000","T":1582329600123,"m":true,"M":true}"#
        );
        let mut out = Vec::new();
        trade(&mut out, &t, "BTCUSDT", TimeUnit::Micros, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"e":"aggTrade","E":1582329600200000,"s":"BTCUSDT","a":7,"p":"9662.05000000","q":"0.00400000","f":7,"l":7,"T":1582329600123456,"m":true,"M":true}"#
        );
        assert_eq!(t.key.channel(), Channel::Trade);
    }

    #[test]
    fn decimals_have_binance_s_eight_digits_or_more() {
        for (v, want) in [
            ("0", "\"0.00000000\""),
            ("12", "\"12.00000000\""),
            ("0.004", "\"0.00400000\""),
            ("-1.5", "\"-1.50000000\""),
            ("0.123456789", "\"0.123456789\""),
        ] {
            let mut out = Vec::new();
            push_str_fixed(&mut out, v.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn depth_payloads_list_bids_then_asks() {
        let l = |side, px: &str, sz: &str| Level {
            side,
            px: px.parse().unwrap(),
            sz: sz.parse().unwrap(),
        };
        let levels = [l(BookSide::Bid, "1.5", "2"), l(BookSide::Ask, "1.6", "0")];
        let mut out = Vec::new();
        depth_update(
            &mut out,
            &DepthUpdate {
                symbol: "ESM4",
                first: 3,
                last: 5,
                event_ns: 2_000_000,
                levels: &levels,
            },
            TimeUnit::Millis,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"e":"depthUpdate","E":2,"s":"ESM4","U":3,"u":5,"b":[["1.50000000","2.00000000"]],"a":[["1.60000000","0.00000000"]]}"#
        );
        let mut out = Vec::new();
        partial_depth(&mut out, 9, &levels[..1]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"lastUpdateId":9,"bids":[["1.50000000","2.00000000"]],"asks":[]}"#
        );
        let mut out = Vec::new();
        combined_into(&mut out, "a@trade", |o| o.extend_from_slice(b"{}"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"stream":"a@trade","data":{}}"#
        );
    }
}
