//! Latencies by second, as the client threads hand them over: the
//! progress line's p99 and the HdrHistogram interval log.

use std::sync::mpsc;

use hdrhistogram::Histogram;

use crate::clients::{IntervalMsg, new_histogram};

/// Latencies by second: all threads' histograms of second `i` in slot `i`.
#[derive(Default)]
pub(super) struct Intervals(Vec<Interval>);

struct Interval {
    rx: Histogram<u64>,
    intended: Histogram<u64>,
    /// Threads that have sent their histogram of this second.
    threads: usize,
}

impl Intervals {
    /// Adds every histogram the client threads have sent so far.
    pub(super) fn absorb(&mut self, rx: &mpsc::Receiver<IntervalMsg>) {
        while let Ok(m) = rx.try_recv() {
            let i = m.index as usize;
            while self.0.len() <= i {
                self.0.push(Interval {
                    rx: new_histogram(),
                    intended: new_histogram(),
                    threads: 0,
                });
            }
            let slot = &mut self.0[i];
            let _ = slot.rx.add(&m.rx);
            let _ = slot.intended.add(&m.intended);
            slot.threads += 1;
        }
    }

    /// p99 from rx of the latest second every thread has reported.
    pub(super) fn last_p99(&self, threads: usize) -> Option<u64> {
        self.0
            .iter()
            .rev()
            .find(|s| s.threads >= threads)
            .map(|s| s.rx.value_at_quantile(0.99))
    }

    /// The rx histograms, one per second, without the empty seconds at the
    /// end (drain and shutdown say nothing).
    pub(super) fn into_rx(self) -> Vec<Histogram<u64>> {
        let mut v: Vec<Histogram<u64>> = self.0.into_iter().map(|s| s.rx).collect();
        while v.last().is_some_and(|h| h.is_empty()) {
            v.pop();
        }
        v
    }
}
