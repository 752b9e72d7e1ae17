//! Reference data (`--symbols-file`) on `/v1/symbols?ref=1`, over a real
//! socket; plain `/v1/symbols` keeps its array of names.

mod common;

use std::sync::Arc;

use common::*;
use tickwire::server::reference::Reference;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbols_with_ref_carry_tick_size_decimals_currency_and_lot_size() {
    let mut c = config();
    c.reference = Some(Arc::new(
        Reference::parse(
            "[[symbol]]\nsym = \"IBM\"\ntick_size = \"0.01\"\ncurrency = \"USD\"\nlot_size = \"1\"\n",
        )
        .unwrap(),
    ));
    let h = start(c);
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("IBM", 1, "181.85", "100"), trade("ZZZ", 2, "1", "1")])
        .await;
    let body = http_get(addr, "/v1/symbols?ref=1").await;
    let json = body.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"sym":"IBM","tick_size":"0.01","lot_size":"1","decimals":2,"currency":"USD"},
            {"sym":"ZZZ"}
        ])
    );
    let body = http_get(addr, "/v1/symbols").await;
    assert!(body.ends_with("[\"IBM\",\"ZZZ\"]"), "{body}");
}

#[test]
fn serve_refuses_a_bad_symbols_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ref.toml");
    std::fs::write(&f, "[[symbol]]\nsym = \"IBM\"\ntick_size = \"cheap\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--symbols-file"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ref.toml") && err.contains("tick_size = \"cheap\""),
        "{err}"
    );
}
