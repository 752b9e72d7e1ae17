//! Recorded feeds played back as a [`TickSource`], at their recorded pace
//! (or faster), once or in a loop.
//!
//! The format read here is JSON lines of the protocol's publish ticks (one
//! object per line, `ts` non-decreasing). The bundled default recording,
//! `replay-data/default.jsonl`, is compiled into the binary so that
//! `tickwire serve` works with no files and no configuration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ingest::{IngestError, TickSource};
use crate::protocol::{Published, parse_publish};
use crate::tick::{NewTick, wall_clock_ns};

/// The bundled recording: NYSE/Nasdaq trades of AIG, BAC, IBM, SPY and IBM
/// quotes, 2013-10-07 09:30–09:40 New York time (see replay-data/README.md).
pub const DEFAULT_RECORDING: &[u8] = include_bytes!("../replay-data/default.jsonl");
pub const DEFAULT_RECORDING_NAME: &str = "replay-data/default.jsonl (embedded)";

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{file}:{line}: {message}")]
    BadLine {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: the recording holds no ticks")]
    Empty { file: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses a JSON-lines recording; blank lines are skipped.
pub fn parse_jsonl(name: &str, data: &[u8]) -> Result<Vec<NewTick>, RecordingError> {
    let mut ticks = Vec::new();
    let mut last_ts = 0u64;
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |message: String| RecordingError::BadLine {
            file: name.to_owned(),
            line: i + 1,
            message,
        };
        let mut parsed = parse_publish(line);
        if parsed.len() != 1 {
            return Err(bad("expected one tick object per line".into()));
        }
        match parsed.pop().expect("one element") {
            Ok(Published::Tick(t)) => {
                if t.ts < last_ts {
                    return Err(bad(format!(
                        "ts {} is earlier than the previous line's {last_ts}; a recording must be in time order",
                        t.ts
                    )));
                }
                last_ts = t.ts;
                ticks.push(t);
            }
            Ok(Published::Ping { .. }) => return Err(bad("expected a tick, found a ping".into())),
            Err(e) => return Err(bad(format!("{}: {}", e.code.as_str(), e.message))),
        }
    }
    if ticks.is_empty() {
        return Err(RecordingError::Empty {
            file: name.to_owned(),
        });
    }
    Ok(ticks)
}

/// How fast to play.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Recorded time divided by this factor (1.0 = real time).
    Factor(f64),
    /// As fast as ingest accepts.
    Max,
}

/// A recording played as a source.
pub struct RecordedFeed {
    name: String,
    ticks: Arc<[NewTick]>,
    speed: Speed,
    looping: bool,
    /// Rewrite `ts` so that it reads as "now" (keeps a looped demo feed
    /// looking live and `ts` increasing across laps).
    rebase_ts: bool,
    pos: usize,
    lap: u64,
    start: Option<(Instant, u64)>,
}

impl RecordedFeed {
    pub fn new(
        name: impl Into<String>,
        ticks: Vec<NewTick>,
        speed: Speed,
        looping: bool,
        rebase_ts: bool,
    ) -> Self {
        RecordedFeed {
            name: name.into(),
            ticks: ticks.into(),
            speed,
            looping,
            rebase_ts,
            pos: 0,
            lap: 0,
            start: None,
        }
    }

    /// The bundled recording, looped at its recorded pace with `ts` rebased.
    pub fn embedded_default() -> Result<Self, RecordingError> {
        let ticks = parse_jsonl(DEFAULT_RECORDING_NAME, DEFAULT_RECORDING)?;
        Ok(Self::new(
            DEFAULT_RECORDING_NAME,
            ticks,
            Speed::Factor(1.0),
            true,
            true,
        ))
    }

    /// Recorded length of one lap, ns (at least 1 ms, so a lap always advances time).
    fn span_ns(&self) -> u64 {
        let first = self.ticks[0].ts;
        let last = self.ticks[self.ticks.len() - 1].ts;
        (last - first).max(1_000_000)
    }

    /// Offset of tick `i` of lap `lap` from the start of play, in recorded ns.
    fn offset_ns(&self, i: usize) -> u64 {
        self.lap * (self.span_ns() + 1_000_000) + (self.ticks[i].ts - self.ticks[0].ts)
    }

    async fn next(&mut self, out: &mut Vec<NewTick>) -> Result<bool, IngestError> {
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
                t.ts = start_wall + offset;
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
        let ticks = parse_jsonl("default", DEFAULT_RECORDING).unwrap();
        assert!(ticks.len() > 10_000);
        assert!(ticks.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let data = b"{\"type\":\"trade\",\"sym\":\"A\",\"ts\":5,\"px\":1,\"qty\":1}\n\n{\"type\":\"trade\",\"sym\":\"A\",\"ts\":4,\"px\":1,\"qty\":1}\n";
        let e = parse_jsonl("f.jsonl", data).unwrap_err().to_string();
        assert!(e.starts_with("f.jsonl:3:"), "{e}");
        assert!(e.contains("time order"), "{e}");
        let e = parse_jsonl("g.jsonl", b"{\"type\":\"trade\"}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("g.jsonl:1: bad_field"), "{e}");
        assert!(parse_jsonl("h", b"\n\n").is_err());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn plays_at_recorded_pace_and_loops_with_rebased_time() {
        let line = |ts: u64| NewTick {
            sym: "A".into(),
            ts,
            event: crate::tick::Event::Trade {
                px: crate::decimal::Fixed(1),
                qty: crate::decimal::Fixed(1),
                side: crate::tick::Side::Unknown,
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
}
