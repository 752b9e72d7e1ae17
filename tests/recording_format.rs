//! The recording format: round trips in every encoding, truncation and
//! corruption at every byte, streaming reads of a file being written.

use std::path::Path;
use std::sync::Arc;

use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::recordings::format::{RecordingError, RecordingReader, RecordingWriter, read_all};

fn sample() -> Vec<NewTick> {
    let mut v = Vec::new();
    let syms: Vec<Arc<str>> = ["AAPL", "BRK.B", "BTC/USDT", "ES-U4", &"X".repeat(32)]
        .iter()
        .map(|s| Arc::from(*s))
        .collect();
    for i in 0..500u64 {
        let sym = syms[(i % 5) as usize].clone();
        let event = if i % 3 == 0 {
            Event::Quote {
                bid: Fixed(-(i as i64) * 1_000_000_007),
                bsz: Fixed(i as i64 * 3),
                ask: Fixed(i64::MAX - i as i64),
                asz: Fixed(1),
            }
        } else {
            Event::Trade {
                px: Fixed(189_230_000_000 + i as i64),
                qty: Fixed(i64::MAX - i as i64),
                side: [Side::Buy, Side::Sell, Side::Unknown][(i % 3) as usize],
            }
        };
        v.push(NewTick {
            book: None,
            sym,
            ts: 1_700_000_000_000_000_000 + i / 2 * 1_000,
            event,
        });
    }
    v
}

fn write(path: &Path, ticks: &[NewTick]) {
    let mut w = RecordingWriter::create(path).unwrap();
    for t in ticks {
        w.write(t).unwrap();
    }
    assert_eq!(w.finish().unwrap(), ticks.len() as u64);
}

#[test]
fn every_encoding_round_trips_exactly() {
    use tickwire::model::bar::{Bar, BarInterval};
    let dir = tempfile::tempdir().unwrap();
    let mut ticks = sample();
    // Bars (format version 3), every interval, open and closed, extremes.
    for (i, interval) in BarInterval::ALL.into_iter().enumerate() {
        let bar = Bar {
            interval,
            start: 1_699_920_000_000_000_000,
            open: Fixed(i64::MIN),
            high: Fixed(i64::MAX),
            low: Fixed(i64::MIN),
            close: Fixed(-1),
            volume: Fixed(i64::MAX),
            quote_volume: Fixed(123_456_789),
            buy_volume: Fixed(0),
            trades: u64::MAX - i as u64,
            closed: i % 2 == 0,
        };
        ticks.push(NewTick {
            book: None,
            sym: Arc::from("BTC/USDT"),
            ts: 1_700_000_000_000_000_000 + i as u64,
            event: Event::Bar(Box::new(bar)),
        });
    }
    for name in ["a.twr", "a.twr.zst", "a.jsonl", "a.jsonl.zst"] {
        let path = dir.path().join(name);
        write(&path, &ticks);
        assert_eq!(read_all(&path).unwrap(), ticks, "{name}");
    }
    // Binary is the compact one; zstd shrinks both.
    let size = |n: &str| std::fs::metadata(dir.path().join(n)).unwrap().len();
    assert!(size("a.twr") < size("a.jsonl"));
    assert!(size("a.twr.zst") < size("a.twr"));
    let head = std::fs::read(dir.path().join("a.jsonl")).unwrap();
    assert!(head.starts_with(b"{\"format\":\"tickwire.jsonl\",\"version\":3}\n"));
    let head = std::fs::read(dir.path().join("a.twr")).unwrap();
    assert!(head.starts_with(b"tickwire.rec\x03\x00"));
}

#[test]
fn every_truncation_is_an_error_never_a_panic_or_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = &sample()[..40];
    for name in ["t.twr", "t.jsonl", "t.twr.zst"] {
        let path = dir.path().join(name);
        write(&path, ticks);
        let full = std::fs::read(&path).unwrap();
        let cut = dir.path().join(format!("cut-{name}"));
        // zstd decoders are costly to set up in a debug build: every 3rd cut.
        let step = if name.ends_with(".zst") { 3 } else { 1 };
        for len in (0..full.len()).step_by(step) {
            std::fs::write(&cut, &full[..len]).unwrap();
            let err = match read_all(&cut) {
                Ok(got) => panic!("{name} cut to {len} bytes read as {} ticks", got.len()),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("cut-t."), "{name} @{len}: {err}");
        }
    }
}

#[test]
fn corrupt_and_foreign_files_are_named_with_offset_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.twr");
    write(&path, &sample()[..3]);
    let mut bytes = std::fs::read(&path).unwrap();
    // First record: symbol (2 + 4 bytes) at 16, then the first tick at 22.
    bytes[22] = 0x07;
    std::fs::write(&path, &bytes).unwrap();
    let e = read_all(&path).unwrap_err();
    assert!(
        matches!(e, RecordingError::Corrupt { offset: 22, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("expected a record tag"), "{e}");

    bytes[22] = 0x03; // a quote tag on a trade: reserved bytes hold the side
    bytes[12] = 9; // and a future version
    std::fs::write(&path, &bytes).unwrap();
    let e = read_all(&path).unwrap_err().to_string();
    assert!(e.contains("version 9 is not supported"), "{e}");

    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n").unwrap();
    let e = read_all(&csv).unwrap_err().to_string();
    assert!(e.contains("x.csv: not a tickwire recording"), "{e}");
    assert!(e.contains("`a,b,c"), "{e}");

    let j = dir.path().join("bad.jsonl");
    std::fs::write(
        &j,
        "{\"format\":\"tickwire.jsonl\",\"version\":1}\n{\"type\":\"trade\",\"sym\":\"A\",\"ts\":1,\"px\":1,\"qty\":1}\n{\"type\":\"trade\",\"sym\":\"A\",\"ts\":2,\"px\":\"x\",\"qty\":1}\n",
    )
    .unwrap();
    let e = read_all(&j).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3: ", j.display())), "{e}");
    assert!(e.contains("px"), "{e}");
}

#[test]
fn a_file_being_written_is_readable_up_to_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = sample();
    for name in ["live.twr", "live.twr.zst", "live.jsonl"] {
        let path = dir.path().join(name);
        let mut w = RecordingWriter::create(&path).unwrap();
        for t in &ticks[..100] {
            w.write(t).unwrap();
        }
        w.flush().unwrap();
        assert!(!path.exists(), "the final name appears only when finished");
        let mut r = RecordingReader::open(w.partial_path()).unwrap();
        for (i, want) in ticks[..100].iter().enumerate() {
            assert_eq!(&r.next_tick().unwrap().unwrap(), want, "{name} tick {i}");
        }
        let e = r.next_tick().unwrap_err();
        assert!(
            matches!(e, RecordingError::Unterminated { ticks: 100, .. })
                || (name.ends_with(".zst") && matches!(e, RecordingError::Truncated { .. })),
            "{name}: {e}"
        );
        for t in &ticks[100..] {
            w.write(t).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(read_all(&path).unwrap(), ticks);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            ["live.twr", "live.twr.zst", "live.jsonl"]
                .iter()
                .position(|n| *n == name)
                .unwrap()
                + 1,
            "no partial file left over"
        );
    }
}

#[test]
fn an_unfinished_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.twr.zst");
    let mut w = RecordingWriter::create(&path).unwrap();
    w.write(&sample()[0]).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Reference records (tag 0x0C; `ref` lines) round-trip in both encodings,
/// in file order and not counted as ticks; a truncated or corrupt one is an
/// error naming its byte offset.
#[test]
fn reference_records_round_trip_and_bad_ones_are_refused() {
    use tickwire::model::instrument::Instrument;
    let dir = tempfile::tempdir().unwrap();
    let es: Arc<str> = Arc::from("ESU4");
    let full = Instrument {
        tick_size: Fixed::parse("0.25").ok(),
        decimals: Some(2),
        currency: Some("USD".into()),
        lot_size: Fixed::parse("1").ok(),
    };
    let ticks = sample();
    for name in ["r.twr", "r.jsonl", "r.twr.zst"] {
        let path = dir.path().join(name);
        let mut w = RecordingWriter::create(&path).unwrap();
        w.write_reference(&es, &full).unwrap();
        w.write(&ticks[0]).unwrap();
        w.write_reference(&es, &Instrument::default()).unwrap();
        assert_eq!(w.finish().unwrap(), 1, "{name}");
        let mut r = RecordingReader::open(&path).unwrap();
        assert_eq!(r.next_tick().unwrap().as_ref(), Some(&ticks[0]), "{name}");
        assert_eq!(r.take_references(), [(es.clone(), full.clone())], "{name}");
        assert_eq!(r.next_tick().unwrap(), None, "{name}");
        assert_eq!(
            r.take_references(),
            [(es.clone(), Instrument::default())],
            "{name}"
        );
    }
    // Binary: header 16, symbol record (2 + 4) at 16, reference at 22.
    let path = dir.path().join("r.twr");
    let good = std::fs::read(&path).unwrap();
    for (at, value, words) in [
        (23, 12u8, "12 decimals"),
        (24, 40, "40-byte currency"),
        (25, 1, "reserved byte"),
        (26, 9, "symbol id 9"),
        (46, b' ', "letters and digits"),
    ] {
        let mut bytes = good.clone();
        bytes[at] = value;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_all(&path).unwrap_err();
        assert!(
            matches!(e, RecordingError::Corrupt { offset: 22, .. }),
            "byte {at}: {e}"
        );
        assert!(e.to_string().contains(words), "byte {at}: {e}");
    }
    std::fs::write(&path, &good[..40]).unwrap();
    let e = read_all(&path).unwrap_err().to_string();
    assert!(e.contains("truncated reference record"), "{e}");
}
