//! The REST calls Binance clients make before streaming: `/api/v3/ping`,
//! `/api/v3/time`, `/api/v3/exchangeInfo`, `/api/v3/depth` and
//! `/api/v3/klines` (`uiKlines` answers the same: tickwire's bars need no
//! presentation tweaks). Errors use
//! Binance's REST shape, `{"code":-1121,"msg":"Invalid symbol."}`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::binance::encode::{self, TimeUnit};
use crate::binance::klines::{KlineStore, kline_row};
use crate::binance::streams::SymbolMap;
use crate::model::bar::BarInterval;
use crate::model::book::Level;
use crate::model::tick::wall_clock_ns;
use crate::pipeline::ingest::Ingest;

/// An answer: HTTP status and JSON body.
pub type Answer = (u16, Vec<u8>);

fn error(status: u16, code: i32, msg: &str) -> Answer {
    (
        status,
        json!({ "code": code, "msg": msg }).to_string().into_bytes(),
    )
}

fn ok(v: Value) -> Answer {
    (200, v.to_string().into_bytes())
}

/// One query parameter's value.
fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The tickwire symbol a Binance symbol (any case) names, among those the
/// feed has seen.
pub fn tickwire_symbol(ingest: &Ingest, map: &SymbolMap, binance: &str) -> Option<Arc<str>> {
    let want = binance.to_ascii_uppercase();
    ingest
        .symbols()
        .seen()
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| map.binance_of(name) == want)
}

/// A book's state as `/api/v3/depth` serves it, by lowercase Binance
/// symbol: the hub's book as of its last 100 ms depth flush
/// ([`crate::binance::hub::Hub::depth_snapshot`]).
pub type Flushed<'a> = &'a dyn Fn(&str) -> Option<(u64, Vec<Level>)>;

/// What a REST answer may read besides the query.
pub struct RestState<'a> {
    pub ingest: &'a Ingest,
    pub map: &'a SymbolMap,
    /// The hub's klines.
    pub klines: &'a KlineStore,
    /// The hub's books as of their last depth flush.
    pub flushed: Flushed<'a>,
    /// `X-MBX-TIME-UNIT` (klines' open and close times).
    pub unit: TimeUnit,
}

/// Answers `path?query`, or `None` when it is not a REST path of ours.
pub fn answer(st: &RestState, path: &str, q: &str) -> Option<Answer> {
    let (ingest, map, flushed) = (st.ingest, st.map, st.flushed);
    Some(match path {
        "/api/v3/klines" | "/api/v3/uiKlines" => klines(st, q),
        "/api/v3/ping" => ok(json!({})),
        "/api/v3/time" => ok(json!({ "serverTime": wall_clock_ns() / 1_000_000 })),
        "/api/v3/exchangeInfo" => exchange_info(ingest, map, q),
        "/api/v3/depth" => depth(ingest, map, flushed, q),
        _ => return None,
    })
}

/// `exchangeInfo`: every symbol the feed has seen, `TRADING`, with filters
/// that accept any price and quantity tickwire can carry (8 decimals).
fn exchange_info(ingest: &Ingest, map: &SymbolMap, q: &str) -> Answer {
    let only = query(q, "symbol").map(str::to_ascii_uppercase);
    let mut names: Vec<Arc<str>> = ingest
        .symbols()
        .seen()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let symbols: Vec<Value> = names
        .iter()
        .map(|n| (map.binance_of(n), n))
        .filter(|(b, _)| only.as_ref().is_none_or(|o| o == b))
        .map(|(b, n)| {
            let (base, quote) = map.assets(n);
            json!({
                "symbol": b,
                "status": "TRADING",
                "baseAsset": base,
                "baseAssetPrecision": 8,
                "quoteAsset": quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"],
                "icebergAllowed": false,
                "ocoAllowed": false,
                "otoAllowed": false,
                "quoteOrderQtyMarketAllowed": true,
                "allowTrailingStop": false,
                "cancelReplaceAllowed": false,
                "isSpotTradingAllowed": true,
                "isMarginTradingAllowed": false,
                "filters": [
                    { "filterType": "PRICE_FILTER", "minPrice": "0.00000001", "maxPrice": "92233720368.00000000", "tickSize": "0.00000001" },
                    { "filterType": "LOT_SIZE", "minQty": "0.00000001", "maxQty": "92233720368.00000000", "stepSize": "0.00000001" },
                ],
                "permissions": [],
                "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "NONE",
                "allowedSelfTradePreventionModes": ["NONE"],
            })
        })
        .collect();
    if only.is_some() && symbols.is_empty() {
        return error(400, -1121, "Invalid symbol.");
    }
    ok(json!({
        "timezone": "UTC",
        "serverTime": wall_clock_ns() / 1_000_000,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": symbols,
    }))
}

/// `depth?symbol=&limit=`: the book's top `limit` (default 100, at most
/// 5000) per side as of the last 100 ms depth flush, `lastUpdateId` = the
/// `u` of that flush (see [`crate::binance::depth`]); when the hub has not
/// seen the book from its first update, the live book and its `seq`, which
/// the next depth event's `U`..`u` then spans.
fn depth(ingest: &Ingest, map: &SymbolMap, flushed: Flushed, q: &str) -> Answer {
    let Some(sym) = query(q, "symbol") else {
        return error(
            400,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    let limit = match query(q, "limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=5000).contains(&n) => n,
        Some(_) => {
            return error(
                400,
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '1..5000'.",
            );
        }
    };
    let Some(name) = tickwire_symbol(ingest, map, sym) else {
        return error(400, -1121, "Invalid symbol.");
    };
    let lower = map.binance_of(&name).to_ascii_lowercase();
    let Some((seq, levels)) = flushed(&lower).or_else(|| ingest.book_state(&name)) else {
        return error(400, -1121, "Invalid symbol.");
    };
    let mut per_side = [0usize; 2];
    let top: Vec<_> = levels
        .into_iter()
        .filter(|l| {
            let n = &mut per_side[l.side as usize];
            *n += 1;
            *n <= limit
        })
        .collect();
    let mut out = Vec::new();
    encode::partial_depth(&mut out, seq, &top);
    (200, out)
}

fn mandatory(name: &str) -> Answer {
    error(
        400,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

/// A `startTime`/`endTime` in the request's unit, as ns.
fn time_param(q: &str, name: &str, unit: TimeUnit) -> Result<Option<u64>, Answer> {
    let Some(v) = query(q, name) else {
        return Ok(None);
    };
    let per = match unit {
        TimeUnit::Millis => 1_000_000,
        TimeUnit::Micros => 1_000,
    };
    v.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .map(Some)
        .ok_or_else(|| {
            error(
                400,
                -1100,
                &format!(
                    "Illegal characters found in parameter '{name}'; legal range is '0..{}'.",
                    u64::MAX / per
                ),
            )
        })
}

/// `klines?symbol=&interval=&startTime=&endTime=&limit=`: the symbol's
/// kept klines of that interval (docs/BINANCE.md "Klines").
fn klines(st: &RestState, q: &str) -> Answer {
    let Some(sym) = query(q, "symbol").filter(|s| !s.is_empty()) else {
        return mandatory("symbol");
    };
    let Some(interval) = query(q, "interval").filter(|s| !s.is_empty()) else {
        return mandatory("interval");
    };
    let Some(interval) = BarInterval::parse(interval) else {
        return error(400, -1120, "Invalid interval.");
    };
    let limit = match query(q, "limit").map(str::parse::<usize>) {
        None => 500,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return error(
                400,
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '1..1000'.",
            );
        }
    };
    let (from, to) = match (
        time_param(q, "startTime", st.unit),
        time_param(q, "endTime", st.unit),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return error(400, -1023, "Start time is greater than end time.");
    }
    let upper = sym.to_ascii_uppercase();
    if !st.klines.knows(&upper) && tickwire_symbol(st.ingest, st.map, sym).is_none() {
        return error(400, -1121, "Invalid symbol.");
    }
    let rows: Vec<Value> = st
        .klines
        .select(&upper, interval, from, to, limit)
        .into_iter()
        .map(|k| kline_row(k, st.unit))
        .collect();
    ok(Value::Array(rows))
}
