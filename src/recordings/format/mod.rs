//! tickwire's own recording format: how recorded ticks are stored on disk,
//! written and read back. Everything that plays or produces a recording
//! (`import`, `record`, `replay`, `serve --replay`, the embedded default
//! feed) goes through [`RecordingWriter`] and [`RecordingReader`].
//!
//! Two encodings share one model (docs/RECORDING.md has the byte layout):
//! - **binary** (`.twr`, the default): a 16-byte header naming the format and
//!   version, then fixed-size little-endian records. Chosen for replay speed:
//!   a tick decodes with a handful of loads and no text parsing (the JSON
//!   path costs ~10× more per tick), and symbols are written once each.
//! - **JSON lines** (`.jsonl`): a header line, then the protocol's publish
//!   tick objects, one per line: for reading and editing by hand.
//!
//! Either may be zstd-compressed (`.zst` suffix; detected by magic on read).
//! Both are streamable: no index and no footer is needed to read, records
//! are self-delimiting, and the writer only ever flushes whole records, so a
//! reader can follow a file that is still being written. An end record with
//! the tick count marks a complete file, so truncation at a record boundary
//! is detected too. Outputs are written under a temporary name and renamed
//! on success: a file with the final name is always complete.

mod binary;
mod jsonl;
mod reader;
mod writer;

use std::path::{Path, PathBuf};

pub use jsonl::{write_reference_json, write_tick_json};
pub use reader::{RecordingReader, References, read_all, read_all_with_references};
pub use writer::RecordingWriter;

/// Why a recording could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}: not a tickwire recording: expected the header `tickwire.rec` (binary) or `{{\"format\":\"tickwire.jsonl\",...}}` (JSON lines), found {found}"
    )]
    NotARecording { file: String, found: String },
    #[error(
        "{file}: recording format version {version} is not supported; this build reads versions 1 to {supported}"
    )]
    UnsupportedVersion {
        file: String,
        version: u64,
        supported: u16,
    },
    #[error("{file}: byte {offset}{zst}: truncated {what}: the file ends before it is complete")]
    Truncated {
        file: String,
        offset: u64,
        /// " (of the decompressed stream)" for `.zst` files.
        zst: &'static str,
        what: &'static str,
    },
    #[error("{file}: byte {offset}{zst}: {message}")]
    Corrupt {
        file: String,
        offset: u64,
        zst: &'static str,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    BadLine {
        file: String,
        line: u64,
        message: String,
    },
    #[error(
        "{file}: no end record after {ticks} ticks: the file is incomplete (cut short, or still being written)"
    )]
    Unterminated { file: String, ticks: u64 },
    #[error("{file}: the end record says {expected} ticks but {found} were read")]
    CountMismatch {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("{file}: the recording holds no ticks")]
    Empty { file: String },
}

/// Where the server placed a journaled tick: what a restart restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The global ingest offset (connection-wide resume position).
    pub offset: u64,
    /// The key's `seq`.
    pub seq: u64,
    /// The server's receive stamp, ns (resume by time).
    pub rx: u64,
}

/// The two encodings of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    JsonLines,
}

/// Encoding and compression, as chosen by an output file's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub encoding: Encoding,
    pub zstd: bool,
}

impl Format {
    /// `x.jsonl` / `x.jsonl.zst`: JSON lines; anything else: binary
    /// (`x.twr`, `x.twr.zst`). A `.zst` suffix compresses.
    pub fn from_path(path: &Path) -> Format {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let zstd = name.ends_with(".zst");
        let stem = name.strip_suffix(".zst").unwrap_or(&name);
        let encoding = if stem.ends_with(".jsonl") || stem.ends_with(".json") {
            Encoding::JsonLines
        } else {
            Encoding::Binary
        };
        Format { encoding, zstd }
    }
}

/// Format version written by this build: 2 added book records (and the
/// resume work's records), 3 bar records; versions 1 (ticks only) and 2
/// still read.
pub(crate) const VERSION: u16 = 3;
/// Versions this build reads.
pub(crate) const READS: std::ops::RangeInclusive<u16> = 1..=3;

/// The temporary name an output is written under before the rename:
/// `dir/.name.partial`, so it never looks like a finished recording.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording".into());
    path.with_file_name(format!(".{name}.partial"))
}

fn zst_note(zstd: bool) -> &'static str {
    if zstd {
        " (of the decompressed stream)"
    } else {
        ""
    }
}
