//! The `import`, `replay` and `record` commands as a user runs them: exit
//! status, messages, and what is (not) left on disk.

mod replay_support;

use std::process::Command;

use replay_support::{data, files_in};

fn tickwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
}

#[test]
fn import_succeeds_and_failures_exit_non_zero_leaving_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("es.twr");
    let ok = tickwire()
        .args(["import", "--from", "dbn"])
        .arg(data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("wrote 2288 ticks"));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("120 trades, 2168 quotes"));

    // A Tardis CSV given as DBN.
    let bad = dir.path().join("bad.twr");
    let csv = data("tardis_binance-futures_BTCUSDT_20200222_trades.csv");
    let r = tickwire()
        .args(["import", "--from", "dbn"])
        .arg(&csv)
        .arg("--out")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("tardis_binance-futures_BTCUSDT_20200222_trades.csv: not a DBN file"),
        "{err}"
    );
    assert_eq!(files_in(dir.path()), ["es.twr"], "nothing else left behind");
}

#[test]
fn replay_and_record_report_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = tickwire()
        .args(["replay", "replay-data/btcusdt-20200222.twr.zst", "--to"])
        .arg(format!("ws://127.0.0.1:{port}/v1/publish"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot connect to ws://127.0.0.1:"));

    let out = dir.path().join("r.twr");
    let r = tickwire()
        .args(["record", "--url"])
        .arg(format!("ws://127.0.0.1:{port}"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("/v1/stream"));
    assert!(files_in(dir.path()).is_empty());
}
