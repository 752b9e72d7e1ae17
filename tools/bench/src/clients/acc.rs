//! What a client thread measures: latency histograms and delivery counts,
//! merged over threads at the end.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// The histogram every latency goes into: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Per-group counts (fast or slow clients).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// Live ticks received (snapshots excluded).
    pub delivered: u64,
    pub snapshots: u64,
    /// Times a key's `seq` jumped forward, and the ticks skipped by it.
    pub gap_events: u64,
    pub gap_ticks: u64,
    /// Ticks whose `seq` was not above the last one of their key.
    pub reorders: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.snapshots += o.snapshots;
        self.gap_events += o.gap_events;
        self.gap_ticks += o.gap_ticks;
        self.reorders += o.reorders;
    }
}

/// One second of latencies from one thread.
pub struct IntervalMsg {
    pub index: u64,
    pub rx: Histogram<u64>,
    pub intended: Histogram<u64>,
}

/// Everything one thread measured.
pub struct Acc {
    /// Fast clients, from `rx` and from the intended send time.
    pub rx: Histogram<u64>,
    pub intended: Histogram<u64>,
    /// Slow clients, from `rx`.
    pub slow_rx: Histogram<u64>,
    /// Fast clients from `rx`: before, during and after the stall.
    pub phases: [Histogram<u64>; 3],
    pub fast: Counts,
    pub slow: Counts,
    pub parse_errors: u64,
    pub samples: Vec<String>,
    /// Ticks of a symbol or key the client did not subscribe to.
    pub unexpected: u64,
    /// Ticks received before their `rx` by our clock (recorded as 1 ns).
    pub clock_skew: u64,
    /// `lagging` notices and `error` messages from the server.
    pub lagging: u64,
    pub server_errors: u64,
    /// How connections ended: close code, "eof" or "error".
    pub ends: BTreeMap<String, u64>,
    pub slow_ends: BTreeMap<String, u64>,
    /// Reconnecting clients' figures (`--reconnect-every`).
    pub reconnect: super::ReconnectAcc,
    /// This second's latencies (fast clients), handed over by the ticker.
    /// A fast client's tick is recorded here only; [`Acc::take_interval`]
    /// adds the second into `rx` and `intended` (one record per latency on
    /// the hot path instead of two).
    pub(super) interval_rx: Histogram<u64>,
    pub(super) interval_intended: Histogram<u64>,
}

impl Acc {
    pub fn empty() -> Acc {
        Acc {
            rx: new_histogram(),
            intended: new_histogram(),
            slow_rx: new_histogram(),
            phases: [new_histogram(), new_histogram(), new_histogram()],
            fast: Counts::default(),
            slow: Counts::default(),
            parse_errors: 0,
            samples: Vec::new(),
            unexpected: 0,
            clock_skew: 0,
            lagging: 0,
            server_errors: 0,
            ends: BTreeMap::new(),
            slow_ends: BTreeMap::new(),
            reconnect: super::ReconnectAcc::default(),
            interval_rx: new_histogram(),
            interval_intended: new_histogram(),
        }
    }

    /// All threads' figures in one.
    pub fn merge_all(accs: Vec<Acc>) -> Acc {
        let mut it = accs.into_iter();
        let Some(mut first) = it.next() else {
            return Acc::empty();
        };
        for a in it {
            first.merge(&a);
        }
        first
    }

    /// Folds another thread's figures into this one.
    pub fn merge(&mut self, o: &Acc) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.rx.add(&o.rx);
        let _ = self.intended.add(&o.intended);
        let _ = self.slow_rx.add(&o.slow_rx);
        for (a, b) in self.phases.iter_mut().zip(&o.phases) {
            let _ = a.add(b);
        }
        self.fast.add(&o.fast);
        self.slow.add(&o.slow);
        self.parse_errors += o.parse_errors;
        for s in &o.samples {
            if self.samples.len() < 5 {
                self.samples.push(s.clone());
            }
        }
        self.unexpected += o.unexpected;
        self.clock_skew += o.clock_skew;
        self.lagging += o.lagging;
        self.server_errors += o.server_errors;
        for (k, v) in &o.ends {
            *self.ends.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.slow_ends {
            *self.slow_ends.entry(k.clone()).or_default() += v;
        }
        self.reconnect.merge(&o.reconnect);
    }

    /// Ends this second: adds its latencies into the run's totals and
    /// hands them over (from `rx`, from intended), leaving empty ones.
    pub(super) fn take_interval(&mut self) -> (Histogram<u64>, Histogram<u64>) {
        let rx = std::mem::replace(&mut self.interval_rx, new_histogram());
        let intended = std::mem::replace(&mut self.interval_intended, new_histogram());
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.rx.add(&rx);
        let _ = self.intended.add(&intended);
        (rx, intended)
    }

    /// Keeps the first few odd messages as examples for the report.
    pub(super) fn sample(&mut self, s: String) {
        if self.samples.len() < 5 {
            self.samples.push(s);
        }
    }
}
