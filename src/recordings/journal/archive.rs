//! Reading the journal on demand: a resume (or a `catchup` cursor) whose
//! position is older than the memory history is served from the files.
//!
//! Where a position starts is cheap to find: the files are named by their
//! first offset (a directory listing and a binary search), and each file's
//! first record gives its first `rx` (one small read per file), so only
//! the one file holding the position is scanned to find it exactly. A
//! per-key `seq` is found by scanning forward from the oldest file of the
//! epoch (the journal holds no per-key index: the cost is one read of the
//! journal, on a blocking thread, and only for a key named with a `seq`
//! older than memory and no connection-wide position).
//!
//! Every read runs on a blocking thread, never on a worker's event loop,
//! at most `--journal-readers` at once (a semaphore; others wait their
//! turn). A reading client gets its ticks in chunks through a channel of
//! [`CHANNEL_CHUNKS`] chunks of [`CHUNK`] ticks: the reader waits while
//! the client has not taken them (backpressure), so a client costs at most
//! that many ticks of memory however far back it reads. A client that
//! takes nothing for [`PATIENCE`] (its socket is stalled) gives its reader
//! slot back and queues for one again when it reads on, so stalled clients
//! cannot keep the others waiting.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::list;
use crate::model::epoch::Epoch;
use crate::model::symbols::SymbolTable;
use crate::model::tick::{KeyId, NewTick, Tick};
use crate::pipeline::history::History;
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::Stats;
use crate::recordings::format::{Position, RecordingError, RecordingReader};
use crate::wire::encode::EncodedTick;

/// Ticks in one chunk handed to a reading client.
pub const CHUNK: usize = 256;
/// Chunks a reader may have sent that the client has not taken yet.
pub const CHANNEL_CHUNKS: usize = 2;
/// How long a reader waits for its client to take a chunk before it
/// gives its slot to another client.
pub const PATIENCE: Duration = Duration::from_secs(2);
/// `--journal-readers`' default.
pub const DEFAULT_READERS: usize = 4;

/// Why the journal cannot give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The oldest offset the journal could give (0: none).
    pub first: u64,
    /// Why: `rotated` (the files were deleted meanwhile), `corrupt` (a
    /// record could not be read), `short` (the files end before the
    /// position the worker has delivered: never expected).
    pub reason: &'static str,
}

/// One message of a reading client's channel: ticks, and the offset the
/// read has passed once they are taken (book records and other epochs'
/// ticks are passed over without being sent).
pub type Chunk = Result<(Vec<RingItem>, u64), Gap>;

/// What a resume needs to know about the journal, found on a blocking
/// thread before the subscribe is planned.
#[derive(Debug, Default, Clone)]
pub struct Located {
    /// The oldest offset of the current epoch the journal holds.
    pub oldest: Option<u64>,
    /// For a resume by time: the offset just before the first tick with
    /// `rx >= ts`, if the journal reaches back that far.
    pub before_ts: Option<u64>,
    /// For keys resumed by `seq`: the offset of the tick with the wanted
    /// `seq`, where the journal holds it.
    pub key_offsets: Vec<(KeyId, u64)>,
}

/// The journal as a source of old ticks; one per server.
pub struct Archive {
    /// The journal directory.
    dir: PathBuf,
    /// To name each record's key (a symbol never seen is skipped: no
    /// client can hold a position for it).
    symbols: Arc<SymbolTable>,
    /// Readers stop where the memory history takes over.
    history: Arc<History>,
    stats: Arc<Stats>,
    /// Bounds the blocking threads reading at once (`--journal-readers`).
    readers: Arc<Semaphore>,
}

impl Archive {
    pub fn new(
        dir: PathBuf,
        symbols: Arc<SymbolTable>,
        history: Arc<History>,
        stats: Arc<Stats>,
        readers: usize,
    ) -> Archive {
        Archive {
            dir,
            symbols,
            history,
            stats,
            readers: Arc::new(Semaphore::new(readers.max(1))),
        }
    }

    /// Runs `f` on a blocking thread once a reader slot is free.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Archive) -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.readers.clone().acquire_owned().await.ok()?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&me)
        })
        .await
        .ok()
    }

    /// The files of `epoch`, oldest first, with their first offsets; a file
    /// whose first tick is of another epoch (or that holds none) is left out.
    fn files_of(&self, epoch: Epoch) -> Vec<(u64, PathBuf, u64)> {
        let Ok(files) = list(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (first, path) in files {
            let mut head = None;
            let _ = self.scan(&path, |_, p, e| {
                head = Some((e, p.rx));
                ControlFlow::Break(())
            });
            if let Some((e, rx)) = head
                && e == epoch
            {
                out.push((first, path, rx));
            }
        }
        out
    }

    /// Calls `f` with each tick of `path` in order until it breaks; a
    /// file cut short ends quietly (it is being written), anything else
    /// that cannot be read is returned.
    fn scan(
        &self,
        path: &Path,
        mut f: impl FnMut(&NewTick, Position, Epoch) -> ControlFlow<()>,
    ) -> Result<(), RecordingError> {
        let mut reader = RecordingReader::open(path)?.with_derived();
        loop {
            match reader.next_tick() {
                Ok(Some(t)) => {
                    let (Some(p), Some(e)) = (reader.position(), reader.epoch()) else {
                        return Err(RecordingError::Corrupt {
                            file: path.display().to_string(),
                            offset: reader.byte_offset(),
                            zst: "",
                            message: "a tick without a position or epoch record".into(),
                        });
                    };
                    if f(&t, p, Epoch(e)).is_break() {
                        return Ok(());
                    }
                }
                Ok(None) | Err(RecordingError::Unterminated { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn read_error(&self, e: &RecordingError) {
        Stats::add(&self.stats.journal.read_errors, 1);
        tracing::warn!(error = %e, "journal: cannot read a file for a resume");
    }

    /// Finds where a resume's positions are in the journal (blocking).
    /// `ts`: a resume by time; `seqs`: keys and the `seq` wanted next.
    pub fn locate(&self, epoch: Epoch, ts: Option<u64>, seqs: &[(KeyId, u64)]) -> Located {
        let files = self.files_of(epoch);
        let mut out = Located {
            oldest: files.first().map(|f| f.0),
            ..Located::default()
        };
        if let Some(ts) = ts {
            // The newest file that starts before `ts` holds its position.
            if let Some(i) = files.iter().rposition(|f| f.2 < ts) {
                let mut before = files.get(i + 1).map(|f| f.0 - 1);
                let scanned = self.scan(&files[i].1, |_, p, e| {
                    if e != epoch {
                        return ControlFlow::Continue(());
                    }
                    if p.rx >= ts {
                        before = Some(p.offset - 1);
                        return ControlFlow::Break(());
                    }
                    before = Some(p.offset);
                    ControlFlow::Continue(())
                });
                match scanned {
                    Ok(()) => out.before_ts = before,
                    Err(e) => self.read_error(&e),
                }
            }
        }
        let mut wanted: Vec<(KeyId, u64)> = seqs.to_vec();
        let stop = self.history.first_offset();
        for (_, path, _) in &files {
            if wanted.is_empty() {
                break;
            }
            let scanned = self.scan(path, |t, p, e| {
                if p.offset >= stop {
                    return ControlFlow::Break(());
                }
                if e != epoch || t.book.is_some() {
                    return ControlFlow::Continue(());
                }
                let Some(key) = self.key_of(t) else {
                    return ControlFlow::Continue(());
                };
                if let Some(i) = wanted.iter().position(|&(k, s)| k == key && s == p.seq) {
                    out.key_offsets.push((key, p.offset));
                    wanted.swap_remove(i);
                    if wanted.is_empty() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if let Err(e) = scanned {
                // The rest of this file is lost; later files still count
                // (a key's wanted tick there is read from there on).
                self.read_error(&e);
            }
        }
        out
    }

    fn key_of(&self, t: &NewTick) -> Option<KeyId> {
        let (id, _) = self.symbols.lookup(&t.sym)?;
        Some(KeyId::new(id, t.event.channel()))
    }

    /// A tick as the fan-out holds it (trades and quotes; a book key
    /// always restarts from its snapshot, so book records are not read).
    fn item(&self, t: &NewTick, p: Position, epoch: Epoch) -> Option<RingItem> {
        if t.book.is_some() {
            return None;
        }
        let (id, sym) = self.symbols.lookup(&t.sym)?;
        let tick = Tick {
            key: KeyId::new(id, t.event.channel()),
            sym,
            seq: p.seq,
            ts: t.ts,
            rx: p.rx,
            event: t.event.clone(),
        };
        Some(Arc::new(EncodedTick::at(tick, p.offset, epoch)))
    }

    /// Sends the ticks of `epoch` from offset `from` up to `until` (or to
    /// where the memory history starts) in chunks to `tx`, waking `ready`
    /// after each; ends with a [`Gap`] when the files cannot give them.
    /// Blocking: runs on a reader thread.
    pub fn stream(
        &self,
        epoch: Epoch,
        from: u64,
        until: u64,
        tx: &mpsc::Sender<Chunk>,
        ready: &Notify,
    ) {
        // A client that takes nothing for [`PATIENCE`] gives its reader
        // slot back: the read ends, and its cursor opens a new one from
        // where it is once it reads again (waiting for a slot).
        let send = |mut c: Chunk| {
            let deadline = Instant::now() + PATIENCE;
            loop {
                match tx.try_send(c) {
                    Ok(()) => {
                        ready.notify_one();
                        return true;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                    Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                        c = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(TrySendError::Full(_)) => return false,
                }
            }
        };
        let files = self.files_of(epoch);
        let Some(i) = files.iter().rposition(|f| f.0 <= from) else {
            let first = files.first().map_or(0, |f| f.0);
            send(Err(Gap {
                first,
                reason: "rotated",
            }));
            return;
        };
        let mut next = from;
        let mut chunk: Vec<RingItem> = Vec::with_capacity(CHUNK);
        let mut stop = until
            .min(self.history.first_offset().saturating_sub(1))
            .max(from);
        let mut gone = false;
        for (_, path, _) in &files[i..] {
            let scanned = self.scan(path, |t, p, e| {
                if p.offset < next || e != epoch {
                    return ControlFlow::Continue(());
                }
                if p.offset > stop {
                    return ControlFlow::Break(());
                }
                next = p.offset + 1;
                if let Some(item) = self.item(t, p, e) {
                    chunk.push(item);
                }
                if chunk.len() == CHUNK {
                    Stats::add(&self.stats.journal.resume_ticks, CHUNK as u64);
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if !send(Ok((full, next))) {
                        gone = true;
                        return ControlFlow::Break(());
                    }
                    // The history moved on meanwhile: stop where it starts.
                    stop = until
                        .min(self.history.first_offset().saturating_sub(1))
                        .max(next - 1);
                }
                ControlFlow::Continue(())
            });
            if gone {
                return;
            }
            match scanned {
                Ok(()) if next > stop => break,
                Ok(()) => {}
                Err(RecordingError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    let first = self.files_of(epoch).first().map_or(0, |f| f.0);
                    send(Err(Gap {
                        first,
                        reason: "rotated",
                    }));
                    return;
                }
                Err(e) => {
                    self.read_error(&e);
                    send(Err(Gap {
                        first: next,
                        reason: "corrupt",
                    }));
                    return;
                }
            }
        }
        Stats::add(&self.stats.journal.resume_ticks, chunk.len() as u64);
        if !send(Ok((chunk, next))) {
            return;
        }
        if next <= stop {
            send(Err(Gap {
                first: next,
                reason: "short",
            }));
        }
    }

    /// Starts reading `from`..=`until` for one client: a local task waits
    /// for a reader slot, a blocking thread reads, and `wake` (the client's
    /// writer task) is signalled whenever a chunk is ready. Must run on a
    /// worker's `LocalSet`.
    pub fn open(
        self: &Arc<Self>,
        epoch: Epoch,
        from: u64,
        until: u64,
        wake: std::rc::Rc<Notify>,
    ) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let ready = Arc::new(Notify::new());
        let done = Arc::new(AtomicBool::new(false));
        Stats::add(&self.stats.journal.resume_reads, 1);
        let me = self.clone();
        let (ready2, done2) = (ready.clone(), done.clone());
        tokio::task::spawn_local(async move {
            let read = me.blocking(move |a| {
                a.stream(epoch, from, until, &tx, &ready2);
                // Closed before `done`: the client's last wake-up must
                // find the channel disconnected, not empty.
                drop(tx);
                done2.store(true, Ordering::Release);
                ready2.notify_one();
            });
            let pump = async {
                loop {
                    ready.notified().await;
                    wake.notify_one();
                    if done.load(Ordering::Acquire) {
                        return;
                    }
                }
            };
            let (_, ()) = tokio::join!(read, pump);
        });
        rx
    }
}
