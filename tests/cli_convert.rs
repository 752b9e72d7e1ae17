//! `tickwire cat` and `tickwire convert` as a user runs them, and Ctrl-C
//! while `import` or `convert` writes: the `.partial` file is removed.

mod replay_support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use replay_support::{data, files_in, lean};
use tickwire::recordings::format::read_all;

fn tickwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
}

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A binary recording of the real BTCUSDT day sample (trades and quotes).
fn btc_recording(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("btc.twr");
    run_ok(
        tickwire()
            .args(["import", "--from", "tardis"])
            .arg(data("tardis_binance-futures_BTCUSDT_20200222_trades.csv"))
            .arg(data("tardis_binance-futures_BTCUSDT_20200222_quotes.csv"))
            .arg("--out")
            .arg(&out),
    );
    out
}

#[test]
fn cat_prints_every_selected_tick_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = btc_recording(dir.path());
    let all = read_all(&src).unwrap();
    let out = run_ok(tickwire().arg("cat").arg(&src));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), all.len());
    // Each line is the publish tick object: it parses back to the same tick.
    for (line, want) in lines.iter().zip(&all) {
        let got = tickwire::wire::publish::parse_publish(line.as_bytes()).pop();
        let Some(Ok(tickwire::wire::publish::Published::Tick(tick))) = got else {
            panic!("{line}")
        };
        assert_eq!(&tick, want, "{line}");
    }
    // --start/--end (+D from --start) and --symbols select as in replay.
    let start = all[0].ts + 5_000_000_000;
    let want = all
        .iter()
        .filter(|t| (start..start + 2_000_000_000).contains(&t.ts))
        .count();
    let out = run_ok(tickwire().arg("cat").arg(&src).args([
        "--start",
        &start.to_string(),
        "--end",
        "+2s",
        "--symbols",
        "BTCUSDT",
    ]));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), want);
    // A pipe closed early is not an error.
    let mut child = tickwire()
        .arg("cat")
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn convert_goes_between_encodings_and_compression_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let src = btc_recording(dir.path());
    let all = read_all(&src).unwrap();
    let mut prev = src.clone();
    for name in ["a.jsonl", "b.jsonl.zst", "c.twr.zst", "d.twr"] {
        let out = dir.path().join(name);
        let r = run_ok(tickwire().arg("convert").arg(&prev).arg("--out").arg(&out));
        assert!(String::from_utf8_lossy(&r.stdout).contains(&format!("wrote {} ticks", all.len())));
        assert_eq!(read_all(&out).unwrap(), all, "{name}");
        prev = out;
    }
    let text = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
    assert!(
        text.starts_with("{\"format\":\"tickwire.jsonl\""),
        "{text:.80}"
    );
    // A cut input is an error and leaves no output.
    let bytes = std::fs::read(&src).unwrap();
    let cut = dir.path().join("cut.twr");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = tickwire()
        .arg("convert")
        .arg(&cut)
        .arg("--out")
        .arg(dir.path().join("e.twr"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("cut.twr"));
    assert!(!dir.path().join("e.twr").exists());
    assert!(!dir.path().join(".e.twr.partial").exists());
}

/// Runs `args` with its temporary output made a FIFO this test reads, so
/// the writer is held mid-write: reads a little, sends SIGINT, then drains.
/// The command must stop, exit non-zero and remove the `.partial` (the FIFO).
fn interrupted_mid_write(args: &[&std::ffi::OsStr], dir: &Path, out_name: &str) {
    let partial = dir.join(format!(".{out_name}.partial"));
    let ok = Command::new("mkfifo").arg(&partial).status().unwrap();
    assert!(ok.success());
    let child = tickwire()
        .args(args)
        .arg("--out")
        .arg(dir.join(out_name))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the FIFO's read end lets the writer's File::create return.
    let mut fifo = std::fs::File::open(&partial).unwrap();
    let mut buf = vec![0u8; 4096];
    fifo.read_exact(&mut buf).unwrap();
    // The writer is blocked on the full pipe: interrupt it there.
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // Let the signal thread set its flag before the writer can go on
    // (a pause, not a measurement: nothing is asserted about time).
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    fifo.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!partial.exists(), "the .partial file is removed");
    assert!(!dir.join(out_name).exists());
}

#[test]
fn ctrl_c_while_import_or_convert_writes_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    // 250,601 SPY trades: far more than a pipe holds.
    let spy = lean("spy_20131007_trade.zip");
    interrupted_mid_write(
        &[
            "import".as_ref(),
            "--from".as_ref(),
            "lean".as_ref(),
            spy.as_os_str(),
        ],
        dir.path(),
        "spy.jsonl",
    );
    let src = btc_recording(dir.path());
    interrupted_mid_write(
        &["convert".as_ref(), src.as_os_str()],
        dir.path(),
        "btc.jsonl",
    );
    assert_eq!(
        files_in(dir.path()),
        ["btc.twr"],
        "nothing else left behind"
    );
}
