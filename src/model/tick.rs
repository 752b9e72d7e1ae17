//! The market-data model: symbols, channels, keys and ticks.
//!
//! A [`NewTick`] is what a source hands to ingest (no `seq`, no `rx`); a
//! [`Tick`] is the same event once ingest has sequenced and stamped it.

use std::sync::Arc;

use crate::model::decimal::Fixed;

/// Longest symbol the protocol allows.
pub(crate) const MAX_SYMBOL_LEN: usize = 32;

/// `trade`, `quote`, `book` or one of the bar channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Trade = 0,
    Quote = 1,
    /// Order book snapshots and level diffs (docs/PROTOCOL.md "Order books").
    Book = 2,
    /// One-second OHLCV bars built from the symbol's trades
    /// (docs/PROTOCOL.md "Bars").
    Bar1s = 3,
    /// One-minute bars.
    Bar1m = 4,
    /// One-hour bars.
    Bar1h = 5,
    /// One-day bars (UTC days).
    Bar1d = 6,
}

/// Channels per symbol in a [`KeyId`]'s packing (a power of two).
const CHANNEL_SLOTS: u32 = 8;

impl Channel {
    /// The tick channels: what `*` and the bus carry. Books are per named
    /// symbol and stay on the node they are published to.
    pub const ALL: [Channel; 6] = [
        Channel::Trade,
        Channel::Quote,
        Channel::Bar1s,
        Channel::Bar1m,
        Channel::Bar1h,
        Channel::Bar1d,
    ];
    /// Every channel, in `as u8` order.
    pub const EVERY: [Channel; 7] = [
        Channel::Trade,
        Channel::Quote,
        Channel::Book,
        Channel::Bar1s,
        Channel::Bar1m,
        Channel::Bar1h,
        Channel::Bar1d,
    ];
    /// The channel names, for error messages.
    pub const NAMES: &str = "trade, quote, book, bar_1s, bar_1m, bar_1h and bar_1d";

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Trade => "trade",
            Channel::Quote => "quote",
            Channel::Book => "book",
            Channel::Bar1s => "bar_1s",
            Channel::Bar1m => "bar_1m",
            Channel::Bar1h => "bar_1h",
            Channel::Bar1d => "bar_1d",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::EVERY.into_iter().find(|c| c.as_str() == s)
    }

    /// The bar interval of a bar channel.
    pub fn bar_interval(self) -> Option<crate::model::bar::BarInterval> {
        use crate::model::bar::BarInterval;
        match self {
            Channel::Bar1s => Some(BarInterval::S1),
            Channel::Bar1m => Some(BarInterval::M1),
            Channel::Bar1h => Some(BarInterval::H1),
            Channel::Bar1d => Some(BarInterval::D1),
            _ => None,
        }
    }

    fn from_index(i: u32) -> Option<Channel> {
        Channel::EVERY.get(i as usize).copied()
    }

    /// Bit for this channel in a [`ChannelSet`].
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of channels, as a bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChannelSet(pub u8);

impl ChannelSet {
    pub const BOTH: ChannelSet = ChannelSet(0b11);

    pub fn contains(self, c: Channel) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn insert(&mut self, c: Channel) {
        self.0 |= c.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::EVERY
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

/// Aggressor side of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
    Unknown,
}

impl Side {
    pub fn as_byte(self) -> u8 {
        match self {
            Side::Buy => b'B',
            Side::Sell => b'S',
            Side::Unknown => b'N',
        }
    }
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "B" => Some(Side::Buy),
            "S" => Some(Side::Sell),
            "N" => Some(Side::Unknown),
            _ => None,
        }
    }
}

/// What happened: a trade print, a top-of-book quote, a book update or a
/// bar. Not `Copy`: a bar is boxed, so every tick stays small in the ring
/// and the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Trade {
        px: Fixed,
        qty: Fixed,
        side: Side,
    },
    Quote {
        bid: Fixed,
        bsz: Fixed,
        ask: Fixed,
        asz: Fixed,
    },
    /// An order-book update (its levels travel beside the tick, in
    /// [`crate::wire::encode::EncodedTick::book`]); the top of book after it.
    Book(crate::model::book::TopOfBook),
    /// An OHLCV bar's state (docs/PROTOCOL.md "Bars").
    Bar(Box<crate::model::bar::Bar>),
}

impl Event {
    pub fn channel(&self) -> Channel {
        match self {
            Event::Trade { .. } => Channel::Trade,
            Event::Quote { .. } => Channel::Quote,
            Event::Book(_) => Channel::Book,
            Event::Bar(b) => b.interval.channel(),
        }
    }
}

/// Checks a symbol against docs/PROTOCOL.md: 1–32 of `A-Z a-z 0-9 . - _ / :`.
pub fn validate_symbol(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("symbol is empty".into());
    }
    if s.len() > MAX_SYMBOL_LEN {
        return Err(format!(
            "symbol `{}…` is {} characters long; at most {MAX_SYMBOL_LEN} are allowed",
            s.chars().take(16).collect::<String>(),
            s.chars().count()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':')))
    {
        return Err(format!(
            "symbol `{s}` contains {c:?}; allowed are A-Z a-z 0-9 . - _ / :"
        ));
    }
    Ok(())
}

/// Dense id of a symbol, as given to clients in `subscribed.ids`.
pub(crate) type SymbolId = u32;

/// A (symbol, channel) pair, packed: `symbol_id * 8 + channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

/// A map keyed by [`KeyId`] on the per-delivery path (a client's key slots,
/// a worker's subscription index). foldhash instead of std's SipHash: the
/// keys are ids the server assigns, so hash flooding is not a concern, and
/// SipHash was most of `Client::offer`'s cost.
pub type KeyMap<V> = std::collections::HashMap<KeyId, V, foldhash::fast::RandomState>;

impl KeyId {
    pub fn new(symbol: SymbolId, channel: Channel) -> KeyId {
        KeyId(symbol * CHANNEL_SLOTS + channel as u32)
    }
    pub fn symbol(self) -> SymbolId {
        self.0 / CHANNEL_SLOTS
    }
    pub fn channel(self) -> Channel {
        // Slot 7 is never packed; read it as the last bar channel.
        Channel::from_index(self.0 % CHANNEL_SLOTS).unwrap_or(Channel::Bar1d)
    }
}

/// A tick as a source produces it, before sequencing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTick {
    pub sym: Arc<str>,
    /// Event time from the source, ns since the Unix epoch.
    pub ts: u64,
    pub event: Event,
    /// An order-book change (`event` is then [`Event::Book`]): replayed and
    /// imported books travel as ticks so they keep their place in time
    /// order. `None` for trades and quotes.
    pub book: Option<Arc<crate::model::book::BookChange>>,
}

/// A sequenced tick: what every subscriber of its key receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tick {
    pub key: KeyId,
    pub sym: Arc<str>,
    /// Per-key sequence, from 1, +1 per tick of the key.
    pub seq: u64,
    pub ts: u64,
    /// Server wall clock (ns since the epoch) when the tick entered the ring.
    pub rx: u64,
    pub event: Event,
}

/// Wall clock in ns since the Unix epoch (CLOCK_REALTIME).
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_follow_the_protocol() {
        for ok in [
            "AAPL",
            "BRK.B",
            "ES-U4",
            "BTC/USDT",
            "a_b:c",
            &"X".repeat(32),
        ] {
            assert!(validate_symbol(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A B", "ÄPL", "A*", &"X".repeat(33), "A\"B"] {
            assert!(validate_symbol(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_pack_symbol_and_channel() {
        let k = KeyId::new(7, Channel::Quote);
        assert_eq!((k.symbol(), k.channel()), (7, Channel::Quote));
        let k = KeyId::new(7, Channel::Trade);
        assert_eq!((k.symbol(), k.channel()), (7, Channel::Trade));
        for c in Channel::EVERY {
            let k = KeyId::new(7, c);
            assert_eq!((k.symbol(), k.channel()), (7, c));
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("bar_5m"), None);
    }
}
