//! Helpers shared by the recorded-feed tests (import, recording, replay,
//! record): where the real data lives, and small file builders.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The real vendor files bundled in `tests/data` (sources and licences in
/// its README).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
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
