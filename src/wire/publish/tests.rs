//! The publish parser checked message by message.

use super::*;

fn one(s: &str) -> Result<Published, ProtocolError> {
    let mut v = parse_publish(s.as_bytes());
    assert_eq!(v.len(), 1);
    v.pop().unwrap()
}

#[test]
fn parses_ticks_exactly() {
    let t = one(r#"{"type":"trade","sym":"AAPL","ts":1700000000123456789,"px":189.23,"qty":100,"side":"B"}"#).unwrap();
    assert_eq!(
        t,
        Published::Tick(NewTick {
            book: None,
            sym: "AAPL".into(),
            ts: 1_700_000_000_123_456_789,
            event: Event::Trade {
                px: Fixed(189_230_000_000),
                qty: Fixed(100_000_000_000),
                side: Side::Buy
            },
        })
    );
    let q = one(r#"{"type":"quote","sym":"BTC/USDT","ts":1,"bid":"9650.5","bsz":0.001,"ask":9650.51,"asz":1e-3,"seq":7,"rx":8}"#).unwrap();
    let Published::Tick(q) = q else { panic!() };
    assert_eq!(
        q.event,
        Event::Quote {
            bid: Fixed(9_650_500_000_000),
            bsz: Fixed(1_000_000),
            ask: Fixed(9_650_510_000_000),
            asz: Fixed(1_000_000)
        }
    );
    // A trade without a side is of unknown side.
    let Published::Tick(t) = one(r#"{"type":"trade","sym":"X","ts":1,"px":1,"qty":1}"#).unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        t.event,
        Event::Trade {
            side: Side::Unknown,
            ..
        }
    ));
}

#[test]
fn refuses_bad_ticks_and_says_why() {
    for (s, code, needle) in [
        ("{", ErrorCode::BadJson, "the end of the message"),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1}"#,
            ErrorCode::BadField,
            "qty",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1.0000000001,"qty":1}"#,
            ErrorCode::BadField,
            "9 decimal",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":-1}"#,
            ErrorCode::BadField,
            "negative",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":1,"side":"X"}"#,
            ErrorCode::BadField,
            "side",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":1,"bid":1}"#,
            ErrorCode::BadField,
            "bid",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":-1,"px":1,"qty":1}"#,
            ErrorCode::BadField,
            "ts",
        ),
        (
            r#"{"type":"trade","sym":"A","px":1,"qty":1}"#,
            ErrorCode::BadField,
            "ts",
        ),
        (
            r#"{"type":"book","sym":"A","ts":1}"#,
            ErrorCode::BadField,
            "bids",
        ),
        (
            r#"{"type":"book","sym":"A","ts":1,"bids":[[1,-2]]}"#,
            ErrorCode::BadField,
            "bids[0]: field `size` is negative",
        ),
        (
            r#"{"type":"book","sym":"A","ts":1,"asks":[["x",2]]}"#,
            ErrorCode::BadField,
            "asks[0]: field `price`",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":1,"bids":[]}"#,
            ErrorCode::BadField,
            "bids",
        ),
        (
            r#"{"type":"bok","sym":"A","ts":1}"#,
            ErrorCode::BadField,
            "type",
        ),
        (
            r#"{"type":"trade","sym":"A B","ts":1,"px":1,"qty":1}"#,
            ErrorCode::InvalidSymbol,
            "A B",
        ),
        (
            r#"{"type":"quote","sym":"A","ts":1,"bid":1,"bsz":1,"ask":1,"asz":1,"bidsz":1}"#,
            ErrorCode::BadField,
            "bidsz",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":"abc","qty":1}"#,
            ErrorCode::BadField,
            "px",
        ),
        (
            r#"{"type":"trade","sym":"A","ts":1,"px":true,"qty":1}"#,
            ErrorCode::BadField,
            "px",
        ),
    ] {
        let e = one(s).unwrap_err();
        assert_eq!(e.code, code, "{s}: {e}");
        assert!(e.message.contains(needle), "{s}: {e}");
    }
}

#[test]
fn parses_book_snapshots_and_diffs() {
    let b = one(
        r#"{"type":"book","sym":"X","ts":5,"snap":true,"bids":[["100.5",2]],"asks":[[101,"0.5"]]}"#,
    )
    .unwrap();
    let Published::Book { sym, ts, change } = b else {
        panic!()
    };
    assert_eq!((&*sym, ts), ("X", 5));
    let BookChange::Snapshot(l) = change else {
        panic!()
    };
    assert_eq!(l.len(), 2);
    assert_eq!(
        (l[0].side, l[0].px),
        (BookSide::Bid, Fixed(100_500_000_000))
    );
    assert_eq!((l[1].side, l[1].sz), (BookSide::Ask, Fixed(500_000_000)));
    let d = one(r#"{"type":"book","sym":"X","ts":5,"asks":[[101,0]]}"#).unwrap();
    assert!(matches!(
        d,
        Published::Book {
            change: BookChange::Diff(_),
            ..
        }
    ));
}

#[test]
fn a_subscribe_sent_here_is_pointed_to_the_stream_with_its_id() {
    let e = one(r#"{"op":"subscribe","id":7,"symbols":["AAPL"]}"#).unwrap_err();
    assert_eq!(e.id, Some(7));
    assert_eq!(e.code, ErrorCode::UnknownOp);
    assert!(e.message.contains("/v1/stream"), "{e}");
    assert!(!e.message.contains("expected one of"), "serde's words: {e}");
    let e = one(r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":1,"id":9,"xx":1}"#).unwrap_err();
    assert_eq!((e.id, e.code), (Some(9), ErrorCode::BadField));
    assert!(
        e.message
            .starts_with("unknown field `xx`; a tick's fields are"),
        "{e}"
    );
    let e = one(r#"{"type":"trade","sym":5,"id":3}"#).unwrap_err();
    assert_eq!(e.id, Some(3));
    assert_eq!(e.message, "field `sym` must be a string");
    let e = one(r#"{"type":"trade","sym":"A","ts":1,"px":1,"id":4}"#).unwrap_err();
    assert_eq!(e.id, Some(4), "refusals after parsing carry the id too");
    let e = one(r#"{"type":"trade","sym":tru}"#).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadJson);
    assert_eq!(
        e.message,
        "the message is not valid JSON: expected true, false or null at character 26 ('}')"
    );
}

#[test]
fn arrays_report_each_bad_element_by_position() {
    let out = parse_publish(
        br#"[{"type":"trade","sym":"A","ts":1,"px":1,"qty":1},{"type":"trade"},{"op":"ping","id":5}]"#,
    );
    assert!(matches!(out[0], Ok(Published::Tick(_))));
    let e = out[1].as_ref().unwrap_err();
    assert!(e.message.starts_with("tick 2 of 3:"), "{e}");
    assert_eq!(out[2], Ok(Published::Ping { id: Some(5) }));
}

#[test]
fn a_bar_message_publishes_back_as_the_same_bar() {
    use crate::model::bar::{Bar, BarInterval};
    use crate::model::tick::{Channel, KeyId, Tick};
    let bar = Bar {
        interval: BarInterval::M1,
        start: 1_700_000_040_000_000_000,
        open: Fixed(10_500_000_000),
        high: Fixed(12_000_000_000),
        low: Fixed(9_000_000_000),
        close: Fixed(9_000_000_000),
        volume: Fixed(6_000_000_000),
        quote_volume: Fixed(59_000_000_000),
        buy_volume: Fixed(2_000_000_000),
        trades: 3,
        closed: true,
    };
    let tick = Tick {
        key: KeyId::new(0, Channel::Bar1m),
        sym: "AAPL".into(),
        seq: 9,
        ts: 1_700_000_041_000_000_000,
        rx: 1,
        event: Event::Bar(Box::new(bar.clone())),
    };
    let mut json = Vec::new();
    crate::wire::encode::tick_json(&mut json, &tick, true);
    let text = String::from_utf8(json).unwrap();
    assert_eq!(
        text,
        r#"{"type":"bar","sym":"AAPL","seq":9,"ts":1700000041000000000,"rx":1,"interval":"1m","start":1700000040000000000,"end":1700000100000000000,"open":10.5,"high":12,"low":9,"close":9,"volume":6,"quote_volume":59,"buy_volume":2,"trades":3,"closed":true,"snap":true}"#
    );
    let Ok(Published::Tick(t)) = one(&text) else {
        panic!("{text}")
    };
    assert_eq!((t.ts, t.event), (tick.ts, Event::Bar(Box::new(bar))));
}

#[test]
fn bad_bars_are_refused_precisely() {
    let base = r#""type":"bar","sym":"A","ts":1,"start":60000000000,"open":1,"high":2,"low":1,"close":2,"volume":3"#;
    for (extra, want) in [
        (
            r#","interval":"5m""#,
            "field `interval` is `5m`; it must be \"1s\", \"1m\", \"1h\" or \"1d\"",
        ),
        (
            "",
            "field `interval` is missing; it is \"1s\", \"1m\", \"1h\" or \"1d\"",
        ),
        (
            r#","interval":"1h""#,
            "field `start` is 60000000000, not the start of a 1h interval (a multiple of 3600000000000 ns)",
        ),
        (
            r#","interval":"1m","px":1"#,
            "field `px` does not belong to a bar",
        ),
        (
            r#","interval":"1m","trades":-1"#,
            "field `trades` is `-1`; it must be a non-negative integer",
        ),
    ] {
        let e = one(&format!("{{{base}{extra}}}")).unwrap_err();
        assert_eq!(e.message, want, "{extra}");
    }
    let e = one(r#"{"type":"bar","sym":"A","ts":1,"interval":"1s","start":0,"open":5,"high":4,"low":1,"close":2,"volume":3}"#).unwrap_err();
    assert_eq!(
        e.message,
        "bar prices are inconsistent: low 1 and high 4 must bound open 5 and close 2"
    );
    let e = one(r#"{"type":"trade","sym":"A","ts":1,"px":1,"qty":1,"interval":"1s"}"#).unwrap_err();
    assert_eq!(e.message, "field `interval` does not belong to a trade");
}
