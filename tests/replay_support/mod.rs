//! Helpers shared by the recorded-feed tests (import, recording, replay,
//! record): where the real data lives, and small file builders.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// `shared/data` with the real vendor files: the first ancestor of the
/// crate directory that has it (`/work/shared/data` for a worktree under
/// `/work/wt/`, `../shared/data` for a checkout next to `shared/`).
pub fn data_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared").join("data"))
        .find(|d| d.join("README.md").is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests read the real recordings in shared/data; none found above {}",
                manifest.display()
            )
        })
}

pub fn data(name: &str) -> PathBuf {
    data_dir().join(name)
}

pub fn lean(name: &str) -> PathBuf {
    data_dir().join("lean_equity_tick_20131007").join(name)
}

/// A zip holding the given (name, contents) entries, stored uncompressed.
pub fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, body) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(body).unwrap();
    }
    zip.finish().unwrap();
}

/// Files in `dir` (names), to check that nothing was left behind.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
