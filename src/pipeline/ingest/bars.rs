//! Bars at ingest: each symbol's bars, built from its trades under the
//! sequencer lock (so a bar's `seq` and offset follow the trade that
//! changed it), and the clock that publishes throttled open bars and
//! closes the bars of quiet symbols.
//!
//! **When a bar closes** (docs/PROTOCOL.md "Bars"): a trade of the same
//! symbol in a later interval closes it at once. Otherwise the bar clock
//! ([`Ingest::run_bar_clock`], every [`BAR_CLOCK_EVERY`]) closes it once
//! the time of the symbol's source has passed its end: each source (a
//! publisher connection, the recording `serve` plays) has its own
//! [`FeedClock`], and a symbol's bars follow the clock of the source of
//! its latest trade (why, and how a silent source's time moves: the
//! [`super::clock`] module). So recordings of different dates replayed
//! together each close their bars by their own time, at any speed.

use std::sync::Arc;
use std::time::Duration;

use super::clock::FeedClock;
use super::{Admitted, Ingest, RingItem, Sequencer};
use crate::model::bar::{BarInterval, BarSeries, BarUpdate};
use crate::model::epoch::Epoch;
use crate::model::tick::{Event, KeyId, Tick, wall_clock_ns};
use crate::shutdown::Shutdown;

/// How often the bar clock runs.
pub const BAR_CLOCK_EVERY: Duration = Duration::from_millis(250);

/// Most ring slots one trade can take: itself, and a close and an open per
/// interval (a trade that starts a new day crosses every boundary). A ring
/// with bars must hold at least this many, or such a trade never fits.
pub const MOST_SLOTS_PER_TRADE: usize = 1 + 2 * BarInterval::ALL.len();

/// One symbol's bar state.
pub(super) struct SymbolBars {
    /// Per interval (in [`BarInterval::ALL`] order): the builder.
    series: [BarSeries; 4],
    /// Per interval: bars of this key come from a source (a replayed or
    /// imported recording), so none are built for it: two streams on one
    /// key would interleave.
    external: [bool; 4],
    /// The symbol, for the bar ticks.
    sym: Arc<str>,
    /// The clock of the source of the symbol's latest trade: its bars
    /// close by that source's time.
    clock: FeedClock,
}

/// Every symbol's bars, beside the sequencer's keys.
#[derive(Default)]
pub(super) struct BarState {
    /// Build bars at all (`--no-bars` turns them off).
    pub(super) enabled: bool,
    /// Indexed by symbol id.
    symbols: Vec<Option<Box<SymbolBars>>>,
}

impl BarState {
    /// Symbol `id`'s bars, created following `clock` if new.
    fn symbol(&mut self, id: u32, sym: &Arc<str>, clock: &FeedClock) -> &mut SymbolBars {
        let i = id as usize;
        if self.symbols.len() <= i {
            self.symbols.resize_with(i + 1, || None);
        }
        self.symbols[i].get_or_insert_with(|| {
            Box::new(SymbolBars {
                series: Default::default(),
                external: [false; 4],
                sym: sym.clone(),
                clock: clock.clone(),
            })
        })
    }
}

impl Sequencer {
    /// Publishes bar updates of symbol `id` as ticks (each its key's next
    /// `seq`). The caller has checked the ring has room.
    fn publish_bars(
        &mut self,
        ingest: &Ingest,
        id: u32,
        sym: &Arc<str>,
        updates: &mut Vec<BarUpdate>,
        epoch: Epoch,
        rx: u64,
    ) {
        for u in updates.drain(..) {
            let key = KeyId::new(id, u.bar.interval.channel());
            let ks = self.key(key);
            ks.seq += 1;
            let tick = Tick {
                key,
                sym: sym.clone(),
                seq: ks.seq,
                ts: u.ts,
                rx,
                event: Event::Bar(Box::new(u.bar)),
            };
            let item: RingItem = self.place(tick, epoch);
            self.key(key).last = Some(item.clone());
            ingest.history.append(&item);
            if self.writer.stage(item).is_err() {
                unreachable!("the ring's room for bars was checked under the sequencer lock");
            }
        }
    }

    /// Restores bar state from a journaled tick (`serve --journal`): a bar
    /// record becomes its series' current bar, a trade after it is folded
    /// in silently. So the open bars continue where they were, with every
    /// trade the journal holds, and nothing is published twice.
    /// The restored symbols follow `clock` (the ingest's default) until
    /// a source trades them again.
    pub(super) fn restore_bars(
        &mut self,
        id: u32,
        sym: &Arc<str>,
        ts: u64,
        event: &Event,
        clock: &FeedClock,
    ) {
        clock.saw(ts, wall_clock_ns());
        match event {
            Event::Bar(b) => {
                self.bars.symbol(id, sym, clock).series[b.interval as usize].restore_bar(b, ts);
            }
            &Event::Trade { px, qty, side } => {
                let bars = self.bars.symbol(id, sym, clock);
                for iv in BarInterval::ALL {
                    bars.series[iv as usize].restore_trade(iv, ts, (px, qty, side));
                }
            }
            _ => {}
        }
    }

    /// Ring slots the tick at `key` with `event` needs, bars included.
    pub(super) fn slots_for(&self, key: KeyId, ts: u64, event: &Event, wall: u64) -> usize {
        if !self.bars.enabled || !matches!(event, Event::Trade { .. }) {
            return 1;
        }
        let Some(Some(s)) = self.bars.symbols.get(key.symbol() as usize) else {
            return 1 + BarInterval::ALL.len();
        };
        1 + BarInterval::ALL
            .into_iter()
            .filter(|iv| !s.external[*iv as usize])
            .map(|iv| s.series[iv as usize].outputs_for(iv, ts, wall))
            .sum::<usize>()
    }

    /// Folds an admitted tick into its symbol's bars: a trade updates them
    /// (publishing what is due), a bar from a source marks its key as
    /// external. Called right after the tick itself was staged; `clock`
    /// is the clock of the tick's source.
    pub(super) fn on_ingested(
        &mut self,
        ingest: &Ingest,
        a: &Admitted,
        epoch: Epoch,
        wall: u64,
        clock: &FeedClock,
    ) {
        let (key, sym, ts) = (a.key, &a.sym, a.ts);
        clock.saw(ts, wall);
        let id = key.symbol();
        match &a.event {
            Event::Bar(b) => {
                self.bars.symbol(id, sym, clock).external[b.interval as usize] = true;
            }
            &Event::Trade { px, qty, side } if self.bars.enabled => {
                let mut updates = Vec::new();
                let bars = self.bars.symbol(id, sym, clock);
                if !bars.clock.is(clock) {
                    bars.clock = clock.clone();
                }
                for iv in BarInterval::ALL {
                    if !bars.external[iv as usize] {
                        bars.series[iv as usize].on_trade(
                            iv,
                            ts,
                            (px, qty, side),
                            wall,
                            &mut updates,
                        );
                    }
                }
                self.publish_bars(ingest, id, sym, &mut updates, epoch, wall);
            }
            _ => {}
        }
    }
}

impl Ingest {
    /// Turns bar building on or off (`serve --no-bars`); off by default
    /// here, on in `serve`.
    pub fn set_bars(&self, on: bool) {
        self.sequencer.lock().bars.enabled = on;
    }

    /// One run of the bar clock at wall time `wall`: publishes open bars
    /// that are due and closes those whose interval the time of their
    /// symbol's source has passed.
    /// Stops early when the ring is nearly full (the next run goes on).
    pub fn bar_clock(&self, wall: u64) {
        let mut published = 0u64;
        {
            let mut seq = self.sequencer.lock();
            if !seq.bars.enabled {
                return;
            }
            let epoch = self.epoch();
            let mut updates = Vec::new();
            for id in 0..seq.bars.symbols.len() {
                if seq.writer.free() < BarInterval::ALL.len() {
                    break;
                }
                let Some(bars) = seq.bars.symbols[id].as_mut() else {
                    continue;
                };
                let feed_now = bars.clock.now(wall);
                for iv in BarInterval::ALL {
                    if !bars.external[iv as usize] {
                        bars.series[iv as usize].on_clock(feed_now, wall, &mut updates);
                    }
                }
                if updates.is_empty() {
                    continue;
                }
                let sym = bars.sym.clone();
                published += updates.len() as u64;
                seq.publish_bars(self, id as u32, &sym, &mut updates, epoch, wall);
            }
            seq.writer.publish();
        }
        if published > 0 {
            crate::pipeline::stats::Stats::add(&self.stats.ticks_in, published);
            for w in &self.reader_wakers {
                w.notify_one();
            }
        }
    }

    /// Runs [`Ingest::bar_clock`] every [`BAR_CLOCK_EVERY`] until shutdown.
    pub async fn run_bar_clock(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut every = tokio::time::interval(BAR_CLOCK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.bar_clock(wall_clock_ns()),
                _ = shutdown.triggered() => return,
            }
        }
    }
}
