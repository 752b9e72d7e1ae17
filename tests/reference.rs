//! Reference data (`--symbols-file`) on `/v1/symbols?ref=1`, over a real
//! socket; plain `/v1/symbols` keeps its array of names.

mod common;

use std::sync::Arc;

use common::*;
use tickwire::server::reference::Reference;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbols_with_ref_carry_tick_size_decimals_currency_and_lot_size() {
    let mut c = config();
    c.reference = Arc::new(
        Reference::parse(
            "[[symbol]]\nsym = \"IBM\"\ntick_size = \"0.01\"\ncurrency = \"USD\"\nlot_size = \"1\"\n",
        )
        .unwrap(),
    );
    let h = start(c);
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("IBM", 1, "181.85", "100"), trade("ZZZ", 2, "1", "1")])
        .await;
    assert_eq!(
        symbols_with_ref(addr).await,
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

/// #15 item 8: a publisher's `ref` message replaces a symbol's reference
/// data (over the `--symbols-file` entry), visible on `/v1/symbols?ref=1`
/// as soon as the publisher's ping barrier answers; a ref with no field
/// removes it; bad values are refused with the message's `id`, naming
/// what was wrong, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_ref_message_is_served_at_once_and_bad_ones_are_refused() {
    let mut c = config();
    c.max_symbols = 3;
    c.reference = Arc::new(
        Reference::parse("[[symbol]]\nsym = \"ESH1\"\ntick_size = \"0.5\"\ncurrency = \"EUR\"\n")
            .unwrap(),
    );
    let h = start(c);
    let addr = h.addr();
    let mut publ = publisher(addr).await;
    publ.publish(&[trade("ESH1", 1, "5000.25", "1"), trade("NQ", 2, "1", "1")])
        .await;
    publ.send_text(
        r#"[{"type":"ref","sym":"ESH1","tick_size":"0.25","decimals":2,"currency":"USD","lot_size":1,"id":1},{"type":"ref","sym":"NQ","tick_size":0.25,"id":2}]"#,
    )
    .await;
    publ.sync().await;
    assert_eq!(
        symbols_with_ref(addr).await,
        serde_json::json!([
            {"sym":"ESH1","tick_size":"0.25","lot_size":"1","decimals":2,"currency":"USD"},
            {"sym":"NQ","tick_size":"0.25","decimals":2}
        ])
    );
    // Newest wins, whole; an empty ref clears.
    publ.send_text(r#"{"type":"ref","sym":"ESH1","currency":"USD"}"#)
        .await;
    publ.send_text(r#"{"type":"ref","sym":"NQ"}"#).await;
    publ.sync().await;
    assert_eq!(
        symbols_with_ref(addr).await,
        serde_json::json!([{"sym":"ESH1","currency":"USD"},{"sym":"NQ"}])
    );
    for (msg, code, words) in [
        (
            r#"{"type":"ref","sym":"ESH1","tick_size":"-0.25","id":11}"#,
            "bad_field",
            "above zero",
        ),
        (
            r#"{"type":"ref","sym":"ESH1","decimals":10,"id":12}"#,
            "bad_field",
            "0 to 9",
        ),
        (
            r#"{"type":"ref","sym":"ESH1","currency":"<b>","id":13}"#,
            "bad_field",
            "letters and digits",
        ),
        (
            r#"{"type":"ref","sym":"ESH1","tick":"0.25","id":14}"#,
            "bad_field",
            "unknown field `tick`",
        ),
        (
            r#"{"type":"ref","sym":"E SH1","currency":"USD","id":15}"#,
            "invalid_symbol",
            "",
        ),
        // The table holds ESH1, plus two new symbols at most (--max-symbols 3).
        (
            r#"[{"type":"ref","sym":"X1","currency":"USD"},{"type":"ref","sym":"X2","currency":"USD"},{"type":"ref","sym":"X3","currency":"USD","id":16}]"#,
            "too_many_symbols",
            "--max-symbols",
        ),
    ] {
        publ.send_text(msg).await;
        let e = publ.recv_json().await;
        assert_eq!(e["type"], "error", "{msg}: {e}");
        assert_eq!(e["code"], code, "{msg}: {e}");
        assert_eq!(
            e["id"].as_i64(),
            msg.rsplit("\"id\":")
                .next()
                .and_then(|t| t.trim_end_matches(['}', ']']).parse().ok()),
            "{msg}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(words), "{msg}: {e}");
    }
    publ.sync().await;
    assert_eq!(
        symbols_with_ref(addr).await,
        serde_json::json!([{"sym":"ESH1","currency":"USD"},{"sym":"NQ"}])
    );
}
