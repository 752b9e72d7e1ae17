//! Property tests (proptest, bounded): the parsers that take input from the
//! network or from files never panic, refuse what is wrong with an error,
//! and read back exactly what was written.
//!
//! Case counts are kept small enough for the normal `cargo test` run;
//! `PROPTEST_CASES=100000 cargo test --test properties` searches harder.
//! Failures proptest finds are saved under `proptest-regressions/` and
//! replayed first on later runs; a crash found becomes a named test below.

use std::sync::Arc;

use proptest::prelude::*;
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side, validate_symbol};
use tickwire::recordings::format::{RecordingReader, RecordingWriter};
use tickwire::wire::publish::{Published, parse_publish};
use tickwire::wire::request::{Request, parse_request};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// JSON-ish text built from the pieces control and publish messages are
/// made of, so generated inputs get past the JSON parser and reach the
/// field checks, not only its syntax errors.
fn jsonish() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("\"op\"".to_owned()),
        Just("\"subscribe\"".to_owned()),
        Just("\"unsubscribe\"".to_owned()),
        Just("\"ping\"".to_owned()),
        Just("\"symbols\"".to_owned()),
        Just("\"channels\"".to_owned()),
        Just("\"trade\"".to_owned()),
        Just("\"quote\"".to_owned()),
        Just("\"snapshot\"".to_owned()),
        Just("\"id\"".to_owned()),
        Just("\"type\"".to_owned()),
        Just("\"sym\"".to_owned()),
        Just("\"ts\"".to_owned()),
        Just("\"px\"".to_owned()),
        Just("\"qty\"".to_owned()),
        Just("\"side\"".to_owned()),
        Just("\"bid\"".to_owned()),
        Just("\"ask\"".to_owned()),
        Just("\"bsz\"".to_owned()),
        Just("\"asz\"".to_owned()),
        Just("\"*\"".to_owned()),
        Just("\"AAPL\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-0".to_owned()),
        Just("1e-7".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036.854775808".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "\"[ -~]{0,12}\"",
        "\\PC{0,4}",
    ];
    let punct = prop_oneof![
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(":"),
        Just(","),
        Just(" ")
    ];
    prop::collection::vec((atom, punct), 0..24)
        .prop_map(|v| v.into_iter().map(|(a, p)| a + p).collect::<String>())
}

fn symbol() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.\\-_/:]{1,32}"
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell), Just(Side::Unknown)]
}

fn tick() -> impl Strategy<Value = NewTick> {
    let size = 0i64..=i64::MAX;
    let event = prop_oneof![
        (any::<i64>(), size.clone(), side()).prop_map(|(px, qty, side)| Event::Trade {
            px: Fixed(px),
            qty: Fixed(qty),
            side
        }),
        (any::<i64>(), size.clone(), any::<i64>(), size).prop_map(|(bid, bsz, ask, asz)| {
            Event::Quote {
                bid: Fixed(bid),
                bsz: Fixed(bsz),
                ask: Fixed(ask),
                asz: Fixed(asz),
            }
        }),
    ];
    (symbol(), any::<u64>(), event).prop_map(|(sym, ts, event)| NewTick {
        book: None,
        sym: Arc::from(sym.as_str()),
        ts,
        event,
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn control_parser_never_panics_on_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_request(&mut bytes);
    }

    #[test]
    fn control_parser_never_panics_on_jsonish_text(text in jsonish()) {
        let mut bytes = text.into_bytes();
        if let Ok(Request::Subscribe { symbols, .. } | Request::Unsubscribe { symbols, .. }) =
            parse_request(&mut bytes)
        {
            // Whatever it accepts is valid.
            for s in &symbols.names {
                prop_assert!(validate_symbol(s).is_ok(), "accepted symbol {s:?}");
            }
        }
    }

    #[test]
    fn subscribe_requests_parse_to_what_was_asked(
        id in any::<i64>(),
        syms in prop::collection::vec(symbol(), 1..8),
        snapshot in any::<bool>(),
    ) {
        let text = serde_json::json!({"op":"subscribe","id":id,"symbols":syms,"snapshot":snapshot}).to_string();
        let mut bytes = text.into_bytes();
        match parse_request(&mut bytes) {
            Ok(Request::Subscribe { id: got, symbols, snapshot: snap, .. }) => {
                prop_assert_eq!(got, Some(id));
                prop_assert_eq!(snap, snapshot);
                let mut want: Vec<String> = Vec::new();
                for s in &syms {
                    if !want.contains(s) {
                        want.push(s.clone());
                    }
                }
                prop_assert_eq!(symbols.names, want);
            }
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn publish_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_publish(&bytes);
    }

    #[test]
    fn publish_parser_never_panics_on_jsonish_text(text in jsonish()) {
        for item in parse_publish(text.as_bytes()) {
            if let Ok(Published::Tick(t)) = item {
                prop_assert!(validate_symbol(&t.sym).is_ok());
            }
        }
    }

    #[test]
    fn published_ticks_parse_back_exactly(ticks in prop::collection::vec(tick(), 1..6)) {
        let mut text = b"[".to_vec();
        for (i, t) in ticks.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            tickwire::recordings::format::write_tick_json(&mut text, t);
        }
        text.push(b']');
        let got: Vec<Published> = parse_publish(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e:?} for {}", String::from_utf8_lossy(&text))))?;
        let want: Vec<Published> = ticks.into_iter().map(Published::Tick).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn every_i64_decimal_round_trips(n in any::<i64>()) {
        let mut out = Vec::new();
        Fixed(n).write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        prop_assert!(!text.contains(['e', 'E']), "{text}");
        prop_assert_eq!(Fixed::parse(&text), Ok(Fixed(n)), "{}", text);
    }

    #[test]
    fn decimal_parser_never_panics(text in "[-+0-9.eE]{0,40}|\\PC{0,40}") {
        let _ = Fixed::parse(&text);
    }

    #[test]
    fn decimals_with_exponents_agree_with_plain_ones(units in any::<i64>(), shift in 0u32..6) {
        // n units = n × 1e-9 = (n × 10^-shift) × 10^(shift-9): the same
        // digits with a point `shift` places from the right.
        let digits = units.unsigned_abs().to_string();
        let sign = if units < 0 { "-" } else { "" };
        let shift = (shift as usize).min(digits.len() - 1);
        let (int, frac) = digits.split_at(digits.len() - shift);
        let mantissa = if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") };
        let exp = format!("{sign}{mantissa}e-{}", 9 - shift);
        prop_assert_eq!(Fixed::parse(&exp), Ok(Fixed(units)), "{}", exp);
    }
}

/// A small valid recording in `ext`'s encoding.
fn recording(ticks: &[NewTick], ext: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("r.{ext}"));
    let mut w = RecordingWriter::create(&path).unwrap();
    for t in ticks {
        w.write(t).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Reads everything; `Ok` only if the whole file read without error. The
/// number of items is bounded by the input size, so a reader stuck in a
/// loop fails the test instead of hanging it.
fn read(bytes: Vec<u8>) -> Result<Vec<NewTick>, String> {
    let bound = bytes.len() + 2;
    let reader = RecordingReader::from_owned("prop", bytes).map_err(|e| e.to_string())?;
    let mut ticks = Vec::new();
    for item in reader.take(bound) {
        ticks.push(item.map_err(|e| e.to_string())?);
    }
    assert!(ticks.len() < bound, "the reader did not stop");
    Ok(ticks)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::Flip(i, x) => bytes[i % n] ^= x,
        Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
        Mutation::Delete(i) => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn the_recording_reader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = read(bytes);
    }

    #[test]
    fn the_recording_reader_never_panics_behind_a_valid_header(
        binary in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = if binary {
            b"tickwire.rec\x01\x00\x00\x00".to_vec()
        } else {
            b"{\"format\":\"tickwire.jsonl\",\"version\":1}\n".to_vec()
        };
        bytes.extend(body);
        let _ = read(bytes);
    }

    /// A mutated file reads as an error or as ticks that are still well
    /// formed and as many as were written (the end record counts them).
    /// The format has no checksum, so a flipped price byte can read as a
    /// different price; a cut or a shifted record never reads as success.
    #[test]
    fn a_mutated_recording_is_an_error_or_well_formed_ticks(
        ticks in prop::collection::vec(tick(), 1..12),
        ext in prop_oneof![Just("twr"), Just("jsonl"), Just("twr.zst"), Just("jsonl.zst")],
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let original = recording(&ticks, ext);
        prop_assert_eq!(read(original.clone()), Ok(ticks.clone()));
        let mut bytes = original;
        let mut cut = false;
        for m in &mutations {
            if bytes.is_empty() {
                break;
            }
            cut |= matches!(m, Mutation::Truncate(_));
            apply(&mut bytes, m);
        }
        if let Ok(got) = read(bytes) {
            prop_assert!(!cut || got == ticks, "a truncated file read as complete");
            prop_assert_eq!(got.len(), ticks.len());
            for t in &got {
                prop_assert!(validate_symbol(&t.sym).is_ok(), "{:?}", t.sym);
                let sizes_ok = match &t.event {
                    &Event::Trade { qty, .. } => qty.raw() >= 0,
                    &Event::Quote { bsz, asz, .. } => bsz.raw() >= 0 && asz.raw() >= 0,
                    Event::Book(_) => t.book.as_ref().is_some_and(|b| {
                        b.levels().iter().all(|l| l.sz.raw() >= 0)
                    }),
                    Event::Bar(b) => b.volume.raw() >= 0 && b.buy_volume.raw() >= 0,
                };
                prop_assert!(sizes_ok || ext.starts_with("twr"), "negative size from JSON: {t:?}");
            }
        }
    }
}
