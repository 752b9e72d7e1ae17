//! The journal on a full disk: a server whose `--journal` is on a small
//! tmpfs (mounted in the server's own mount namespace with `unshare -m`)
//! that fills up logs and counts the failed writes, delivers nothing the
//! journal has not written (clients wait, they lose nothing), leaves every
//! file ending on a whole record, and continues where it stopped once
//! space returns.
//!
//! Needs root and `unshare` (util-linux); without them it is skipped,
//! unless `TICKWIRE_REQUIRE_DISK_FULL=1` (set by `.ci/run`) makes it fail.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use tickwire::recordings::format::{RecordingError, RecordingReader};

/// Whether this machine can mount a tmpfs in a new mount namespace.
fn can_unshare() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("TICKWIRE_REQUIRE_DISK_FULL").is_none(),
            "root and `unshare -m` are required (TICKWIRE_REQUIRE_DISK_FULL is set)"
        );
        eprintln!("skipped: cannot mount a tmpfs with `unshare -m` (not root?)");
    }
    ok
}

/// `tickwire serve --journal MNT/journal` with MNT a `size` tmpfs of its
/// own mount namespace; returns the process, its address, and the journal
/// directory as seen from here (through `/proc/PID/root`).
fn serve_on_tmpfs(dir: &Path, size: &str) -> (Served, SocketAddr, PathBuf) {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let addr_file = dir.join("addr");
    let script = r#"mount -t tmpfs -o "size=$1" tmpfs "$2" && exec "$3" serve --no-feed --workers 1 --listen 127.0.0.1:0 --addr-file "$4" --journal "$2/journal" --journal-file-bytes 65536"#;
    let child = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            size,
        ])
        .arg(&mnt)
        .arg(env!("CARGO_BIN_EXE_tickwire"))
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .map(Served)
        .unwrap();
    let addr = wait_for_addr_file(&addr_file);
    // `unshare` and `sh` exec: the server is the child process itself.
    let journal = PathBuf::from(format!("/proc/{}/root", child.0.id()))
        .join(mnt.strip_prefix("/").unwrap())
        .join("journal");
    (child, addr, journal)
}

/// Every journal file reads to its end record or, for one left open, to
/// its last whole record: never into half a record.
fn assert_whole_records(journal: &Path) {
    for entry in std::fs::read_dir(journal).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "filler" {
            continue;
        }
        let mut r = RecordingReader::open(&path).unwrap().with_derived();
        loop {
            match r.next_tick() {
                Ok(Some(_)) => {}
                Ok(None) | Err(RecordingError::Unterminated { .. }) => break,
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_delivery_back_loses_nothing_and_corrupts_no_file() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, journal) = serve_on_tmpfs(dir.path(), "1m");
    let mut sub = subscriber(addr).await;
    sub.subscribe(1, &["R1"], None, false).await;
    let mut publ = publisher(addr).await;
    let mut n = 0u64;
    let mut seqs: Vec<u64> = Vec::new();
    publish50(&mut publ, &mut n).await;
    while seqs.len() < 50 {
        let v = sub.recv_json().await;
        if v["type"] == "trade" {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }

    // Fill the disk.
    let filler = journal.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    let full = loop {
        if let Err(e) = f.write_all(&block).and_then(|()| f.flush()) {
            break e;
        }
    };
    drop(f);
    assert_eq!(full.raw_os_error(), Some(28), "ENOSPC: {full}");
    // Enough ticks that the file's last page cannot take them.
    for _ in 0..8 {
        publish50(&mut publ, &mut n).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while scrape_metrics(addr).await["tickwire_journal_write_errors_total"] < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write error counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing the journal has not written is delivered: the subscriber
    // has only the first 50 (the pong overtakes the held ticks).
    sub.send_text(r#"{"op":"ping","id":9}"#).await;
    let (_, before) = sub.recv_until("pong").await;
    assert!(
        before.iter().all(|v| v["type"] != "trade"),
        "delivered past the journal: {before:?}"
    );
    assert_whole_records(&journal);

    // Space returns: the journal writes on (into a new file) and the
    // subscriber gets every tick, once, in order.
    std::fs::remove_file(&filler).unwrap();
    while seqs.len() < n as usize {
        let v = sub.recv_json().await;
        if v["type"] == "trade" {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let m = scrape_metrics(addr).await;
    assert!(
        m["tickwire_journal_ticks_written_total"] >= n as f64,
        "{m:?}"
    );
    assert_whole_records(&journal);
}

/// Publishes the next 50 R1 trades.
async fn publish50(publ: &mut RawWs, n: &mut u64) {
    let ticks: Vec<_> = (1..=50).map(|i| trade("R1", *n + i, "1", "1")).collect();
    publ.publish(&ticks).await;
    *n += 50;
}
