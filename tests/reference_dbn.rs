//! #15 item 8: reference data from Databento `definition` records, end to
//! end: DBN files written by the `dbn` crate's own encoder (a definitions
//! file and a trades file of the same instrument ids, as Databento delivers
//! them), `tickwire import --from dbn` joining them into one recording
//! (reference records among the ticks), `convert` to JSON lines and back,
//! and `tickwire serve --replay` answering `/v1/symbols?ref=1` over a real
//! socket.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use dbn::encode::{DbnEncoder, EncodeRecord};
use dbn::{InstrumentDefMsg, MetadataBuilder, SType, Schema, TradeMsg};

const BIN: &str = env!("CARGO_BIN_EXE_tickwire");
/// 2024-07-01T13:30:00Z: the session's first definitions.
const T0: u64 = 1_719_840_600_000_000_000;
const SEC: u64 = 1_000_000_000;

fn meta(schema: Schema, stype_in: SType, symbol: &str) -> dbn::Metadata {
    MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(schema))
        .start(T0)
        .stype_in(Some(stype_in))
        .stype_out(SType::InstrumentId)
        .symbols(vec![symbol.to_owned()])
        .build()
}

fn definition(id: u32, ts: u64, raw: &str, tick: i64, lot: i32, action: u8) -> InstrumentDefMsg {
    let mut m = InstrumentDefMsg {
        ts_recv: ts,
        min_price_increment: tick,
        min_lot_size_round_lot: lot,
        security_update_action: action as std::ffi::c_char,
        ..Default::default()
    };
    m.hd.instrument_id = id;
    m.hd.ts_event = ts;
    for (d, s) in m.currency.iter_mut().zip(b"USD") {
        *d = *s as std::ffi::c_char;
    }
    for (d, s) in m.raw_symbol.iter_mut().zip(raw.bytes()) {
        *d = s as std::ffi::c_char;
    }
    m
}

/// The definitions: ESU4 (instrument 42) at the open with a round lot of
/// 1, then modified mid-session to 2; NQU4 (43), which has no trades.
fn write_definitions(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc =
        DbnEncoder::new(file, &meta(Schema::Definition, SType::Parent, "ES.FUT")).unwrap();
    for d in [
        definition(42, T0, "ESU4", 250_000_000, 1, b'A'),
        definition(43, T0, "NQU4", 250_000_000, 1, b'A'),
        definition(42, T0 + 3 * SEC / 2, "ESU4", 250_000_000, 2, b'M'),
    ] {
        enc.encode_record(&d).unwrap();
    }
}

/// Trades of instrument 42, requested as the continuous contract `ES.c.0`
/// (so their symbol is not the definition's raw symbol: only the
/// instrument id joins them).
fn write_trades(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc =
        DbnEncoder::new(file, &meta(Schema::Trades, SType::Continuous, "ES.c.0")).unwrap();
    for i in 1..=3u64 {
        let mut t = TradeMsg {
            price: 5_500_250_000_000 + i as i64 * 250_000_000,
            size: 1,
            ts_recv: T0 + i * SEC,
            action: b'T' as std::ffi::c_char,
            side: b'B' as std::ffi::c_char,
            ..Default::default()
        };
        t.hd.instrument_id = 42;
        t.hd.ts_event = t.ts_recv;
        enc.encode_record(&t).unwrap();
    }
}

fn tickwire(args: &[&str], paths: &[&Path]) -> String {
    let out = Command::new(BIN).args(args).args(paths).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tickwire {args:?}: {all}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tickwire cat` of a recording.
fn cat(rec: &Path) -> String {
    tickwire(&["cat"], &[rec])
}

/// Serves `rec` with `serve --replay` and returns `/v1/symbols?ref=1` once
/// the played symbol is listed.
async fn served_reference(dir: &Path, rec: &Path) -> serde_json::Value {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "max",
            "--addr-file",
        ])
        .arg(&addr_file)
        .arg("--replay")
        .arg(rec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = wait_for_addr_file(&addr_file);
    let mut listed = serde_json::Value::Null;
    for _ in 0..200 {
        listed = symbols_with_ref(addr).await;
        if listed.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbn_definitions_join_the_trades_and_are_served_after_replay() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("glbx-definition.dbn");
    let trades = dir.path().join("glbx-trades.dbn");
    write_definitions(&defs);
    write_trades(&trades);

    // Definitions first (in time order: written as read), then the other
    // order (the definitions fall before the trades: read again, sorted):
    // the same recording.
    let a: PathBuf = dir.path().join("a.twr");
    let b: PathBuf = dir.path().join("b.twr");
    let out = Command::new(BIN)
        .args(["import", "--from", "dbn", "--out"])
        .args([&a, &defs, &trades])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("glbx-definition.dbn: 0 trades, 0 quotes, 3 definitions"),
        "{said}"
    );
    tickwire(&["import", "--from", "dbn", "--out"], &[&b, &trades, &defs]);
    let printed = cat(&a);
    assert_eq!(printed, cat(&b));
    let lines: Vec<serde_json::Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["type"].as_str().unwrap(), l["sym"].as_str().unwrap()))
        .collect();
    // Joined by instrument id: ESU4's definitions under ES.c.0, placed by
    // ts_recv (the modification between the first and second trades);
    // NQU4 under its own raw symbol.
    assert_eq!(
        kinds,
        [
            ("ref", "ES.c.0"),
            ("ref", "NQU4"),
            ("trade", "ES.c.0"),
            ("ref", "ES.c.0"),
            ("trade", "ES.c.0"),
            ("trade", "ES.c.0"),
        ],
        "{printed}"
    );
    assert_eq!(
        lines[3],
        serde_json::json!({"type":"ref","sym":"ES.c.0","tick_size":"0.25","lot_size":"2","decimals":2,"currency":"USD"})
    );

    // Through JSON lines and back, the reference records survive.
    let j = dir.path().join("a.jsonl");
    let c = dir.path().join("c.twr.zst");
    tickwire(&["convert", "--out"], &[&j, &a]);
    tickwire(&["convert", "--out"], &[&c, &j]);
    assert_eq!(cat(&c), printed);

    // `tickwire replay` into a running server publishes them as `ref`
    // messages before the ticks.
    let h = start(config());
    let url = format!("ws://{}/v1/publish", h.addr());
    tickwire(&["replay", "--speed", "max", "--to", &url], &[&a]);
    assert_eq!(
        symbols_with_ref(h.addr()).await,
        serde_json::json!([{"sym":"ES.c.0","tick_size":"0.25","lot_size":"2","decimals":2,"currency":"USD"}])
    );

    // The newest definition wins on the replaying server's /v1/symbols?ref=1
    // (NQU4 has no tick: not a seen symbol, not listed).
    for rec in [&a, &j] {
        assert_eq!(
            served_reference(dir.path(), rec).await,
            serde_json::json!([{"sym":"ES.c.0","tick_size":"0.25","lot_size":"2","decimals":2,"currency":"USD"}]),
            "{}",
            rec.display()
        );
    }
}
