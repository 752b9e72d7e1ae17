//! Importers on the real vendor files in tests/data (see
//! `replay_support::data_dir`), checked value by value against the sources,
//! plus hand-made bad inputs.

mod replay_support;

use std::io::Read;
use std::path::{Path, PathBuf};

use replay_support::{data, files_in, lean, make_zip};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::recordings::format::read_all;
use tickwire::recordings::import::{ImportError, Vendor, import};
use tickwire::recordings::selection::{Selection, TimeSpec};

fn run(vendor: Vendor, inputs: &[PathBuf], out: &Path) -> Result<Vec<NewTick>, ImportError> {
    import(vendor, inputs, out, false, &Selection::default())?;
    Ok(read_all(out).unwrap())
}

/// 2013-10-07 00:00 New York (EDT, UTC-4) in UTC ns.
const NY_MIDNIGHT_NS: u64 = 1_381_118_400 * 1_000_000_000;

fn unzip_rows(path: &Path) -> Vec<Vec<String>> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut text = String::new();
    z.by_index(0).unwrap().read_to_string(&mut text).unwrap();
    text.lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn lean_trades_match_the_source_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    for (sym, count) in [
        ("AIG", 25_351),
        ("BAC", 88_172),
        ("IBM", 24_293),
        ("SPY", 250_601),
    ] {
        let zip = lean(&format!("{}_20131007_trade.zip", sym.to_lowercase()));
        let out = dir.path().join(format!("{sym}.twr"));
        let ticks = run(Vendor::Lean, std::slice::from_ref(&zip), &out).unwrap();
        assert_eq!(ticks.len(), count, "{sym}");
        let rows = unzip_rows(&zip);
        assert_eq!(rows.len(), count);
        for (t, row) in ticks.iter().zip(&rows) {
            let ms: u64 = row[0].parse().unwrap();
            let px: i64 = row[1].parse().unwrap();
            let qty: i64 = row[2].parse().unwrap();
            let want = NewTick {
                book: None,
                sym: sym.into(),
                ts: NY_MIDNIGHT_NS + ms * 1_000_000,
                event: Event::Trade {
                    px: Fixed(px * 100_000),
                    qty: Fixed(qty * 1_000_000_000),
                    side: Side::Unknown,
                },
            };
            assert_eq!(*t, want);
        }
    }
}

#[test]
fn lean_quotes_become_a_running_best_bid_and_offer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.jsonl");
    let ticks = run(Vendor::Lean, &[lean("ibm_20131007_quote.zip")], &out).unwrap();
    assert_eq!(ticks.len(), 39_109);
    // Source: 04:00:00.054 ask 183.63×100 alone (no quote yet), then at
    // 04:00:00.241 bid 180.01×300 and ask 181.80×3000, applied together:
    // the first two-sided book.
    assert_eq!(
        ticks[0],
        NewTick {
            book: None,
            sym: "IBM".into(),
            ts: NY_MIDNIGHT_NS + 14_400_241 * 1_000_000,
            event: Event::Quote {
                bid: Fixed::parse("180.01").unwrap(),
                bsz: Fixed::parse("300").unwrap(),
                ask: Fixed::parse("181.8").unwrap(),
                asz: Fixed::parse("3000").unwrap(),
            }
        }
    );
    // Every quote's sides were quoted in the source at that millisecond or
    // before, and consecutive quotes differ.
    let rows = unzip_rows(&lean("ibm_20131007_quote.zip"));
    let mut seen_bids = std::collections::HashSet::new();
    let mut seen_asks = std::collections::HashSet::new();
    let mut i = 0;
    for t in &ticks {
        while i < rows.len()
            && NY_MIDNIGHT_NS + rows[i][0].parse::<u64>().unwrap() * 1_000_000 <= t.ts
        {
            seen_bids.insert((rows[i][1].clone(), rows[i][2].clone()));
            seen_asks.insert((rows[i][3].clone(), rows[i][4].clone()));
            i += 1;
        }
        let Event::Quote { bid, bsz, ask, asz } = t.event else {
            panic!("not a quote")
        };
        let key = |p: Fixed, s: Fixed| {
            (
                (p.raw() / 100_000).to_string(),
                (s.raw() / 1_000_000_000).to_string(),
            )
        };
        assert!(seen_bids.contains(&key(bid, bsz)), "{t:?}");
        assert!(seen_asks.contains(&key(ask, asz)), "{t:?}");
    }
    assert!(ticks.windows(2).all(|w| w[0].event != w[1].event));
}

#[test]
fn lean_open_window_matches_the_independent_python_conversion() {
    // Counts of tools/make_default_feed.py (the lead's independent
    // conversion, recorded in replay-data/README.md history) for
    // 09:30–09:40 New York: AIG 954, BAC 5,564, IBM 1,533 trades, SPY 15,057
    // trades, IBM 1,232 quotes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.twr");
    let inputs: Vec<PathBuf> = [
        "aig_20131007_trade.zip",
        "bac_20131007_trade.zip",
        "ibm_20131007_trade.zip",
        "ibm_20131007_quote.zip",
        "spy_20131007_trade.zip",
    ]
    .iter()
    .map(|n| lean(n))
    .collect();
    let sel = Selection {
        start: Some(TimeSpec::parse("2013-10-07T09:30[America/New_York]").unwrap()),
        end: Some(TimeSpec::parse("+10m").unwrap()),
        symbols: vec![],
    };
    // +10m counts from the first tick of the day (04:00:00.054); use an
    // absolute end instead.
    let sel = Selection {
        end: Some(TimeSpec::parse("2013-10-07T13:40:00Z").unwrap()),
        ..sel
    };
    let report = import(Vendor::Lean, &inputs, &out, false, &sel).unwrap();
    assert_eq!(report.written, 24_340);
    let ticks = read_all(&out).unwrap();
    let count = |sym: &str, trade: bool| {
        ticks
            .iter()
            .filter(|t| &*t.sym == sym && matches!(t.event, Event::Trade { .. }) == trade)
            .count()
    };
    assert_eq!(
        [
            count("AIG", true),
            count("BAC", true),
            count("IBM", true),
            count("SPY", true),
            count("IBM", false)
        ],
        [954, 5_564, 1_533, 15_057, 1_232]
    );
    assert!(ticks.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert_eq!(ticks[0].ts, 1_381_152_600_007_000_000);
}

#[test]
fn lean_times_follow_new_york_daylight_saving() {
    let dir = tempfile::tempdir().unwrap();
    // Winter (EST, UTC-5), and the spring-forward day 2014-03-09, where
    // 01:00 is EST and 03:00 is EDT.
    for (date, rows, want) in [
        (
            "20140106",
            "34200000,1000000,1,P,0,0\n",
            vec![1_389_018_600_000_000_000u64],
        ),
        (
            "20140309",
            "3600000,1000000,1,P,0,0\n10800000,1000000,1,P,0,0",
            vec![1_394_344_800_000_000_000, 1_394_348_400_000_000_000],
        ),
    ] {
        let zip = dir.path().join(format!("{date}.zip"));
        make_zip(
            &zip,
            &[(&format!("{date}_xyz_Trade_Tick.csv"), rows.as_bytes())],
        );
        let ticks = run(
            Vendor::Lean,
            &[zip],
            &dir.path().join(format!("{date}.twr")),
        )
        .unwrap();
        assert_eq!(
            ticks.iter().map(|t| t.ts).collect::<Vec<_>>(),
            want,
            "{date}"
        );
        assert_eq!(&*ticks[0].sym, "XYZ");
    }
}

#[test]
fn tardis_trades_and_quotes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let trades = data("tardis_binance-futures_BTCUSDT_20200222_trades.csv");
    let quotes = data("tardis_binance-futures_BTCUSDT_20200222_quotes.csv");
    let t = run(
        Vendor::Tardis,
        std::slice::from_ref(&trades),
        &dir.path().join("t.twr"),
    )
    .unwrap();
    let q = run(
        Vendor::Tardis,
        std::slice::from_ref(&quotes),
        &dir.path().join("q.twr"),
    )
    .unwrap();
    assert_eq!((t.len(), q.len()), (9_999, 9_999));
    let text = std::fs::read_to_string(&trades).unwrap();
    for (tick, line) in t.iter().zip(text.lines().skip(1)) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(tick.ts, f[2].parse::<u64>().unwrap() * 1_000);
        let side = match f[5] {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            _ => Side::Unknown,
        };
        assert_eq!(
            tick.event,
            Event::Trade {
                px: Fixed::parse(f[6]).unwrap(),
                qty: Fixed::parse(f[7]).unwrap(),
                side
            }
        );
    }
    assert_eq!(
        q[0].event,
        Event::Quote {
            bid: Fixed(9_681_920_000_000),
            bsz: Fixed(670_000_000),
            ask: Fixed(9_682_000_000_000),
            asz: Fixed(840_000_000)
        }
    );
    assert_eq!(q[0].ts, 1_582_329_601_096_000_000);
}

#[test]
fn several_inputs_merge_in_ts_order_stably() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        data("tardis_binance-futures_BTCUSDT_20200222_trades.csv"),
        data("tardis_binance-futures_BTCUSDT_20200222_quotes.csv"),
    ];
    let merged = run(Vendor::Tardis, &inputs, &dir.path().join("m.twr")).unwrap();
    let a = run(Vendor::Tardis, &inputs[..1], &dir.path().join("a.twr")).unwrap();
    let b = run(Vendor::Tardis, &inputs[1..], &dir.path().join("b.twr")).unwrap();
    let mut want: Vec<(usize, NewTick)> = a
        .into_iter()
        .map(|t| (0, t))
        .chain(b.into_iter().map(|t| (1, t)))
        .collect();
    want.sort_by_key(|(_, t)| t.ts); // stable: input order, then row order
    assert_eq!(merged, want.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    // Equal timestamps across the two inputs do occur, so stability is tested.
    let ties = merged
        .windows(2)
        .filter(|w| w[0].ts == w[1].ts && w[0].event.channel() != w[1].event.channel())
        .count();
    assert!(ties > 0);
}

#[test]
fn dbn_versions_1_2_3_plain_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let esu4 = data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst");
    let ticks = run(
        Vendor::Dbn,
        std::slice::from_ref(&esu4),
        &dir.path().join("es.twr"),
    )
    .unwrap();
    let trades: Vec<&NewTick> = ticks
        .iter()
        .filter(|t| matches!(t.event, Event::Trade { .. }))
        .collect();
    assert_eq!(trades.len(), 120);
    assert!(ticks.iter().all(|t| &*t.sym == "ESU4"));

    // Independently with the dbn crate: trades and top-of-book changes.
    let mut dec = dbn::decode::DbnDecoder::from_zstd_file(&esu4).unwrap();
    dec.set_upgrade_policy(dbn::VersionUpgradePolicy::UpgradeToV3)
        .unwrap();
    let mut want = Vec::new();
    let mut last = None;
    while let Some(m) = dbn::decode::DecodeRecord::decode_record::<dbn::Mbp1Msg>(&mut dec).unwrap()
    {
        if m.action as u8 == b'T' {
            let side = match m.side as u8 {
                b'A' => Side::Sell,
                b'B' => Side::Buy,
                _ => Side::Unknown,
            };
            want.push((
                m.ts_recv,
                Event::Trade {
                    px: Fixed(m.price),
                    qty: Fixed(i64::from(m.size) * 1_000_000_000),
                    side,
                },
            ));
        }
        let l = &m.levels[0];
        let q = Event::Quote {
            bid: Fixed(l.bid_px),
            bsz: Fixed(i64::from(l.bid_sz) * 1_000_000_000),
            ask: Fixed(l.ask_px),
            asz: Fixed(i64::from(l.ask_sz) * 1_000_000_000),
        };
        if l.bid_px != dbn::UNDEF_PRICE && l.ask_px != dbn::UNDEF_PRICE && last.as_ref() != Some(&q)
        {
            last = Some(q.clone());
            want.push((m.ts_recv, q));
        }
    }
    assert_eq!(
        ticks
            .iter()
            .map(|t| (t.ts, t.event.clone()))
            .collect::<Vec<_>>(),
        want
    );

    let v2 = run(
        Vendor::Dbn,
        &[data("dbn-testdata_ESH1_20201228_trades.dbn")],
        &dir.path().join("v2.twr"),
    )
    .unwrap();
    let v3 = run(
        Vendor::Dbn,
        &[data("dbn-testdata_ESH1_20201228_trades.v3.dbn.zst")],
        &dir.path().join("v3.twr"),
    )
    .unwrap();
    assert_eq!(v2.len(), 2);
    assert_eq!(v2, v3);
    assert_eq!(&*v2[0].sym, "ESH1");
    assert_eq!(
        v2[0].event,
        Event::Trade {
            px: Fixed::parse("3720.25").unwrap(),
            qty: Fixed::parse("5").unwrap(),
            side: Side::Sell
        }
    );
}

#[test]
fn a_dbn_file_of_another_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.dbn");
    let meta = dbn::MetadataBuilder::new()
        .dataset("GLBX.MDP3".to_owned())
        .schema(Some(dbn::Schema::Statistics))
        .start(0)
        .stype_in(Some(dbn::SType::RawSymbol))
        .stype_out(dbn::SType::InstrumentId)
        .build();
    let file = std::fs::File::create(&path).unwrap();
    dbn::encode::DbnEncoder::new(file, &meta).unwrap();
    let out = dir.path().join("o.twr");
    let e = run(Vendor::Dbn, &[path], &out).unwrap_err().to_string();
    assert!(
        e.contains("status.dbn: DBN schema `statistics` is not supported"),
        "{e}"
    );
    assert!(
        e.contains(
            "trades, mbp-1, tbbo, bbo-1s, bbo-1m, mbp-10, mbo, ohlcv-1s/1m/1h/1d and definition"
        ),
        "{e}"
    );
    assert!(!out.exists());
}

/// Runs a failing import; checks the message and that no output is left.
fn fails(vendor: Vendor, inputs: &[PathBuf], wants: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.twr");
    let e = run(vendor, inputs, &out).unwrap_err().to_string();
    for w in wants {
        assert!(e.contains(w), "`{e}` should contain `{w}`");
    }
    assert!(
        files_in(dir.path()).is_empty(),
        "left behind: {:?}",
        files_in(dir.path())
    );
    e
}

#[test]
fn bad_lean_inputs_name_file_line_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Truncated zip.
    let full = std::fs::read(lean("aig_20131007_trade.zip")).unwrap();
    std::fs::write(d.join("cut.zip"), &full[..full.len() / 2]).unwrap();
    fails(
        Vendor::Lean,
        &[d.join("cut.zip")],
        &["cut.zip", "not a readable zip archive"],
    );
    // A CSV given as a zip.
    std::fs::write(d.join("plain.zip"), "1,2,3\n").unwrap();
    fails(
        Vendor::Lean,
        &[d.join("plain.zip")],
        &["plain.zip", "expected a Lean tick zip"],
    );
    // A zip with no CSV in it.
    make_zip(&d.join("empty.zip"), &[("readme.txt", b"hi")]);
    fails(
        Vendor::Lean,
        &[d.join("empty.zip")],
        &["empty.zip", "no CSV file", "readme.txt"],
    );
    let trade = |name: &str, body: &str| {
        let p = d.join(name);
        make_zip(&p, &[("20131007_abc_Trade_Tick.csv", body.as_bytes())]);
        p
    };
    let missing = trade(
        "missing.zip",
        "34200000,1000000,1,P,0,0\n34200001,1000000,1,P,0\n",
    );
    fails(
        Vendor::Lean,
        std::slice::from_ref(&missing),
        &[
            "missing.zip (20131007_abc_Trade_Tick.csv):2:",
            "5 fields; expected 6",
        ],
    );
    let nan = trade(
        "nan.zip",
        "34200000,1000000,1,P,0,0\n34200001,10.5,1,P,0,0\n",
    );
    fails(
        Vendor::Lean,
        std::slice::from_ref(&nan),
        &[
            "nan.zip (20131007_abc_Trade_Tick.csv):2:",
            "field 2 (price×10000) is `10.5`",
        ],
    );
    let back = trade(
        "back.zip",
        "34200000,1000000,1,P,0,0\n34100000,1000000,1,P,0,0\n",
    );
    fails(
        Vendor::Lean,
        std::slice::from_ref(&back),
        &[":2:", "earlier than the previous row", "time order"],
    );

    // --skip-bad skips and counts instead.
    let out = d.join("skipped.twr");
    let r = import(
        Vendor::Lean,
        &[missing, nan, back],
        &out,
        true,
        &Selection::default(),
    )
    .unwrap();
    assert_eq!(
        r.inputs.iter().map(|i| i.bad_rows).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(read_all(&out).unwrap().len(), 3);
}

#[test]
fn bad_tardis_and_dbn_inputs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("x.csv"), "a,b\n1,2\n").unwrap();
    fails(
        Vendor::Tardis,
        &[d.join("x.csv")],
        &["x.csv", "expected Tardis trades"],
    );
    std::fs::write(
        d.join("t.csv"),
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\nb,BTCUSDT,1,2,3,buy,9682,0.1\nb,BTCUSDT,2,2,3,buy,,0.1\nb,BTCUSDT,3,2,3,sideways,1,1\n",
    )
    .unwrap();
    fails(
        Vendor::Tardis,
        &[d.join("t.csv")],
        &["t.csv:3:", "`price` is empty"],
    );

    // DBN: a CSV, a cut zstd stream, a cut plain stream.
    fails(
        Vendor::Dbn,
        &[d.join("x.csv")],
        &["x.csv", "not a DBN file", "found `a,b"],
    );
    let es = std::fs::read(data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst")).unwrap();
    std::fs::write(d.join("cut.dbn.zst"), &es[..es.len() / 2]).unwrap();
    fails(
        Vendor::Dbn,
        &[d.join("cut.dbn.zst")],
        &["cut.dbn.zst", "truncated or corrupt"],
    );
    let plain = std::fs::read(data("dbn-testdata_ESH1_20201228_trades.dbn")).unwrap();
    std::fs::write(d.join("cut.dbn"), &plain[..plain.len() - 10]).unwrap();
    fails(
        Vendor::Dbn,
        &[d.join("cut.dbn")],
        &["cut.dbn: byte ", "truncated or corrupt"],
    );
}

/// `(records, T records, F_LAST records)` of a DBN `mbo`/`mbp-10` file,
/// counted with the dbn crate alone.
fn dbn_action_counts(
    path: &std::path::Path,
    mbo: bool,
) -> (u64, u64, u64, std::collections::BTreeMap<(char, u8), u64>) {
    let mut dec = dbn::decode::DbnDecoder::from_zstd_file(path).unwrap();
    dec.set_upgrade_policy(dbn::VersionUpgradePolicy::UpgradeToV3)
        .unwrap();
    let (mut n, mut t, mut last) = (0, 0, 0);
    let mut hist = std::collections::BTreeMap::new();
    loop {
        let (action, flags) = if mbo {
            match dbn::decode::DecodeRecord::decode_record::<dbn::MboMsg>(&mut dec).unwrap() {
                Some(m) => (m.action as u8, m.flags.raw()),
                None => break,
            }
        } else {
            match dbn::decode::DecodeRecord::decode_record::<dbn::Mbp10Msg>(&mut dec).unwrap() {
                Some(m) => (m.action as u8, m.flags.raw()),
                None => break,
            }
        };
        n += 1;
        t += u64::from(action == b'T');
        last += u64::from(flags & 0x80 != 0);
        *hist.entry((action as char, flags)).or_insert(0) += 1;
    }
    (n, t, last, hist)
}

/// Databento `mbo` rebuilt per Databento's semantics, on real CME files:
/// never crossed at an event boundary, one trade tick per `T` record and one
/// event per `F_LAST` record (both counted independently with the dbn
/// crate), exact counts pinned.
#[test]
fn dbn_mbo_and_mbp10_books_rebuild_exactly() {
    use tickwire::recordings::import::rebuild_dbn_books;
    for (file, mbo) in [
        ("esh4-glbx-mdp3-20231224.mbo.dbn.zst", true),
        (
            "glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst",
            true,
        ),
        ("dbn-testdata.mbo.v3.dbn.zst", true),
        ("dbn-testdata.mbp-10.v3.dbn.zst", false),
    ] {
        let path = data(file);
        let (report, bad, ticks) = rebuild_dbn_books(&path).unwrap();
        let (n, t, last, _) = dbn_action_counts(&path, mbo);
        assert_eq!(report.records, n, "{file}");
        assert_eq!(report.trades, t, "{file}: one trade tick per T record");
        assert_eq!(report.events, last, "{file}: one event per F_LAST record");
        assert_eq!(
            report.crossed_at_boundary, 0,
            "{file}: crossed at a boundary"
        );
        assert_eq!(report.unfinished_tail, 0, "{file}");
        let trades = ticks
            .iter()
            .filter(|k| matches!(k.event, tickwire::model::tick::Event::Trade { .. }))
            .count() as u64;
        assert_eq!(trades, t, "{file}");
        let books = ticks.iter().filter(|k| k.book.is_some()).count() as u64;
        assert_eq!(
            ticks.len() as u64,
            t + books,
            "{file}: trades and books only"
        );
        assert!(books <= report.book_updates + 1, "{file}");
        // Pinned: (events, trades, quotes, book updates, level changes,
        // skipped, deepest side, bad records).
        let pinned = (
            report.events,
            report.trades,
            report.quotes,
            report.book_updates,
            report.level_changes,
            report.skipped,
            report.max_depth,
            bad,
        );
        let want = match file {
            // A Sunday-open snapshot: 8,725 adds, one F_LAST at the end.
            "esh4-glbx-mdp3-20231224.mbo.dbn.zst" => (1, 0, 1, 1, 1451, 0, 892, 0),
            // Clear + snapshot, then live adds, cancels, modifies, 5 trades.
            "glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst" => {
                (185, 5, 136, 185, 1754, 0, 976, 0)
            }
            // Two cancels of orders never added: skipped and counted.
            "dbn-testdata.mbo.v3.dbn.zst" => (2, 0, 0, 0, 0, 2, 0, 2),
            "dbn-testdata.mbp-10.v3.dbn.zst" => (2, 0, 1, 2, 21, 0, 10, 0),
            _ => unreachable!(),
        };
        assert_eq!(pinned, want, "{file}: {report:?}");
    }
}

/// A DBN `mbo` stream cut mid-record is a clear error with the byte
/// offset; one cut at a record boundary inside an event leaves that
/// event's records counted as unfinished, never applied half.
#[test]
fn a_truncated_mbo_stream_is_an_error_or_an_unfinished_event() {
    use tickwire::recordings::import::rebuild_dbn_books;
    let raw = std::fs::read(data(
        "glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst",
    ))
    .unwrap();
    let plain = zstd::stream::decode_all(raw.as_slice()).unwrap();
    let meta = 8 + u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    // Mid-record.
    let cut = dir.path().join("cut.dbn");
    std::fs::write(&cut, &plain[..plain.len() - 20]).unwrap();
    let e = rebuild_dbn_books(&cut).unwrap_err().to_string();
    assert!(e.contains("byte ") && e.contains("truncated"), "{e}");
    // At a record boundary: the snapshot's adds (F_LAST only on the last
    // of them) cut after 100 records.
    let rec = 56;
    let cut = dir.path().join("boundary.dbn");
    std::fs::write(&cut, &plain[..meta + 100 * rec]).unwrap();
    let (report, _, ticks) = rebuild_dbn_books(&cut).unwrap();
    assert_eq!(report.records, 100);
    assert_eq!(report.events, 0);
    assert_eq!(report.unfinished_tail, 100);
    assert!(
        ticks.is_empty(),
        "nothing emitted from a half-applied event"
    );
}

/// Binance depth CSV: the bundled snapshot and update files (nautilus
/// samples) do not line up — the updates start at id 2098041693435, ten
/// minutes after the snapshot's 2098021528332 — so applying them would
/// give a wrong book: an error naming the line, or under `--skip-bad` the
/// snapshot alone with the diff counted as skipped.
#[test]
fn binance_depth_update_ids_are_checked_across_files() {
    let snap = data("binance_btcusdt-depth-snap.csv");
    let upd = data("binance_btcusdt-depth-update.csv");
    let e = fails(
        Vendor::BinanceDepth,
        &[snap.clone(), upd.clone()],
        &[
            "binance_btcusdt-depth-update.csv:2:",
            "update ids jump",
            "2098021528332",
            "2098041693435..2098041696700",
        ],
    );
    assert!(e.contains("pu 2098041693400"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.twr");
    let report = import(
        Vendor::BinanceDepth,
        &[snap, upd],
        &out,
        true,
        &Selection::default(),
    )
    .unwrap();
    assert_eq!(report.inputs[0].books, 1);
    assert_eq!(report.inputs[1].books, 0);
    assert_eq!(report.inputs[1].bad_rows, 1);
    let ticks = read_all(&out).unwrap();
    let Some(tickwire::model::book::BookChange::Snapshot(levels)) = ticks[0].book.as_deref() else {
        panic!("{:?}", ticks[0]);
    };
    assert_eq!(levels.len(), 100);
    assert_eq!(ticks[0].ts, 1_667_346_579_146_000_000);

    // A stream that does continue: an old diff dropped, one straddling the
    // snapshot, one continuing by `pu`, then a jump.
    let csv = dir.path().join("d.csv");
    std::fs::write(
        &csv,
        "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n\
         X,1,100,100,b,snap,10.0,1.0,-1\n\
         X,1,100,100,a,snap,11.0,2.0,-1\n\
         X,2,90,99,b,set,10.0,5.0,89\n\
         X,3,98,105,b,set,10.0,3.0,97\n\
         X,3,98,105,a,set,11.5,1.0,97\n\
         X,4,106,110,a,set,11.0,0.000,105\n\
         X,5,120,125,a,set,12.0,1.0,119\n",
    )
    .unwrap();
    let e = fails(
        Vendor::BinanceDepth,
        std::slice::from_ref(&csv),
        &["d.csv:8:", "update ids jump", "at update 110"],
    );
    let _ = e;
    let report = import(
        Vendor::BinanceDepth,
        &[csv],
        &out,
        true,
        &Selection::default(),
    )
    .unwrap();
    let r = &report.inputs[0];
    assert_eq!((r.books, r.left_out, r.bad_rows), (3, 1, 1), "{r:?}");
    let ticks = read_all(&out).unwrap();
    let diff = ticks[1].book.as_deref().unwrap();
    assert_eq!(
        diff.levels().len(),
        2,
        "one message = the rows of one update"
    );
}

/// The bars of a DBN `ohlcv-*` file as the `dbn` crate decodes them:
/// (symbol, start, open, high, low, close, volume) in file order.
fn dbn_bars(path: &Path) -> Vec<(u32, u64, i64, i64, i64, i64, u64)> {
    let mut dec = dbn::decode::DbnDecoder::from_zstd_file(path).unwrap();
    dec.set_upgrade_policy(dbn::VersionUpgradePolicy::UpgradeToV3)
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = dbn::decode::DecodeRecord::decode_record::<dbn::OhlcvMsg>(&mut dec).unwrap()
    {
        out.push((
            m.hd.instrument_id,
            m.hd.ts_event,
            m.open,
            m.high,
            m.low,
            m.close,
            m.volume,
        ));
    }
    out
}

#[test]
fn dbn_ohlcv_files_import_as_closed_bars_value_for_value() {
    use tickwire::model::bar::{Bar, BarInterval};
    let dir = tempfile::tempdir().unwrap();
    for (file, interval, symbols) in [
        (
            "dbn-testdata.ohlcv-1s.v3.dbn.zst",
            BarInterval::S1,
            &[("ESH1", 5482, 2)][..],
        ),
        (
            "glbx-mdp3_futures_ohlcv-1m_20240701T2340-20240702T0010.dbn.zst",
            BarInterval::M1,
            &[("ESU4", 118, 30), ("NQU4", 4358, 30)][..],
        ),
    ] {
        let path = data(file);
        let ticks = run(
            Vendor::Dbn,
            std::slice::from_ref(&path),
            &dir.path().join("bars.twr"),
        )
        .unwrap();
        let want = dbn_bars(&path);
        assert_eq!(
            ticks.len(),
            symbols.iter().map(|s| s.2).sum::<usize>(),
            "{file}"
        );
        assert_eq!(ticks.len(), want.len(), "{file}: one bar per record");
        for (sym, _, n) in symbols {
            assert_eq!(
                ticks.iter().filter(|t| &*t.sym == *sym).count(),
                *n,
                "{file} {sym}"
            );
        }
        for (t, w) in ticks.iter().zip(&want) {
            let (instrument, start, open, high, low, close, volume) = *w;
            let sym = symbols.iter().find(|s| s.1 == instrument).unwrap().0;
            let bar = Bar {
                interval,
                start,
                open: Fixed(open),
                high: Fixed(high),
                low: Fixed(low),
                close: Fixed(close),
                volume: Fixed(volume as i64 * 1_000_000_000),
                quote_volume: Fixed(0),
                buy_volume: Fixed(0),
                trades: 0,
                closed: true,
            };
            let expected = NewTick {
                book: None,
                sym: sym.into(),
                ts: start + interval.nanos(),
                event: Event::Bar(Box::new(bar)),
            };
            assert_eq!(*t, expected, "{file}");
        }
    }
    // Pinned from the files themselves (the dbn crate's reading above
    // could share a misreading with the importer; these cannot).
    let es = run(
        Vendor::Dbn,
        &[data("dbn-testdata.ohlcv-1s.v3.dbn.zst")],
        &dir.path().join("es.twr"),
    )
    .unwrap();
    let Event::Bar(b) = &es[1].event else {
        panic!("{:?}", es[1])
    };
    assert_eq!(
        (b.start, b.open, b.close, b.volume),
        (
            1_609_160_401_000_000_000,
            Fixed(372_050_000_000_000),
            Fixed(372_050_000_000_000),
            Fixed(13_000_000_000)
        )
    );
    let glbx = run(
        Vendor::Dbn,
        &[data(
            "glbx-mdp3_futures_ohlcv-1m_20240701T2340-20240702T0010.dbn.zst",
        )],
        &dir.path().join("glbx.twr"),
    )
    .unwrap();
    let Event::Bar(b) = &glbx[0].event else {
        panic!("{:?}", glbx[0])
    };
    assert_eq!(&*glbx[0].sym, "ESU4");
    assert_eq!(
        (b.start, b.open, b.high, b.low, b.close, b.volume),
        (
            1_719_877_200_000_000_000,
            Fixed(5_527_250_000_000),
            Fixed(5_527_500_000_000),
            Fixed(5_527_000_000_000),
            Fixed(5_527_500_000_000),
            Fixed(180_000_000_000)
        )
    );
}

/// Inputs already in time order are written as they are read (the report
/// says so); the same inputs given out of order are held and sorted; both
/// write the same recording as the one file they were cut from.
#[test]
fn inputs_in_time_order_are_streamed_and_others_sorted_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let whole = data("tardis_binance-futures_BTCUSDT_20200222_trades.csv");
    let text = std::fs::read_to_string(&whole).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let (early, late) = rows.split_at(rows.len() / 2);
    let part = |name: &str, rows: &[&str]| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        p
    };
    let (early, late) = (part("early.csv", early), part("late.csv", late));
    let want = run(Vendor::Tardis, &[whole], &dir.path().join("w.twr")).unwrap();
    for (inputs, streamed) in [
        ([early.clone(), late.clone()], true),
        ([late, early], false),
    ] {
        let out = dir.path().join(format!("o{streamed}.twr"));
        let report = import(Vendor::Tardis, &inputs, &out, false, &Selection::default()).unwrap();
        assert_eq!(report.streamed, streamed);
        assert_eq!(read_all(&out).unwrap(), want, "streamed: {streamed}");
    }
}
