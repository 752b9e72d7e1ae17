//! OHLCV bars: the intervals clients subscribe to, one bar's values, and the
//! builder that folds a symbol's trades into bars (docs/PROTOCOL.md "Bars").
//!
//! The builder is pure: it is told each trade and the feed's time, and says
//! which bar states to publish. When to publish (at most once a second for
//! an open bar, always for a close) is decided here too, against a wall
//! clock it is given, so it can be tested without waiting.

use crate::model::decimal::{Fixed, SCALE};
use crate::model::tick::{Channel, Side};

/// A bar interval, one channel each (`bar_1s` … `bar_1d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BarInterval {
    S1 = 0,
    M1 = 1,
    H1 = 2,
    D1 = 3,
}

/// Nanoseconds in a second.
const SECOND_NS: u64 = 1_000_000_000;

impl BarInterval {
    /// Every interval, shortest first (the order of their channels).
    pub const ALL: [BarInterval; 4] = [
        BarInterval::S1,
        BarInterval::M1,
        BarInterval::H1,
        BarInterval::D1,
    ];

    /// Length in nanoseconds.
    pub fn nanos(self) -> u64 {
        SECOND_NS
            * match self {
                BarInterval::S1 => 1,
                BarInterval::M1 => 60,
                BarInterval::H1 => 3600,
                BarInterval::D1 => 86_400,
            }
    }

    /// The interval as written in channel names and Binance's klines: `1s`.
    pub fn as_str(self) -> &'static str {
        match self {
            BarInterval::S1 => "1s",
            BarInterval::M1 => "1m",
            BarInterval::H1 => "1h",
            BarInterval::D1 => "1d",
        }
    }

    /// From `1s`, `1m`, `1h` or `1d`.
    pub fn parse(s: &str) -> Option<BarInterval> {
        BarInterval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// The channel carrying this interval's bars.
    pub fn channel(self) -> Channel {
        match self {
            BarInterval::S1 => Channel::Bar1s,
            BarInterval::M1 => Channel::Bar1m,
            BarInterval::H1 => Channel::Bar1h,
            BarInterval::D1 => Channel::Bar1d,
        }
    }

    /// The code binary records and recordings carry (1 = 1s … 4 = 1d).
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    /// From [`BarInterval::code`].
    pub fn from_code(c: u8) -> Option<BarInterval> {
        BarInterval::ALL
            .get(usize::from(c).checked_sub(1)?)
            .copied()
    }

    /// Start of the interval holding `ts` (intervals are aligned to the
    /// Unix epoch, so days start at 00:00 UTC).
    pub fn start_of(self, ts: u64) -> u64 {
        ts - ts % self.nanos()
    }
}

/// One bar: the trades of one symbol in one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Which interval (and so which channel) the bar belongs to.
    pub interval: BarInterval,
    /// Start of the interval, ns since the epoch (feed time).
    pub start: u64,
    /// Price of the interval's first trade.
    pub open: Fixed,
    /// Highest trade price.
    pub high: Fixed,
    /// Lowest trade price.
    pub low: Fixed,
    /// Price of the latest trade so far (the last one once closed).
    pub close: Fixed,
    /// Sum of trade quantities (saturating at the fixed-point maximum).
    pub volume: Fixed,
    /// Sum of price × quantity (Binance's "quote asset volume"; saturating).
    pub quote_volume: Fixed,
    /// Quantity of trades whose aggressor bought (Binance's "taker buy base
    /// asset volume").
    pub buy_volume: Fixed,
    /// Number of trades folded in (0 for a bar imported from a vendor's
    /// OHLCV file, which does not say).
    pub trades: u64,
    /// The interval has ended: the bar will not change again.
    pub closed: bool,
}

impl Bar {
    /// End of the interval (exclusive).
    pub fn end(&self) -> u64 {
        self.start + self.interval.nanos()
    }

    /// A bar opened by one trade.
    fn open_with(interval: BarInterval, ts: u64, px: Fixed, qty: Fixed, side: Side) -> Bar {
        let mut b = Bar {
            interval,
            start: interval.start_of(ts),
            open: px,
            high: px,
            low: px,
            close: px,
            volume: Fixed::ZERO,
            quote_volume: Fixed::ZERO,
            buy_volume: Fixed::ZERO,
            trades: 0,
            closed: false,
        };
        b.add(px, qty, side);
        b
    }

    /// Folds one more trade of the same interval in.
    fn add(&mut self, px: Fixed, qty: Fixed, side: Side) {
        self.high = self.high.max(px);
        self.low = self.low.min(px);
        self.close = px;
        self.volume = Fixed(self.volume.0.saturating_add(qty.0));
        self.quote_volume = Fixed(self.quote_volume.0.saturating_add(notional(px, qty)));
        if side == Side::Buy {
            self.buy_volume = Fixed(self.buy_volume.0.saturating_add(qty.0));
        }
        self.trades += 1;
    }
}

/// `px × qty` in 1e-9 units, truncated toward zero, saturating.
pub fn notional(px: Fixed, qty: Fixed) -> i64 {
    let n = i128::from(px.0) * i128::from(qty.0) / i128::from(SCALE);
    n.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Least time between two publications of one open bar.
pub const OPEN_BAR_EVERY_NS: u64 = SECOND_NS;

/// One symbol's bars of one interval: the current bar and when it was last
/// published.
#[derive(Clone, Debug, Default)]
pub struct BarSeries {
    /// The current bar: open, or the last one closed (`None` before the
    /// first trade).
    current: Option<Bar>,
    /// Trades changed the open bar since it was last published.
    dirty: bool,
    /// Wall clock (ns) of the last publication of an open bar, for the
    /// once-a-second limit.
    last_open_publish: u64,
    /// Event time of the newest trade folded in: the `ts` of the bar's
    /// messages.
    last_ts: u64,
}

/// A bar state to publish, with the event time it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarUpdate {
    /// The bar after the change.
    pub bar: Bar,
    /// Event time: the newest trade in the bar, or the interval's end for a
    /// bar closed by the clock.
    pub ts: u64,
}

impl BarSeries {
    /// The current bar (open or last closed).
    pub fn current(&self) -> Option<&Bar> {
        self.current.as_ref()
    }

    /// Folds a trade at feed time `ts` in, at wall clock `wall`; pushes the
    /// bar states to publish onto `out` (a close, then the new bar, when
    /// the trade starts another interval).
    ///
    /// A trade of another interval than the current bar's closes it and
    /// opens a new bar, also when it is earlier (a replay that loops, a
    /// feed that restarted): bars follow the trades in arrival order. A
    /// trade of an interval whose bar is already closed (it came late, after
    /// the clock closed its bar) changes no bar; it returns `false`.
    pub fn on_trade(
        &mut self,
        interval: BarInterval,
        ts: u64,
        trade: (Fixed, Fixed, Side),
        wall: u64,
        out: &mut Vec<BarUpdate>,
    ) -> bool {
        let (px, qty, side) = trade;
        let start = interval.start_of(ts);
        match &mut self.current {
            Some(b) if b.start == start && b.closed => return false,
            Some(b) if b.start == start => {
                b.add(px, qty, side);
                self.last_ts = self.last_ts.max(ts);
                self.dirty = true;
            }
            current => {
                if let Some(b) = current.as_mut().filter(|b| !b.closed) {
                    b.closed = true;
                    out.push(BarUpdate {
                        bar: b.clone(),
                        ts: self.last_ts,
                    });
                }
                *current = Some(Bar::open_with(interval, ts, px, qty, side));
                self.last_ts = ts;
                self.dirty = true;
            }
        }
        self.flush(wall, out);
        true
    }

    /// Restores the series from a journal: `bar` is the newest state of
    /// it that was published (at event time `ts`); nothing is pending.
    pub fn restore_bar(&mut self, bar: &Bar, ts: u64) {
        self.current = Some(bar.clone());
        self.last_ts = ts;
        self.dirty = false;
    }

    /// Restores the series from a journal: folds in a trade that came after
    /// the last bar record restored, publishing nothing. A bar it opens or
    /// changes is pending (the clock publishes it) unless a later bar
    /// record says it was published.
    pub fn restore_trade(&mut self, interval: BarInterval, ts: u64, trade: (Fixed, Fixed, Side)) {
        let (px, qty, side) = trade;
        let start = interval.start_of(ts);
        match &mut self.current {
            Some(b) if b.start == start && b.closed => return,
            Some(b) if b.start == start => {
                b.add(px, qty, side);
                self.last_ts = self.last_ts.max(ts);
            }
            current => {
                *current = Some(Bar::open_with(interval, ts, px, qty, side));
                self.last_ts = ts;
            }
        }
        self.dirty = true;
    }

    /// How many bar states [`BarSeries::on_trade`] would push for a trade
    /// at `ts` and wall clock `wall` (ingest reserves ring slots first).
    pub fn outputs_for(&self, interval: BarInterval, ts: u64, wall: u64) -> usize {
        let due = usize::from(self.due(wall));
        match &self.current {
            Some(b) if b.start == interval.start_of(ts) && b.closed => 0,
            Some(b) if b.start == interval.start_of(ts) => due,
            Some(b) => usize::from(!b.closed) + due,
            None => due,
        }
    }

    /// An open bar may be published at `wall`.
    fn due(&self, wall: u64) -> bool {
        self.last_open_publish == 0
            || wall.saturating_sub(self.last_open_publish) >= OPEN_BAR_EVERY_NS
    }

    /// Publishes the open bar if trades changed it and a second has passed
    /// since it was last published.
    pub fn flush(&mut self, wall: u64, out: &mut Vec<BarUpdate>) {
        if let Some(b) = &self.current
            && self.dirty
            && self.due(wall)
        {
            out.push(BarUpdate {
                bar: b.clone(),
                ts: self.last_ts,
            });
            self.dirty = false;
            self.last_open_publish = wall;
        }
    }

    /// The feed's time is `feed_now`: closes the open bar if its interval
    /// has ended (pushing it, closed, onto `out`), else publishes it if it
    /// is due.
    pub fn on_clock(&mut self, feed_now: u64, wall: u64, out: &mut Vec<BarUpdate>) {
        match &mut self.current {
            Some(b) if !b.closed && feed_now >= b.end() => {
                b.closed = true;
                self.dirty = false;
                out.push(BarUpdate {
                    bar: b.clone(),
                    ts: self.last_ts,
                });
            }
            _ => self.flush(wall, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND_NS;
    const T0: u64 = 1_700_000_000 * S;

    fn px(n: i64) -> Fixed {
        Fixed(n * SCALE)
    }

    fn trade(
        s: &mut BarSeries,
        iv: BarInterval,
        ts: u64,
        p: i64,
        q: i64,
        wall: u64,
    ) -> Vec<BarUpdate> {
        let mut out = Vec::new();
        s.on_trade(iv, ts, (px(p), px(q), Side::Buy), wall, &mut out);
        out
    }

    #[test]
    fn intervals_parse_and_align() {
        for i in BarInterval::ALL {
            assert_eq!(BarInterval::parse(i.as_str()), Some(i));
            assert_eq!(BarInterval::from_code(i.code()), Some(i));
            assert_eq!(Channel::parse(i.channel().as_str()), Some(i.channel()));
        }
        assert_eq!(BarInterval::parse("5m"), None);
        assert_eq!(BarInterval::from_code(0), None);
        assert_eq!(BarInterval::from_code(5), None);
        assert_eq!(BarInterval::M1.start_of(T0 + 61 * S + 5), T0 + 40 * S);
        assert_eq!(BarInterval::D1.start_of(T0), 1_699_920_000 * S);
    }

    #[test]
    fn trades_fold_into_ohlcv() {
        let mut s = BarSeries::default();
        let iv = BarInterval::M1;
        let first = trade(&mut s, iv, T0 + 41 * S, 10, 2, 1);
        assert_eq!(first.len(), 1, "a new bar is published at once");
        assert_eq!(trade(&mut s, iv, T0 + 42 * S, 12, 1, 2), []);
        let mut out = Vec::new();
        s.on_trade(iv, T0 + 43 * S, (px(9), px(3), Side::Sell), 3, &mut out);
        assert!(out.is_empty(), "at most once a second");
        let b = s.current().unwrap();
        assert_eq!(
            (b.start, b.open, b.high, b.low, b.close),
            (T0 + 40 * S, px(10), px(12), px(9), px(9))
        );
        assert_eq!((b.volume, b.buy_volume, b.trades), (px(6), px(3), 3));
        assert_eq!(b.quote_volume, px(10 * 2 + 12 + 9 * 3));
        assert!(!b.closed);
        // A second of wall time later, the clock publishes the dirty bar.
        s.on_clock(T0 + 44 * S, S + 1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts, T0 + 43 * S);
        assert_eq!(out[0].bar.trades, 3);
        // Nothing changed since: nothing more.
        out.clear();
        s.on_clock(T0 + 45 * S, 3 * S, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_later_trade_closes_the_bar_and_opens_the_next() {
        let mut s = BarSeries::default();
        let iv = BarInterval::S1;
        trade(&mut s, iv, T0 + 100, 10, 1, 1);
        trade(&mut s, iv, T0 + 200, 11, 1, 2);
        // An empty second in between: no bar for it.
        let out = trade(&mut s, iv, T0 + 2 * S + 7, 12, 1, 3);
        assert_eq!(
            out.len(),
            1,
            "the close is sent, the new bar waits a second"
        );
        assert!(out[0].bar.closed);
        assert_eq!((out[0].bar.start, out[0].bar.close), (T0, px(11)));
        assert_eq!(out[0].ts, T0 + 200);
        let cur = s.current().unwrap();
        assert_eq!(
            (cur.start, cur.open, cur.closed),
            (T0 + 2 * S, px(12), false)
        );
    }

    #[test]
    fn the_clock_closes_a_quiet_bar_once_and_late_trades_change_nothing() {
        let mut s = BarSeries::default();
        let iv = BarInterval::S1;
        trade(&mut s, iv, T0 + 5, 10, 1, 1);
        let mut out = Vec::new();
        s.on_clock(T0 + S - 1, 2, &mut out);
        assert!(out.is_empty(), "not ended yet");
        s.on_clock(T0 + S, 3, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].bar.closed);
        out.clear();
        s.on_clock(T0 + 5 * S, 4 * S, &mut out);
        assert!(out.is_empty(), "closed once");
        assert!(!s.on_trade(iv, T0 + 9, (px(1), px(1), Side::Sell), 5 * S, &mut out));
        assert!(out.is_empty());
        assert_eq!(s.current().unwrap().low, px(10));
    }

    #[test]
    fn an_earlier_trade_starts_a_new_bar() {
        let mut s = BarSeries::default();
        let iv = BarInterval::S1;
        trade(&mut s, iv, T0 + 10 * S, 10, 1, 1);
        let out = trade(&mut s, iv, T0, 20, 1, 2 * S);
        assert_eq!(out.len(), 2);
        assert!(out[0].bar.closed && out[0].bar.start == T0 + 10 * S);
        assert_eq!((out[1].bar.start, out[1].bar.open), (T0, px(20)));
    }

    #[test]
    fn volumes_saturate_instead_of_wrapping() {
        let mut s = BarSeries::default();
        let iv = BarInterval::D1;
        let mut out = Vec::new();
        for _ in 0..3 {
            s.on_trade(
                iv,
                T0,
                (Fixed(i64::MAX), Fixed(i64::MAX / 2), Side::Buy),
                1,
                &mut out,
            );
        }
        let b = s.current().unwrap();
        assert_eq!(
            (b.volume, b.quote_volume),
            (Fixed(i64::MAX), Fixed(i64::MAX))
        );
    }
}
