//! Playing recordings: into this process's ingest as a [`TickSource`]
//! ([`RecordedFeed`], used by `serve`), or into any server's `/v1/publish`
//! over a socket (`tickwire replay`, in [`client`]). Both read recordings
//! with [`crate::recordings::format::RecordingReader`] and pace ticks by their `ts`
//! deltas divided by the speed.
//!
//! The bundled default recording, `replay-data/us-equities-20131007-open30.twr.zst`,
//! is compiled into the binary so that `tickwire serve` works with no files
//! and no configuration.

pub mod client;
mod merge;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::speed::Speed;
use crate::model::tick::{NewTick, wall_clock_ns};
use crate::pipeline::ingest::{IngestError, TickSource};
pub use crate::recordings::format::RecordingError;
use crate::recordings::format::{RecordingReader, References, read_all_with_references};
pub use merge::{MergedReader, pacing_offsets};

/// The bundled recording: trades of AIG, BAC, IBM, SPY and IBM quotes,
/// 2013-10-07 09:30–10:00 New York time (see replay-data/README.md).
pub const DEFAULT_RECORDING: &[u8] =
    include_bytes!("../../../replay-data/us-equities-20131007-open30.twr.zst");
pub const DEFAULT_RECORDING_NAME: &str =
    "replay-data/us-equities-20131007-open30.twr.zst (embedded)";

/// Reads the embedded default recording.
pub fn embedded_ticks() -> Result<Vec<NewTick>, RecordingError> {
    RecordingReader::from_bytes(DEFAULT_RECORDING_NAME, DEFAULT_RECORDING)?
        .collect::<Result<Vec<_>, _>>()
}

/// A recording played as a source.
pub struct RecordedFeed {
    name: String,
    ticks: Arc<[NewTick]>,
    /// Pacing offset of each tick from the first, ns (see [`pacing_offsets`]).
    offsets: Arc<[u64]>,
    speed: Speed,
    looping: bool,
    /// Rewrite `ts` so that it reads as "now" (keeps a looped demo feed
    /// looking live and `ts` increasing across laps).
    rebase_ts: bool,
    pos: usize,
    lap: u64,
    start: Option<(Instant, u64)>,
    /// The recording's reference records, in file order, for the server to
    /// take before play ([`Self::take_references`]).
    references: References,
}

impl RecordedFeed {
    pub fn new(
        name: impl Into<String>,
        ticks: Vec<NewTick>,
        speed: Speed,
        looping: bool,
        rebase_ts: bool,
    ) -> Self {
        let offsets = pacing_offsets(ticks.iter().map(|t| t.ts));
        RecordedFeed {
            name: name.into(),
            ticks: ticks.into(),
            offsets: offsets.into(),
            speed,
            looping,
            rebase_ts,
            pos: 0,
            lap: 0,
            start: None,
            references: Vec::new(),
        }
    }

    /// The bundled recording, looped at `speed` with `ts` rebased.
    pub fn embedded(speed: Speed) -> Result<Self, RecordingError> {
        let ticks = embedded_ticks()?;
        Ok(Self::new(DEFAULT_RECORDING_NAME, ticks, speed, true, true))
    }

    /// A recording file (any encoding), played with its own `ts`.
    pub fn from_file(path: &Path, speed: Speed, looping: bool) -> Result<Self, RecordingError> {
        let (ticks, references) = read_all_with_references(path)?;
        let mut feed = Self::new(path.display().to_string(), ticks, speed, looping, false);
        feed.references = references;
        Ok(feed)
    }

    /// The recording's reference records (file order; the last of a symbol
    /// is the one that holds).
    pub fn take_references(&mut self) -> References {
        std::mem::take(&mut self.references)
    }

    /// Recorded length of one lap, ns (at least 1 ms, so a lap always advances time).
    fn span_ns(&self) -> u64 {
        self.offsets.last().copied().unwrap_or(0).max(1_000_000)
    }

    /// Offset of tick `i` of lap `lap` from the start of play, in recorded ns.
    fn offset_ns(&self, i: usize) -> u64 {
        self.lap * (self.span_ns() + 1_000_000) + self.offsets[i]
    }

    async fn next(&mut self, out: &mut Vec<NewTick>) -> Result<bool, IngestError> {
        if self.ticks.is_empty() {
            return Ok(false);
        }
        let (start, start_wall) = *self
            .start
            .get_or_insert_with(|| (Instant::now(), wall_clock_ns()));
        if self.pos >= self.ticks.len() {
            if !self.looping {
                return Ok(false);
            }
            self.pos = 0;
            self.lap += 1;
        }
        let offset = self.offset_ns(self.pos);
        if let Speed::Factor(f) = self.speed {
            let due = start + Duration::from_nanos((offset as f64 / f) as u64);
            tokio::time::sleep_until(due).await;
        }
        // Everything due by now leaves as one batch (bounded, so a huge
        // backlog at max speed still flows in pieces).
        let now_offset = match self.speed {
            Speed::Factor(f) => (start.elapsed().as_nanos() as f64 * f) as u64,
            Speed::Max => u64::MAX,
        };
        while self.pos < self.ticks.len() && out.len() < 1024 {
            let offset = self.offset_ns(self.pos);
            if offset > now_offset && !out.is_empty() {
                break;
            }
            let mut t = self.ticks[self.pos].clone();
            if self.rebase_ts {
                // Wall-clock time of the tick's slot, so `ts` reads as
                // "now" at any speed (at `max`, the moment it leaves).
                t.ts = match self.speed {
                    Speed::Factor(f) => start_wall + (offset as f64 / f) as u64,
                    Speed::Max => wall_clock_ns(),
                };
            }
            out.push(t);
            self.pos += 1;
        }
        Ok(self.looping || self.pos < self.ticks.len())
    }
}

impl TickSource for RecordedFeed {
    fn name(&self) -> &str {
        &self.name
    }

    /// The speed; 1 when `ts` is rebased to the wall clock (or at `max`,
    /// where nothing says how fast the next tick comes).
    fn pace(&self) -> f64 {
        match self.speed {
            Speed::Factor(f) if !self.rebase_ts => f,
            _ => 1.0,
        }
    }

    fn next_batch<'a>(
        &'a mut self,
        out: &'a mut Vec<NewTick>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, IngestError>> + Send + 'a>> {
        Box::pin(self.next(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_recording_parses() {
        let ticks = embedded_ticks().unwrap();
        assert_eq!(ticks.len(), 62_183);
        assert!(ticks.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn plays_at_recorded_pace_and_loops_with_rebased_time() {
        let line = |ts: u64| NewTick {
            book: None,
            sym: "A".into(),
            ts,
            event: crate::model::tick::Event::Trade {
                px: crate::model::decimal::Fixed(1),
                qty: crate::model::decimal::Fixed(1),
                side: crate::model::tick::Side::Unknown,
            },
        };
        let mut feed = RecordedFeed::new(
            "t",
            vec![line(0), line(10_000_000), line(30_000_000)],
            Speed::Factor(1.0),
            true,
            true,
        );
        let t0 = Instant::now();
        let mut out = Vec::new();
        feed.next(&mut out).await.unwrap();
        assert_eq!(out.len(), 1);
        feed.next(&mut out).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
        feed.next(&mut out).await.unwrap();
        feed.next(&mut out).await.unwrap(); // first tick of lap 2
        assert_eq!(out.len(), 4);
        assert!(
            out.windows(2).all(|w| w[0].ts < w[1].ts),
            "rebased ts increase across laps"
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(31));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_embedded_feed_plays_at_the_given_speed_with_ts_at_wall_pace() {
        let recorded = embedded_ticks().unwrap();
        let n = 2_000;
        let recorded_span = recorded[n - 1].ts - recorded[0].ts;
        assert!(recorded_span > 10_000_000_000, "a span worth measuring");
        let mut feed = RecordedFeed::embedded(Speed::Factor(10.0)).unwrap();
        let t0 = Instant::now();
        let (mut out, mut batch) = (Vec::new(), Vec::new());
        let mut played = 0;
        while out.len() < n {
            // A batch holds at most 1024 ticks: take each one out.
            feed.next(&mut batch).await.unwrap();
            out.append(&mut batch);
            // When the batch holding tick n-1 left.
            played = t0.elapsed().as_nanos() as u64;
        }
        out.truncate(n);
        // Virtual time (paused clock): a tenth of the recorded span.
        let want = recorded_span / 10;
        assert!(played.abs_diff(want) < want / 100, "{played} vs {want}");
        // Rebased ts advance at the wall clock's pace, not the recording's.
        let ts_span = out[n - 1].ts - out[0].ts;
        assert!(ts_span.abs_diff(want) < want / 100, "{ts_span} vs {want}");
    }
}
