//! The journal (`serve --journal DIR`): every sequenced tick appended to
//! rotating files in the recording format, so a restarted server continues
//! the same epoch, `seq` and offsets, and nothing a client received is lost.
//!
//! - **Files**: `DIR/journal-<first offset, 20 digits>.twr`, binary
//!   recordings (docs/RECORDING.md) with an epoch record at the start and a
//!   position record (offset, `seq`, `rx`) before each tick or book record.
//!   `tickwire replay` plays them; a file still being written (or cut by a
//!   crash) reads up to its last complete record.
//! - **Writer**: one dedicated thread reads the ring like a fan-out worker
//!   (ingest never makes a syscall for it), writes each batch and hands it
//!   to the OS (`write`), then raises the delivery watermark: workers send
//!   no tick the journal has not written, so a kill -9 cannot lose a tick a
//!   client has seen. `fdatasync` every `--journal-sync` (and on rotation):
//!   a power loss can lose at most that much.
//! - **Restore** ([`restore()`]): at start-up, before any source runs.

mod restore;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use restore::{Restored, restore};
pub use writer::{JournalThread, start};

/// `serve --journal*`.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Where the files live (created if missing).
    pub dir: PathBuf,
    /// A file is closed and a new one started past this size
    /// (`--journal-file-bytes`, default 64 MiB).
    pub file_bytes: u64,
    /// ... or this age (`--journal-file-age`, default 1 hour).
    pub file_age: Duration,
    /// The oldest closed files are deleted while all of them together hold
    /// more (`--journal-bytes`, default 1 GiB).
    pub max_bytes: u64,
    /// `fdatasync` at most this long after a write (`--journal-sync`,
    /// default 1 s; 0 = after every batch).
    pub sync_every: Duration,
}

impl JournalConfig {
    pub fn new(dir: PathBuf) -> JournalConfig {
        JournalConfig {
            dir,
            file_bytes: 64 * 1024 * 1024,
            file_age: Duration::from_secs(3600),
            max_bytes: 1024 * 1024 * 1024,
            sync_every: Duration::from_secs(1),
        }
    }
}

/// Why the journal cannot start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("--journal {dir}: {what}: {source}")]
    Dir {
        dir: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--journal: {0}")]
    File(#[from] crate::recordings::format::RecordingError),
    #[error("--journal: restoring: {0}")]
    Ingest(#[from] crate::pipeline::ingest::IngestError),
    #[error("--journal: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// The name of the file whose first tick has `offset`.
fn file_name(offset: u64) -> String {
    format!("journal-{offset:020}.twr")
}

/// The journal files in `dir`, oldest first (by the offset in the name).
fn list(dir: &std::path::Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("journal-")
            .and_then(|n| n.strip_suffix(".twr"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}
