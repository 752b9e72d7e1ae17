//! Binance stream names (`btcusdt@trade`, `btcusdt@depth5@100ms`, …) and the
//! mapping between tickwire symbols and Binance's lowercase stream symbols.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::bar::BarInterval;

/// What one stream of a symbol carries; its index selects the subscriber
/// list and the cached encodings of a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `@trade`: every trade.
    Trade,
    /// `@aggTrade`: every trade as its own aggregate (tickwire has no
    /// order ids to aggregate by).
    AggTrade,
    /// `@bookTicker`: every top-of-book change (tickwire's quotes).
    BookTicker,
    /// `@depth` / `@depth@100ms`: book diffs with `U`/`u`.
    Depth { fast: bool },
    /// `@depth5/10/20` (`@100ms`): the top `levels` per side.
    Partial { levels: u8, fast: bool },
    /// `@kline_1s/1m/1h/1d`: the symbol's bars of that interval (the
    /// intervals tickwire builds; Binance's others are not served).
    Kline(BarInterval),
}

/// Number of stream kinds (the length of per-symbol arrays).
pub const KINDS: usize = 15;

impl StreamKind {
    /// Dense index in `0..KINDS`.
    pub fn index(self) -> usize {
        match self {
            StreamKind::Trade => 0,
            StreamKind::AggTrade => 1,
            StreamKind::BookTicker => 2,
            StreamKind::Depth { fast } => 3 + usize::from(fast),
            StreamKind::Partial { levels, fast } => {
                let l = match levels {
                    5 => 0,
                    10 => 1,
                    _ => 2,
                };
                5 + l * 2 + usize::from(fast)
            }
            StreamKind::Kline(iv) => 11 + iv as usize,
        }
    }

    /// The stream name's suffix after the symbol, as Binance spells it.
    pub fn suffix(self) -> String {
        match self {
            StreamKind::Trade => "@trade".into(),
            StreamKind::AggTrade => "@aggTrade".into(),
            StreamKind::BookTicker => "@bookTicker".into(),
            StreamKind::Depth { fast: false } => "@depth".into(),
            StreamKind::Depth { fast: true } => "@depth@100ms".into(),
            StreamKind::Partial { levels, fast } => {
                format!("@depth{levels}{}", if fast { "@100ms" } else { "" })
            }
            StreamKind::Kline(iv) => format!("@kline_{}", iv.as_str()),
        }
    }
}

/// A parsed stream name: a lowercase Binance symbol and a kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamName {
    /// Lowercase Binance symbol (`btcusdt`).
    pub symbol: Arc<str>,
    /// What the stream carries.
    pub kind: StreamKind,
}

impl StreamName {
    /// Parses `<symbol>@<kind>`; `None` for anything Binance's spot market
    /// streams do not name or this endpoint cannot serve.
    pub fn parse(s: &str) -> Option<StreamName> {
        let (symbol, rest) = s.split_once('@')?;
        if symbol.is_empty()
            || symbol.len() > 32
            || !symbol
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return None;
        }
        let kind = match rest {
            "trade" => StreamKind::Trade,
            "aggTrade" => StreamKind::AggTrade,
            "bookTicker" => StreamKind::BookTicker,
            "depth" | "depth@1000ms" => StreamKind::Depth { fast: false },
            "depth@100ms" => StreamKind::Depth { fast: true },
            _ if rest.starts_with("kline_") => {
                StreamKind::Kline(BarInterval::parse(&rest["kline_".len()..])?)
            }
            _ => {
                let (n, fast) = match rest.strip_suffix("@100ms") {
                    Some(n) => (n, true),
                    None => (rest.strip_suffix("@1000ms").unwrap_or(rest), false),
                };
                let levels = match n {
                    "depth5" => 5,
                    "depth10" => 10,
                    "depth20" => 20,
                    _ => return None,
                };
                StreamKind::Partial { levels, fast }
            }
        };
        Some(StreamName {
            symbol: symbol.into(),
            kind,
        })
    }

    /// The canonical name (as LIST_SUBSCRIPTIONS and the combined wrapper
    /// show it).
    pub fn to_name(&self) -> String {
        format!("{}{}", self.symbol, self.kind.suffix())
    }
}

/// tickwire symbol ↔ Binance symbol. By default a tickwire symbol's
/// Binance name is its letters and digits (`BTC/USDT` and `BTCUSDT` both
/// become `BTCUSDT`, stream symbol `btcusdt`); `--binance-symbol
/// BINANCE=TICKWIRE` pairs override that, and name the base and quote
/// assets `exchangeInfo` shows.
#[derive(Clone, Debug, Default)]
pub struct SymbolMap {
    /// Explicit pairs: uppercase Binance symbol → tickwire symbol.
    explicit: HashMap<String, String>,
    /// The same pairs the other way.
    reverse: HashMap<String, String>,
}

/// Quote assets recognised at the end of a symbol with no `/`, longest
/// first, to split `BTCUSDT` into `BTC` and `USDT` for exchangeInfo.
const QUOTES: [&str; 12] = [
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "USD", "EUR", "TRY", "JPY",
];

impl SymbolMap {
    /// From `BINANCE=TICKWIRE` pairs.
    pub fn parse(pairs: &[String]) -> Result<SymbolMap, String> {
        let mut map = SymbolMap::default();
        for p in pairs {
            let (b, t) = p.split_once('=').ok_or_else(|| {
                format!("`{p}`: expected BINANCE=TICKWIRE, e.g. BTCUSDT=BTC/USDT")
            })?;
            if b.is_empty() || !b.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!(
                    "`{p}`: a Binance symbol is letters and digits only"
                ));
            }
            crate::model::tick::validate_symbol(t).map_err(|e| format!("`{p}`: {e}"))?;
            map.explicit.insert(b.to_ascii_uppercase(), t.to_owned());
            map.reverse.insert(t.to_owned(), b.to_ascii_uppercase());
        }
        Ok(map)
    }

    /// The uppercase Binance symbol of a tickwire symbol.
    pub fn binance_of(&self, tickwire: &str) -> String {
        if let Some(b) = self.reverse.get(tickwire) {
            return b.clone();
        }
        tickwire
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect()
    }

    /// Base and quote assets of a tickwire symbol (`BTC/USDT` → `BTC`,
    /// `USDT`; `BTCUSDT` by a known quote suffix; else the whole name and
    /// `USD`).
    pub fn assets(&self, tickwire: &str) -> (String, String) {
        if let Some((b, q)) = tickwire.split_once('/') {
            let clean = |s: &str| self.binance_of(s);
            return (clean(b), clean(q));
        }
        let b = self.binance_of(tickwire);
        for q in QUOTES {
            if let Some(base) = b.strip_suffix(q).filter(|base| !base.is_empty()) {
                return (base.to_owned(), q.to_owned());
            }
        }
        (b, "USD".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for n in [
            "btcusdt@trade",
            "btcusdt@aggTrade",
            "btcusdt@bookTicker",
            "btcusdt@depth",
            "btcusdt@depth@100ms",
            "btcusdt@depth5",
            "btcusdt@depth10@100ms",
            "esm4@depth20",
            "btcusdt@kline_1s",
            "btcusdt@kline_1m",
            "btcusdt@kline_1h",
            "btcusdt@kline_1d",
        ] {
            assert_eq!(StreamName::parse(n).unwrap().to_name(), n);
        }
        for bad in [
            "BTCUSDT@trade",
            "btcusdt",
            "btcusdt@depth7",
            "btcusdt@ticker",
            "@trade",
            "btc/usdt@trade",
            "btcusdt@kline_5m",
            "btcusdt@kline_",
            "btcusdt@kline1m",
        ] {
            assert!(StreamName::parse(bad).is_none(), "{bad}");
        }
        let kinds: std::collections::HashSet<usize> = [5, 10, 20]
            .iter()
            .flat_map(|&l| {
                [true, false].map(|fast| StreamKind::Partial { levels: l, fast }.index())
            })
            .chain([0, 1, 2, 3, 4])
            .chain(BarInterval::ALL.map(|iv| StreamKind::Kline(iv).index()))
            .collect();
        assert_eq!(kinds.len(), KINDS);
    }

    #[test]
    fn symbols_map_both_ways() {
        let m = SymbolMap::parse(&["ESM4=ES.FUT".into()]).unwrap();
        assert_eq!(m.binance_of("BTC/USDT"), "BTCUSDT");
        assert_eq!(m.binance_of("ES.FUT"), "ESM4");
        assert_eq!(m.assets("BTC/USDT"), ("BTC".into(), "USDT".into()));
        assert_eq!(m.assets("ETHBTC"), ("ETH".into(), "BTC".into()));
        assert!(SymbolMap::parse(&["nope".into()]).is_err());
    }
}
