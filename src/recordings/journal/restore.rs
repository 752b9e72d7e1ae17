//! Reading the journal back at start-up: ingest continues the newest
//! epoch's `seq`, last values and offsets, and the history gets its ticks
//! back (as far as `--history-bytes`/`--history-age` allow).

use std::path::{Path, PathBuf};

use super::{JournalError, list};
use crate::model::epoch::Epoch;
use crate::pipeline::ingest::{Ingest, Placed};
use crate::pipeline::stats::Stats;
use crate::recordings::format::{RecordingError, RecordingReader};

/// What the start-up read of the journal found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Ticks restored into ingest.
    pub ticks: u64,
    /// The epoch continued; `None`: a fresh epoch (empty journal, or a gap).
    pub epoch: Option<Epoch>,
    /// The newest offset found in any file (0 for none): new ticks are
    /// numbered after it even in a fresh epoch, so an old position is
    /// never read as a new tick.
    pub newest_offset: u64,
    /// Offsets missing inside the newest epoch's files: nothing restored,
    /// a fresh epoch instead (a gap must be visible, never silent).
    pub gap: bool,
}

/// One file's ticks, in order, with their positions; stops at the end or
/// at a bad tail (reported once, when `report` is set).
fn each_tick(
    path: &Path,
    stats: &Stats,
    report: bool,
    mut f: impl FnMut(&crate::model::tick::NewTick, Placed, Epoch) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    let mut reader = match RecordingReader::open(path) {
        Ok(r) => r,
        Err(RecordingError::Io { file, source }) => {
            return Err(JournalError::Dir {
                dir: file,
                what: "cannot read a journal file",
                source,
            });
        }
        Err(e) => {
            // A header cut short: a file created just before a crash.
            if report {
                bad_tail(path, 0, &e, stats);
            }
            return Ok(());
        }
    };
    loop {
        let at = reader.byte_offset();
        match reader.next_tick() {
            Ok(Some(t)) => {
                let (Some(p), Some(epoch)) = (reader.position(), reader.epoch()) else {
                    if report {
                        let e = std::io::Error::other("a tick without a position or epoch record");
                        bad_tail(path, at, &e, stats);
                    }
                    return Ok(());
                };
                let placed = Placed {
                    offset: p.offset,
                    seq: p.seq,
                    rx: p.rx,
                };
                f(&t, placed, Epoch(epoch))?;
            }
            Ok(None) | Err(RecordingError::Unterminated { .. }) => return Ok(()),
            Err(e) => {
                if report {
                    bad_tail(path, at, &e, stats);
                }
                return Ok(());
            }
        }
    }
}

fn bad_tail(path: &Path, at: u64, e: &dyn std::fmt::Display, stats: &Stats) {
    let len = std::fs::metadata(path).map_or(at, |m| m.len());
    tracing::warn!(
        file = %path.display(),
        byte = at,
        bytes_skipped = len.saturating_sub(at),
        error = %e,
        "journal: skipping a bad tail (the ticks before it are restored)"
    );
    Stats::add(&stats.journal.bad_tails, 1);
    Stats::add(&stats.journal.bad_tail_bytes, len.saturating_sub(at));
}

/// Reads `dir`'s journal into `ingest` (which has sequenced nothing yet).
pub fn restore(dir: &Path, ingest: &Ingest, stats: &Stats) -> Result<Restored, JournalError> {
    let files = list(dir).map_err(|source| JournalError::Dir {
        dir: dir.display().to_string(),
        what: "cannot list the directory",
        source,
    })?;
    // Pass 1: find the newest epoch's run of files and check that its
    // offsets are contiguous.
    let mut newest_offset = 0u64;
    let mut run: Option<(Epoch, usize)> = None;
    let mut expected: Option<u64> = None;
    let mut gap = false;
    for (i, (_, path)) in files.iter().enumerate() {
        each_tick(path, stats, true, |_, at, epoch| {
            newest_offset = newest_offset.max(at.offset);
            if run.is_none_or(|(e, _)| e != epoch) {
                run = Some((epoch, i));
                expected = None;
                gap = false;
            }
            match expected {
                Some(next) if at.offset < next => return Ok(()), // rewritten after an error
                Some(next) if at.offset > next => {
                    if !gap {
                        tracing::error!(file = %path.display(), missing_from = next, next_found = at.offset,
                            "journal: offsets missing; the feed starts a new epoch");
                    }
                    gap = true;
                }
                _ => {}
            }
            expected = Some(at.offset + 1);
            Ok(())
        })?;
    }
    let Some((epoch, first_file)) = run else {
        return Ok(Restored::default());
    };
    if gap {
        return Ok(Restored {
            newest_offset,
            gap,
            ..Restored::default()
        });
    }
    // Pass 2: restore that run.
    let mut ticks = 0u64;
    let mut next: Option<u64> = None;
    let run_files: Vec<&PathBuf> = files[first_file..].iter().map(|(_, p)| p).collect();
    for path in run_files {
        each_tick(path, stats, false, |t, at, e| {
            if e != epoch || next.is_some_and(|n| at.offset < n) {
                return Ok(());
            }
            next = Some(at.offset + 1);
            ingest.restore(t, at, e)?;
            ticks += 1;
            Ok(())
        })?;
    }
    Stats::add(&stats.journal.restored_ticks, ticks);
    Ok(Restored {
        ticks,
        epoch: Some(epoch),
        newest_offset,
        gap: false,
    })
}
