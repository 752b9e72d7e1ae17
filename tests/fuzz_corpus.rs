//! Fuzzing from a committed seed corpus (`tests/fuzz-corpus/TARGET/`): every
//! input tickwire takes from the network or from disk, starting from real
//! examples and mutated by proptest (byte flips, inserts, deletes, cuts,
//! splices of two seeds), so generated inputs stay close to valid ones and
//! reach deep into each parser. Targets:
//!
//! - `control`: a subscriber's control message (`protocol::parse_request`)
//! - `publish`: a publisher's message (`protocol::parse_publish`)
//! - `recording`: a recording file of any encoding (`RecordingReader`)
//! - `bus`: a tick payload from NATS (`bus::payload::decode`) and a bus
//!   subject (`bus::subject`)
//!
//! Bounded for the normal `cargo test` run (CI runs it there);
//! `FUZZ_CASES=200000 cargo test --release --test fuzz_corpus` searches
//! longer. A crashing input found this way goes into its target's folder as
//! a new seed (named after the bug), so it is replayed on every run, on top
//! of proptest's own `proptest-regressions/` replay.

use std::path::PathBuf;

use proptest::prelude::*;
use tickwire::bus::payload;
use tickwire::bus::subject::{Subjects, unescape};
use tickwire::model::tick::validate_symbol;
use tickwire::recordings::format::RecordingReader;
use tickwire::wire::publish::parse_publish;
use tickwire::wire::request::parse_request;

/// A target's seeds. Files named `bad-*` are inputs the parser must refuse
/// (with an error, not a panic); the others must parse.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    named_seeds(target).into_iter().map(|(_, b)| b).collect()
}

fn named_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Replace a range with bytes that parsers care about.
    Token(usize, &'static str),
    /// Append the tail of another seed.
    Splice(usize, usize),
}

const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-",
    "e999",
    "\\u0000",
    "\\ud800",
    "9223372036854775808",
    "0.0000000001",
    "\"*\"",
    "\"op\"",
    "\"sym\"",
    ".",
    "%",
    "%2E",
    "\0",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(s, i)| Mutation::Splice(s, i)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, corpus: &[Vec<u8>]) {
    let n = bytes.len();
    match *m {
        Mutation::Flip(i, x) if n > 0 => bytes[i % n] ^= x,
        Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
        Mutation::Delete(i) if n > 0 => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) if n > 0 => bytes.truncate(i % n),
        Mutation::Token(i, t) => {
            let at = i % (n + 1);
            let end = (at + t.len().min(3)).min(n);
            bytes.splice(at..end, t.bytes());
        }
        Mutation::Splice(s, i) => {
            let other = &corpus[s % corpus.len()];
            let from = i % (other.len() + 1);
            bytes.extend_from_slice(&other[from..]);
        }
        _ => {}
    }
}

fn mutated() -> impl Strategy<Value = (usize, Vec<Mutation>)> {
    (any::<usize>(), prop::collection::vec(mutation(), 0..6))
}

fn input(corpus: &[Vec<u8>], (pick, ms): &(usize, Vec<Mutation>)) -> Vec<u8> {
    let mut bytes = corpus[pick % corpus.len()].clone();
    for m in ms {
        apply(&mut bytes, m, corpus);
    }
    bytes
}

#[test]
fn every_seed_is_understood() {
    for (name, s) in named_seeds("control") {
        let mut b = s.clone();
        let ok = parse_request(&mut b).is_ok();
        assert_eq!(ok, !name.starts_with("bad-"), "{name}");
    }
    for (name, s) in named_seeds("publish") {
        let ok = parse_publish(&s).iter().all(|r| r.is_ok());
        assert_eq!(ok, !name.starts_with("bad-"), "{name}");
    }
    for s in seeds("recording") {
        let ticks: Result<Vec<_>, _> = RecordingReader::from_owned("seed", s).unwrap().collect();
        assert_eq!(ticks.unwrap().len(), 3);
    }
    for s in seeds("bus") {
        payload::decode(&s).unwrap();
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn control_messages(m in mutated()) {
        let corpus = seeds("control");
        let mut bytes = input(&corpus, &m);
        let _ = parse_request(&mut bytes);
    }

    #[test]
    fn published_messages(m in mutated()) {
        let corpus = seeds("publish");
        let bytes = input(&corpus, &m);
        for item in parse_publish(&bytes) {
            if let Ok(tickwire::wire::publish::Published::Tick(t)) = item {
                prop_assert!(validate_symbol(&t.sym).is_ok());
            }
        }
    }

    #[test]
    fn recording_files(m in mutated()) {
        let corpus = seeds("recording");
        let bytes = input(&corpus, &m);
        let bound = bytes.len() + 2;
        if let Ok(reader) = RecordingReader::from_owned("fuzz", bytes) {
            let n = reader.take(bound).count();
            prop_assert!(n < bound, "the reader did not stop");
        }
    }

    #[test]
    fn bus_payloads_and_subjects(m in mutated()) {
        let corpus = seeds("bus");
        let bytes = input(&corpus, &m);
        if let Ok(t) = payload::decode(&bytes) {
            prop_assert!(validate_symbol(&t.sym).is_ok());
            prop_assert!(t.seq > 0);
        }
        // The same bytes as a subject token: refused or exactly reversible.
        if let Ok(text) = std::str::from_utf8(&bytes)
            && let Some(sym) = unescape(text)
        {
            let s = Subjects::new("t");
            let subject = s.tick(tickwire::model::tick::Channel::Trade, &sym);
            prop_assert_eq!(subject, format!("t.trade.{text}"));
        }
    }
}
