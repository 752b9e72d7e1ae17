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

/// A recorder (`tickwire record`'s library call) running against a test
/// server: its progress, the sender that stops it, its task.
pub struct Recorder {
    /// What it has recorded so far.
    pub progress: std::sync::Arc<tickwire::recordings::record::RecordProgress>,
    /// Sending (or dropping) it stops the recording.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// The recording, ending with its report.
    pub task: tokio::task::JoinHandle<
        Result<
            tickwire::recordings::record::RecordReport,
            tickwire::recordings::record::RecordError,
        >,
    >,
}

/// Starts recording `symbols` from the server at `addr` into `out`, and
/// waits (at most 20 s) until it is subscribed.
pub async fn start_recorder(addr: std::net::SocketAddr, symbols: &[&str], out: &Path) -> Recorder {
    use std::sync::atomic::Ordering;
    let progress = std::sync::Arc::new(tickwire::recordings::record::RecordProgress::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    let task = tokio::spawn({
        let (progress, out) = (progress.clone(), out.to_path_buf());
        async move {
            tickwire::recordings::record::record(
                &format!("ws://{addr}"),
                &symbols,
                &out,
                async {
                    let _ = stop_rx.await;
                },
                progress,
            )
            .await
        }
    });
    for _ in 0..2_000 {
        if progress.subscribed.load(Ordering::Acquire) == 1 {
            return Recorder {
                progress,
                stop,
                task,
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the recorder did not subscribe within 20 s");
}
