//! Klines: tickwire's bars (docs/PROTOCOL.md "Bars") in Binance's shape,
//! the `<symbol>@kline_<interval>` payload and `/api/v3/klines` (and
//! `uiKlines`), with what a bar does not carry itself and Binance shows:
//!
//! - **`f`/`L`** (first and last trade id) and **`Q`** (taker buy quote
//!   volume) are taken from the trades the endpoint saw (its ring reader
//!   sees each trade before the bar update it caused). A bar some of whose
//!   trades it did not see (it started mid-bar: a journal restore, bars
//!   replayed from a recording or published) has `f` = `L` = -1 and `Q` as
//!   far as seen ("0" for a bar with no trades seen).
//! - **The store**: per symbol and interval, the newest `rows` closed bars
//!   (default 1,000, Binance's `limit` maximum) and the open one, as
//!   `/api/v3/klines` returns them. A row is 112 bytes: 1,000 rows × 4
//!   intervals ≈ 450 KiB per symbol that has traded, held for the run.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::json;

use crate::binance::encode::{TimeUnit, push_str_fixed};
use crate::model::bar::{Bar, BarInterval, notional};
use crate::model::decimal::Fixed;
use crate::model::tick::{Event, Side, Tick};
use crate::wire::json::push_u64;

/// Closed klines kept per symbol and interval by default.
pub const DEFAULT_ROWS: usize = 1000;

/// One kline: a bar and what the endpoint saw of its trades.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kline {
    /// The bar as tickwire published it.
    pub bar: Bar,
    /// First and last trade ids (tickwire's trade `seq`s), when every
    /// trade of the bar was seen.
    pub trade_ids: Option<(u64, u64)>,
    /// Σ px × qty of the bar's buyer-aggressor trades seen (`Q`).
    pub buy_quote: Fixed,
}

/// The trades seen of one symbol's current bar of one interval.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// The interval's start the counts are for.
    start: u64,
    /// Trades seen in it.
    trades: u64,
    /// Their first and last `seq`.
    first: u64,
    last: u64,
    /// Σ px × qty of their buys.
    buy_quote: i64,
}

/// Per symbol and interval: the trades seen and the klines kept.
#[derive(Default)]
struct Series {
    /// The current interval's trades as seen.
    seen: Seen,
    /// The interval before: a trade that opens a new interval comes before
    /// the close of the old bar it causes.
    prev: Seen,
    /// Closed klines, oldest first, at most `rows`.
    closed: VecDeque<Kline>,
    /// The newest bar if it is still open.
    open: Option<Kline>,
}

/// Every symbol's klines, owned by the hub's thread.
pub struct KlineStore {
    /// Closed klines kept per symbol and interval.
    rows: usize,
    /// By uppercase Binance symbol, per interval ([`BarInterval::ALL`]).
    series: HashMap<Arc<str>, [Series; 4], foldhash::fast::RandomState>,
}

impl KlineStore {
    pub fn new(rows: usize) -> KlineStore {
        KlineStore {
            rows,
            series: HashMap::default(),
        }
    }

    fn of(&mut self, upper: &Arc<str>) -> &mut [Series; 4] {
        if !self.series.contains_key(upper) {
            self.series.insert(upper.clone(), Default::default());
        }
        self.series.get_mut(upper).expect("inserted above")
    }

    /// Notes a trade of `upper` (before the bar updates it causes).
    pub fn on_trade(&mut self, upper: &Arc<str>, t: &Tick) {
        let Event::Trade { px, qty, side } = t.event else {
            return;
        };
        for (iv, s) in BarInterval::ALL.into_iter().zip(self.of(upper)) {
            let start = iv.start_of(t.ts);
            if s.seen.start != start || s.seen.trades == 0 {
                s.prev = s.seen;
                s.seen = Seen {
                    start,
                    first: t.seq,
                    ..Seen::default()
                };
            }
            s.seen.trades += 1;
            s.seen.last = t.seq;
            if side == Side::Buy {
                s.seen.buy_quote = s.seen.buy_quote.saturating_add(notional(px, qty));
            }
        }
    }

    /// Folds a bar update in and returns it as a kline.
    pub fn on_bar(&mut self, upper: &Arc<str>, bar: &Bar) -> Kline {
        let rows = self.rows;
        let s = &mut self.of(upper)[bar.interval as usize];
        let seen = [s.seen, s.prev]
            .into_iter()
            .find(|n| n.start == bar.start && n.trades > 0)
            .unwrap_or_default();
        let whole = seen.trades == bar.trades && bar.trades > 0;
        let k = Kline {
            bar: bar.clone(),
            trade_ids: whole.then_some((seen.first, seen.last)),
            buy_quote: Fixed(seen.buy_quote),
        };
        if bar.closed {
            if s.open.as_ref().is_some_and(|o| o.bar.start == bar.start) {
                s.open = None;
            }
            // A bar of an interval already kept replaces it (a replay
            // that loops); rows stay in start order.
            while s.closed.back().is_some_and(|b| b.bar.start >= bar.start) {
                s.closed.pop_back();
            }
            s.closed.push_back(k.clone());
            while s.closed.len() > rows {
                s.closed.pop_front();
            }
        } else {
            s.open = Some(k.clone());
        }
        k
    }

    /// The klines of `upper`'s `interval` whose open time (ns) is within
    /// `[from, to]`: the first `limit` from `from` when it is given, else
    /// the last `limit`. The open bar comes last, as on Binance.
    pub fn select(
        &self,
        upper: &str,
        interval: BarInterval,
        from: Option<u64>,
        to: Option<u64>,
        limit: usize,
    ) -> Vec<&Kline> {
        let Some(s) = self.series.get(upper).map(|s| &s[interval as usize]) else {
            return Vec::new();
        };
        let inside = |k: &&Kline| {
            from.is_none_or(|f| k.bar.start >= f) && to.is_none_or(|t| k.bar.start <= t)
        };
        let all = s.closed.iter().chain(s.open.as_ref()).filter(inside);
        if from.is_some() {
            all.take(limit).collect()
        } else {
            let v: Vec<&Kline> = all.collect();
            v[v.len().saturating_sub(limit)..].to_vec()
        }
    }

    /// The open kline of `upper`'s `interval`, if its bar is open.
    pub fn open(&self, upper: &str, interval: BarInterval) -> Option<&Kline> {
        self.series.get(upper)?[interval as usize].open.as_ref()
    }

    /// The symbol has had a bar or a trade here.
    pub fn knows(&self, upper: &str) -> bool {
        self.series.contains_key(upper)
    }
}

fn key_u64(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key);
    push_u64(out, v);
}

fn key_fixed(out: &mut Vec<u8>, key: &[u8], v: Fixed) {
    out.extend_from_slice(key);
    push_str_fixed(out, v);
}

/// Open and close time of a kline in `unit` (close: the interval's last
/// instant, end − 1, as Binance).
fn times(bar: &Bar, unit: TimeUnit) -> (u64, u64) {
    (unit.of_ns(bar.start), unit.of_ns(bar.end()) - 1)
}

/// `<symbol>@kline_<interval>`: `{"e":"kline","E":…,"s":…,"k":{…}}`, `E`
/// being when tickwire received the update.
pub fn kline_event(out: &mut Vec<u8>, k: &Kline, symbol: &str, event_ns: u64, unit: TimeUnit) {
    let b = &k.bar;
    let (open, close) = times(b, unit);
    key_u64(out, br#"{"e":"kline","E":"#, unit.of_ns(event_ns));
    out.extend_from_slice(br#","s":""#);
    out.extend_from_slice(symbol.as_bytes());
    key_u64(out, br#"","k":{"t":"#, open);
    key_u64(out, br#","T":"#, close);
    out.extend_from_slice(br#","s":""#);
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(br#"","i":""#);
    out.extend_from_slice(b.interval.as_str().as_bytes());
    match k.trade_ids {
        Some((f, l)) => {
            key_u64(out, br#"","f":"#, f);
            key_u64(out, br#","L":"#, l);
        }
        None => out.extend_from_slice(br#"","f":-1,"L":-1"#),
    }
    key_fixed(out, br#","o":"#, b.open);
    key_fixed(out, br#","c":"#, b.close);
    key_fixed(out, br#","h":"#, b.high);
    key_fixed(out, br#","l":"#, b.low);
    key_fixed(out, br#","v":"#, b.volume);
    key_u64(out, br#","n":"#, b.trades);
    out.extend_from_slice(if b.closed {
        br#","x":true"#
    } else {
        br#","x":false"#
    });
    key_fixed(out, br#","q":"#, b.quote_volume);
    key_fixed(out, br#","V":"#, b.buy_volume);
    key_fixed(out, br#","Q":"#, k.buy_quote);
    out.extend_from_slice(br#","B":"0"}}"#);
}

/// One `/api/v3/klines` row: `[t,"o","h","l","c","v",T,"q",n,"V","Q","0"]`.
pub fn kline_row(k: &Kline, unit: TimeUnit) -> serde_json::Value {
    let b = &k.bar;
    let (open, close) = times(b, unit);
    let s = |v: Fixed| {
        let mut out = Vec::new();
        push_str_fixed(&mut out, v);
        String::from_utf8_lossy(&out[1..out.len() - 1]).into_owned()
    };
    json!([
        open,
        s(b.open),
        s(b.high),
        s(b.low),
        s(b.close),
        s(b.volume),
        close,
        s(b.quote_volume),
        b.trades,
        s(b.buy_volume),
        s(k.buy_quote),
        "0"
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tick::KeyId;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_040 * S;

    fn trade(seq: u64, ts: u64, px: &str, qty: &str, side: Side) -> Tick {
        Tick {
            key: KeyId::new(0, crate::model::tick::Channel::Trade),
            sym: "BTCUSDT".into(),
            seq,
            ts,
            rx: ts,
            event: Event::Trade {
                px: px.parse().unwrap(),
                qty: qty.parse().unwrap(),
                side,
            },
        }
    }

    fn bar(start: u64, trades: u64, closed: bool) -> Bar {
        Bar {
            interval: BarInterval::M1,
            start,
            open: "100".parse().unwrap(),
            high: "101".parse().unwrap(),
            low: "99.5".parse().unwrap(),
            close: "100.25".parse().unwrap(),
            volume: "3".parse().unwrap(),
            quote_volume: "300.5".parse().unwrap(),
            buy_volume: "2".parse().unwrap(),
            trades,
            closed,
        }
    }

    #[test]
    fn a_kline_event_has_binance_s_fields_in_both_units() {
        let sym: Arc<str> = "BTCUSDT".into();
        let mut store = KlineStore::new(3);
        store.on_trade(&sym, &trade(7, T0 + S, "100", "1", Side::Buy));
        store.on_trade(&sym, &trade(8, T0 + 2 * S, "101", "2", Side::Sell));
        let k = store.on_bar(&sym, &bar(T0, 2, false));
        assert_eq!(k.trade_ids, Some((7, 8)));
        let mut out = Vec::new();
        kline_event(&mut out, &k, "BTCUSDT", T0 + 3 * S, TimeUnit::Millis);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"e":"kline","E":1700000043000,"s":"BTCUSDT","k":{"t":1700000040000,"T":1700000099999,"s":"BTCUSDT","i":"1m","f":7,"L":8,"o":"100.00000000","c":"100.25000000","h":"101.00000000","l":"99.50000000","v":"3.00000000","n":2,"x":false,"q":"300.50000000","V":"2.00000000","Q":"100.00000000","B":"0"}}"#
        );
        let mut out = Vec::new();
        kline_event(&mut out, &k, "BTCUSDT", T0, TimeUnit::Micros);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (&v["E"], &v["k"]["t"], &v["k"]["T"]),
            (
                &json!(1_700_000_040_000_000u64),
                &json!(1_700_000_040_000_000u64),
                &json!(1_700_000_099_999_999u64)
            )
        );
        assert_eq!(
            kline_row(&k, TimeUnit::Millis),
            json!([
                1_700_000_040_000u64,
                "100.00000000",
                "101.00000000",
                "99.50000000",
                "100.25000000",
                "3.00000000",
                1_700_000_099_999u64,
                "300.50000000",
                2,
                "2.00000000",
                "100.00000000",
                "0"
            ])
        );
    }

    #[test]
    fn a_bar_with_unseen_trades_has_no_trade_ids_and_the_store_is_bounded() {
        let sym: Arc<str> = "BTCUSDT".into();
        let mut store = KlineStore::new(3);
        // Two trades in the bar, one seen.
        store.on_trade(&sym, &trade(9, T0 + S, "100", "1", Side::Buy));
        let k = store.on_bar(&sym, &bar(T0, 2, false));
        assert_eq!(k.trade_ids, None);
        let mut out = Vec::new();
        kline_event(&mut out, &k, "BTCUSDT", T0, TimeUnit::Millis);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(r#""f":-1,"L":-1,"#)
        );
        for i in 0..5 {
            store.on_bar(&sym, &bar(T0 + i * 60 * S, 0, true));
        }
        store.on_bar(&sym, &bar(T0 + 5 * 60 * S, 0, false));
        let starts = |v: Vec<&Kline>| {
            v.iter()
                .map(|k| (k.bar.start - T0) / (60 * S))
                .collect::<Vec<_>>()
        };
        let m1 = BarInterval::M1;
        assert_eq!(
            starts(store.select("BTCUSDT", m1, None, None, 10)),
            [2, 3, 4, 5]
        );
        assert_eq!(starts(store.select("BTCUSDT", m1, None, None, 2)), [4, 5]);
        let from = Some(T0 + 3 * 60 * S);
        assert_eq!(starts(store.select("BTCUSDT", m1, from, None, 1)), [3]);
        assert_eq!(
            starts(store.select("BTCUSDT", m1, None, Some(T0 + 3 * 60 * S), 10)),
            [2, 3]
        );
        assert!(store.select("ETHUSDT", m1, None, None, 10).is_empty());
    }
}
