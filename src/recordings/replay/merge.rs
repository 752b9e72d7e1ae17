//! Several recordings read as one stream in `ts` order, restricted to a
//! [`Selection`], and the pacing offsets players schedule ticks by.

use std::path::PathBuf;

use crate::model::tick::NewTick;
use crate::recordings::format::{RecordingError, RecordingReader, References};
use crate::recordings::selection::{Selection, Window};

/// Pacing offset of each tick from the first, ns: by the latest `ts` seen
/// so far, so a tick whose `ts` steps back (a recording made by `record`
/// keeps arrival order) is played right away instead of stalling.
pub fn pacing_offsets(ts: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut first = None;
    let mut latest = 0u64;
    ts.into_iter()
        .map(|ts| {
            let first = *first.get_or_insert(ts);
            latest = latest.max(ts);
            latest - first
        })
        .collect()
}

/// Merges recordings by `ts` (ties: the earlier file first) and keeps the
/// ticks inside the selection.
pub struct MergedReader {
    readers: Vec<RecordingReader>,
    heads: Vec<Option<NewTick>>,
    /// Per reader, the reference records read before its head tick (or
    /// before its end): they are due when that head is returned.
    head_references: Vec<References>,
    /// Reference records due: read before the tick last returned.
    due_references: References,
    window: Window,
    /// Ticks read, selected or not, and the `ts` range they covered: what
    /// an empty selection's error reports beside the window.
    seen: u64,
    seen_ts: Option<(u64, u64)>,
}

impl MergedReader {
    pub fn open(paths: &[PathBuf], selection: &Selection) -> Result<Self, RecordingError> {
        let mut readers = Vec::with_capacity(paths.len());
        let mut heads = Vec::with_capacity(paths.len());
        let mut head_references = Vec::with_capacity(paths.len());
        for p in paths {
            let mut r = RecordingReader::open(p)?;
            heads.push(r.next_tick()?);
            head_references.push(r.take_references());
            readers.push(r);
        }
        let first_ts = heads.iter().flatten().map(|t| t.ts).min().unwrap_or(0);
        Ok(MergedReader {
            readers,
            heads,
            head_references,
            due_references: Vec::new(),
            window: selection.resolve(first_ts),
            seen: 0,
            seen_ts: None,
        })
    }

    /// The window the selection resolved to.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Ticks read so far, selected or not, and the lowest and highest `ts`
    /// among them.
    pub fn seen(&self) -> (u64, Option<(u64, u64)>) {
        (self.seen, self.seen_ts)
    }

    /// Bytes of the files read so far, and their total size.
    pub fn progress(&self) -> (u64, u64) {
        self.readers.iter().fold((0, 0), |(done, total), r| {
            let (d, t) = r.progress();
            (done + d, total + t.unwrap_or(d))
        })
    }

    /// The selected symbols' reference records that came before the tick
    /// last returned in its file (after [`Self::next_tick`] says `None`:
    /// every one left).
    pub fn take_references(&mut self) -> References {
        let window = &self.window;
        std::mem::take(&mut self.due_references)
            .into_iter()
            .filter(|(sym, _)| window.admits_symbol(sym))
            .collect()
    }

    pub fn next_tick(&mut self) -> Result<Option<NewTick>, RecordingError> {
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, h) in self.heads.iter().enumerate() {
                if let Some(t) = h
                    && best.is_none_or(|(_, ts)| t.ts < ts)
                {
                    best = Some((i, t.ts));
                }
            }
            let Some((i, _)) = best else {
                for r in &mut self.head_references {
                    self.due_references.append(r);
                }
                return Ok(None);
            };
            self.due_references.append(&mut self.head_references[i]);
            let next = self.readers[i].next_tick()?;
            self.head_references[i] = self.readers[i].take_references();
            let tick = std::mem::replace(&mut self.heads[i], next);
            if let Some(t) = tick {
                self.seen += 1;
                self.seen_ts = Some(
                    self.seen_ts
                        .map_or((t.ts, t.ts), |(lo, hi)| (lo.min(t.ts), hi.max(t.ts))),
                );
                if self.window.admits(&t) {
                    return Ok(Some(t));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_latest_ts() {
        assert_eq!(pacing_offsets([10, 12, 11, 15]), [0, 2, 2, 5]);
        assert!(pacing_offsets([]).is_empty());
    }
}
