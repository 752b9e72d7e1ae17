//! The journal's writer thread: reads the ring, appends to the current
//! file, raises the delivery watermark, syncs, rotates and deletes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{JournalConfig, JournalError, file_name, list};
use crate::model::book::{BookChange, DepthClass};
use crate::model::epoch::Epoch;
use crate::model::tick::NewTick;
use crate::pipeline::ingest::{Ingest, IngestReader, RingItem};
use crate::pipeline::stats::Stats;
use crate::recordings::format::{Position, RecordingError, RecordingWriter};
use crate::shutdown::Shutdown;

/// The writer thread's handle.
pub type JournalThread = std::thread::JoinHandle<()>;

/// The file being written.
struct Current {
    /// Its writer (in place: readable while it grows).
    writer: RecordingWriter,
    /// The epoch of its last position record.
    epoch: Epoch,
    /// When it was opened: it rotates by age too.
    opened: Instant,
}

/// The journal's state on its thread.
struct Journal {
    config: JournalConfig,
    ingest: Arc<Ingest>,
    stats: Arc<Stats>,
    /// Reference data (`/v1/symbols?ref=1`): every file starts with all of
    /// it and then gets each change, so deleting old files loses none.
    reference: Arc<crate::server::reference::Reference>,
    /// `None` after a failure, until a retry opens a new file.
    current: Option<Current>,
    /// Offset of the newest tick written: workers deliver up to it.
    watermark: Arc<AtomicU64>,
    /// Bytes of the current file before the batch being written: where a
    /// failed write cuts it back to.
    good_bytes: u64,
    /// Written since the last `fdatasync`.
    unsynced: bool,
    last_sync: Instant,
}

/// Creates the directory and the first file (so an unwritable directory
/// is a start-up error), gates delivery on the journal, and starts the
/// writer thread on `reader` (a ring reader of its own).
pub fn start(
    config: JournalConfig,
    ingest: Arc<Ingest>,
    reader: IngestReader,
    stats: Arc<Stats>,
    reference: Arc<crate::server::reference::Reference>,
    mut shutdown: Shutdown,
) -> Result<JournalThread, JournalError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| JournalError::Dir {
        dir: config.dir.display().to_string(),
        what: "cannot create the directory",
        source,
    })?;
    let newest = ingest.newest_offset();
    let watermark = Arc::new(AtomicU64::new(newest));
    let mut journal = Journal {
        config,
        ingest: ingest.clone(),
        stats,
        reference,
        current: None,
        watermark: watermark.clone(),
        good_bytes: 0,
        unsynced: false,
        last_sync: Instant::now(),
    };
    journal.open(newest + 1).map_err(|e| match e {
        RecordingError::Io { file, source } => JournalError::Dir {
            dir: file,
            what: "cannot create a journal file",
            source,
        },
        e => JournalError::File(e),
    })?;
    ingest.gate_delivery(watermark);
    let reader = reader.ungated();
    std::thread::Builder::new()
        .name("tickwire-journal".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime with only a timer builds");
            rt.block_on(journal.run(reader, &mut shutdown));
        })
        .map_err(JournalError::Thread)
}

impl Journal {
    /// Starts a file whose first tick will have `offset`, with the current
    /// epoch's record.
    fn open(&mut self, offset: u64) -> Result<(), RecordingError> {
        let path = self.config.dir.join(file_name(offset));
        if path.exists() {
            // Only a file left by a failed attempt at this very offset can
            // have this name: every tick in it is about to be rewritten.
            let _ = std::fs::remove_file(&path);
        }
        let mut writer = RecordingWriter::create_in_place(&path)?;
        let epoch = self.ingest.epoch();
        let header = writer.write_epoch(epoch.0).and_then(|()| {
            for (sym, inst) in self.reference.snapshot_and_log() {
                writer.write_reference(&sym, &inst)?;
            }
            writer.flush()
        });
        if let Err(e) = header {
            // No file with half a header is left behind.
            drop(writer.cut_back(0));
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.current = Some(Current {
            writer,
            epoch,
            opened: Instant::now(),
        });
        Ok(())
    }

    async fn run(mut self, mut reader: IngestReader, shutdown: &mut Shutdown) {
        let mut batch: Vec<RingItem> = Vec::with_capacity(4096);
        loop {
            batch.clear();
            if reader.read_batch(&mut batch, 4096) == 0 {
                let wait = if self.unsynced {
                    self.config
                        .sync_every
                        .saturating_sub(self.last_sync.elapsed())
                } else {
                    Duration::from_secs(1)
                };
                tokio::select! {
                    _ = reader.waker.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.triggered() => break,
                }
                self.write_reference_changes();
                self.sync_if_due();
                self.rotate_if_due();
                continue;
            }
            self.write_reference_changes();
            while let Err(e) = self.write_batch(&batch) {
                Stats::add(&self.stats.journal.write_errors, 1);
                tracing::error!(error = %e, "journal: write failed; delivery waits, retrying in 1 s into a new file");
                self.abandon_current();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.triggered() => return,
                }
            }
            let last = batch.last().map_or(0, |t| t.offset);
            self.watermark.store(last, Ordering::Release);
            self.stats
                .journal
                .watermark
                .store(last as i64, Ordering::Relaxed);
            self.ingest.wake_readers();
            self.unsynced = true;
            self.sync_if_due();
            self.rotate_if_due();
        }
        self.write_reference_changes();
        if let Some(c) = self.current.take() {
            match c.writer.finish() {
                Ok(_) => Stats::add(&self.stats.journal.syncs, 1),
                Err(e) => tracing::error!(error = %e, "journal: closing the file at shutdown"),
            }
        }
    }

    /// Writes the reference data changed since the last call (publishers'
    /// `ref` messages), at most a second after it changed. A failure is
    /// logged and counted, and the file is cut back to before it (no half
    /// record stays); the next file starts with every entry anyway.
    fn write_reference_changes(&mut self) {
        let changes = self.reference.take_changes();
        let Some(c) = self.current.as_mut().filter(|_| !changes.is_empty()) else {
            return;
        };
        let before = c.writer.bytes();
        let written = changes
            .iter()
            .try_for_each(|(sym, inst)| c.writer.write_reference(sym, inst))
            .and_then(|()| c.writer.flush());
        match written {
            Ok(()) => self.unsynced = true,
            Err(e) => {
                Stats::add(&self.stats.journal.write_errors, 1);
                tracing::error!(error = %e, "journal: writing reference data failed");
                self.good_bytes = before;
                self.abandon_current();
            }
        }
    }

    /// After a failed write: the current file is cut back to its last
    /// whole batch (it keeps every tick delivered so far, and ends on a
    /// whole record); the batch goes, whole, into a new file.
    fn abandon_current(&mut self) {
        if let Some(c) = self.current.take()
            && let Err(e) = c.writer.cut_back(self.good_bytes)
        {
            tracing::error!(error = %e, "journal: cannot cut a failed file back to its last whole batch");
        }
    }

    /// Writes `batch` and hands it to the OS; a failure leaves the batch
    /// to be written again, whole, into a new file.
    fn write_batch(&mut self, batch: &[RingItem]) -> Result<(), RecordingError> {
        if self.current.is_none() {
            self.open(batch[0].offset)?;
        }
        let c = self.current.as_mut().expect("opened above");
        let before = c.writer.bytes();
        self.good_bytes = before;
        for item in batch {
            if item.epoch != c.epoch {
                c.writer.write_epoch(item.epoch.0)?;
                c.epoch = item.epoch;
            }
            c.writer.write_position(Position {
                offset: item.offset,
                seq: item.tick.seq,
                rx: item.tick.rx,
            })?;
            if item.derived {
                c.writer.write_derived(&recorded(item))?;
            } else {
                c.writer.write(&recorded(item))?;
            }
        }
        c.writer.flush()?;
        Stats::add(&self.stats.journal.ticks_written, batch.len() as u64);
        Stats::add(&self.stats.journal.bytes_written, c.writer.bytes() - before);
        Ok(())
    }

    fn sync_if_due(&mut self) {
        if !self.unsynced || self.last_sync.elapsed() < self.config.sync_every {
            return;
        }
        if let Some(c) = self.current.as_mut() {
            match c.writer.sync() {
                Ok(()) => Stats::add(&self.stats.journal.syncs, 1),
                Err(e) => {
                    Stats::add(&self.stats.journal.write_errors, 1);
                    tracing::error!(error = %e, "journal: fdatasync failed");
                }
            }
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    /// Closes the file (end record, sync) past its size or age, starts the
    /// next at the next offset, and deletes the oldest beyond the bound.
    fn rotate_if_due(&mut self) {
        let Some(c) = self.current.as_ref() else {
            return;
        };
        let big = c.writer.bytes() >= self.config.file_bytes;
        let old = c.opened.elapsed() >= self.config.file_age && c.writer.ticks() > 0;
        if !big && !old {
            return;
        }
        let c = self.current.take().expect("checked above");
        let (path, len) = (c.writer.partial_path().to_owned(), c.writer.bytes());
        if let Err(e) = c.writer.finish() {
            Stats::add(&self.stats.journal.write_errors, 1);
            tracing::error!(error = %e, "journal: closing a file; it stays without its end record");
            // A half-written end record is cut off: the file ends on its
            // last whole tick, as a killed server's does.
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len))
            {
                tracing::error!(file = %path.display(), error = %e, "journal: cannot cut a half-written end record");
            }
        }
        Stats::add(&self.stats.journal.rotations, 1);
        let next = self.watermark.load(Ordering::Acquire) + 1;
        if let Err(e) = self.open(next) {
            // The next batch retries.
            Stats::add(&self.stats.journal.write_errors, 1);
            tracing::error!(error = %e, "journal: starting a new file");
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        self.delete_beyond_bound();
    }

    fn delete_beyond_bound(&self) {
        let Ok(files) = list(&self.config.dir) else {
            return;
        };
        let sized: Vec<(PathBuf, u64)> = files
            .into_iter()
            .map(|(_, p)| {
                let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                (p, len)
            })
            .collect();
        let mut total: u64 = sized.iter().map(|(_, l)| l).sum();
        // The newest (the file being written) always stays.
        for (path, len) in &sized[..sized.len().saturating_sub(1)] {
            if total <= self.config.max_bytes {
                break;
            }
            if remove(path) {
                total -= len;
                Stats::add(&self.stats.journal.files_deleted, 1);
            }
        }
    }
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "journal: cannot delete an old file");
            false
        }
    }
}

/// A ring item as a recording's tick (a book update as its book record:
/// the full-depth class's levels, a snapshot or the levels that changed).
fn recorded(item: &RingItem) -> NewTick {
    let book = item.book.as_ref().map(|frames| {
        let msg = frames.class(DepthClass::Full).msg.as_ref();
        let levels = msg.map(|m| m.levels.clone()).unwrap_or_default();
        Arc::new(if msg.is_some_and(|m| m.snapshot) {
            BookChange::Snapshot(levels)
        } else {
            BookChange::Diff(levels)
        })
    });
    NewTick {
        sym: item.tick.sym.clone(),
        ts: item.tick.ts,
        event: item.tick.event.clone(),
        book,
    }
}
