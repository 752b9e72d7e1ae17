//! Tardis `incremental_book_L2` and `book_snapshot_N` CSV import: the
//! fixtures in tests/data are written to tardis.dev's documented layouts
//! (no Tardis book sample is bundled); each test rebuilds the books from
//! the recording and compares them with the books the rows describe.

mod replay_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use replay_support::{data, files_in};
use tickwire::model::book::{Book, BookChange, BookSide, Level};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick};
use tickwire::recordings::format::read_all;
use tickwire::recordings::import::{ImportReport, Vendor, import};
use tickwire::recordings::selection::Selection;

fn px(s: &str) -> Fixed {
    Fixed::parse(s).unwrap()
}

fn lv(side: BookSide, p: &str, s: &str) -> Level {
    Level {
        side,
        px: px(p),
        sz: px(s),
    }
}

use BookSide::{Ask, Bid};

/// Imports `inputs` (Tardis) and reads the recording back.
fn run(inputs: &[PathBuf], skip_bad: bool) -> (ImportReport, Vec<NewTick>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.twr");
    let report = import(
        Vendor::Tardis,
        inputs,
        &out,
        skip_bad,
        &Selection::default(),
    )
    .unwrap();
    (report, read_all(&out).unwrap())
}

/// A failing import's message; nothing is left behind.
fn fails(inputs: &[PathBuf]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.twr");
    let e = import(Vendor::Tardis, inputs, &out, false, &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    e
}

/// Each symbol's book rebuilt from the recording's book records, checked
/// as the server checks them (a diff needs a snapshot; never crossed).
fn rebuild(ticks: &[NewTick]) -> BTreeMap<String, Book> {
    let mut books: BTreeMap<String, Book> = BTreeMap::new();
    for t in ticks {
        let Some(change) = t.book.as_deref() else {
            continue;
        };
        let has = books.contains_key(&*t.sym);
        let b = books.entry(t.sym.to_string()).or_default();
        b.apply(&t.sym, change, has, 5000)
            .unwrap_or_else(|e| panic!("{} at {}: {e}", t.sym, t.ts));
    }
    books
}

fn book_of(levels: &[Level]) -> Book {
    let mut b = Book::new();
    b.apply("x", &BookChange::Snapshot(levels.to_vec()), false, 5000)
        .unwrap();
    b
}

/// (symbol, ts, snapshot?, levels sorted) of each book record.
fn records(ticks: &[NewTick]) -> Vec<(String, u64, bool, Vec<Level>)> {
    ticks
        .iter()
        .filter_map(|t| {
            let c = t.book.as_deref()?;
            assert!(matches!(t.event, Event::Book(_)));
            let mut l = c.levels().to_vec();
            l.sort_by_key(|l| (l.side, l.px));
            Some((
                t.sym.to_string(),
                t.ts,
                matches!(c, BookChange::Snapshot(_)),
                l,
            ))
        })
        .collect()
}

const T0: u64 = 1_600_000_000_000_000_000;
const MS100: u64 = 100_000_000;

#[test]
fn incremental_l2_rebuilds_each_symbols_book_exactly() {
    let (report, ticks) = run(&[data("tardis_book_incremental_L2.csv")], false);
    assert_eq!(report.inputs[0].books, 8);
    assert_eq!(report.inputs[0].trades + report.inputs[0].quotes, 0);
    let want = vec![
        // ETHUSDT's snapshot run (lines 4, 6) ends at its first diff.
        (
            "ETHUSDT",
            T0,
            true,
            vec![lv(Bid, "370.20", "4"), lv(Ask, "370.25", "10")],
        ),
        // BTCUSDT's run spans two timestamps: one snapshot, at the last.
        (
            "BTCUSDT",
            T0 + MS100,
            true,
            vec![
                lv(Bid, "10000.0", "3"),
                lv(Bid, "10000.5", "1.2"),
                lv(Ask, "10001.0", "0.5"),
                lv(Ask, "10002.5", "2"),
            ],
        ),
        // One timestamp, one diff: the later row of a level wins; 0 removes.
        (
            "BTCUSDT",
            T0 + 2 * MS100,
            false,
            vec![lv(Bid, "10000.5", "0.9"), lv(Ask, "10001.0", "0")],
        ),
        (
            "ETHUSDT",
            T0 + 2 * MS100,
            false,
            vec![lv(Bid, "370.20", "5.5")],
        ),
        (
            "BTCUSDT",
            T0 + 3 * MS100,
            false,
            vec![lv(Ask, "10001.5", "1")],
        ),
        // A new snapshot run replaces the book: no level of before survives.
        (
            "BTCUSDT",
            T0 + 4 * MS100,
            true,
            vec![lv(Bid, "9999.0", "2"), lv(Ask, "10003.0", "1")],
        ),
        (
            "ETHUSDT",
            T0 + 5 * MS100,
            false,
            vec![lv(Ask, "370.30", "2")],
        ),
        (
            "BTCUSDT",
            T0 + 5 * MS100,
            false,
            vec![lv(Bid, "9999.5", "1")],
        ),
    ];
    let got = records(&ticks);
    let want: Vec<_> = want
        .into_iter()
        .map(|(s, ts, snap, l)| (s.to_owned(), ts, snap, l))
        .collect();
    assert_eq!(got, want);
    let books = rebuild(&ticks);
    assert_eq!(
        books["BTCUSDT"],
        book_of(&[
            lv(Bid, "9999.5", "1"),
            lv(Bid, "9999.0", "2"),
            lv(Ask, "10003.0", "1")
        ])
    );
    assert_eq!(
        books["ETHUSDT"],
        book_of(&[
            lv(Bid, "370.20", "5.5"),
            lv(Ask, "370.25", "10"),
            lv(Ask, "370.30", "2")
        ])
    );
}

#[test]
fn book_snapshot_rows_become_a_snapshot_then_diffs_of_what_changed() {
    let (report, ticks) = run(&[data("tardis_book_snapshot_5.csv")], false);
    // Four rows; the third repeats the second: no record for it.
    assert_eq!(report.inputs[0].books, 3);
    let got = records(&ticks);
    assert_eq!(got.len(), 3);
    assert!(got[0].2 && got[0].3.len() == 10 && got[0].1 == T0);
    assert_eq!(
        (got[1].1, got[1].2, got[1].3.clone()),
        (
            T0 + MS100,
            false,
            vec![
                lv(Bid, "10000.5", "0.8"),
                lv(Ask, "10001.0", "0"),
                lv(Ask, "10003.5", "6")
            ]
        )
    );
    assert_eq!(
        (got[2].1, got[2].3.clone()),
        (
            T0 + 2 * MS100,
            vec![
                lv(Bid, "9998.5", "0"),
                lv(Bid, "9999.0", "0"),
                lv(Bid, "9999.5", "0")
            ]
        )
    );
    let asks = ["10001.5", "10002.0", "10002.5", "10003.0", "10003.5"];
    let ask_sz = ["1", "2", "3", "4", "6"];
    let mut want: Vec<Level> = asks
        .iter()
        .zip(ask_sz)
        .map(|(p, s)| lv(Ask, p, s))
        .collect();
    want.push(lv(Bid, "10000.5", "0.8"));
    want.push(lv(Bid, "10000.0", "3"));
    assert_eq!(rebuild(&ticks)["BTC-PERPETUAL"], book_of(&want));
}

const HEADER: &str = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n";

/// Writes `rows` under the incremental header; returns the path and the
/// byte offset at which each line (1-based) starts.
fn incremental(dir: &Path, name: &str, rows: &[&str]) -> (PathBuf, Vec<u64>) {
    let mut text = HEADER.to_owned();
    let mut starts = vec![0, 0];
    for r in rows {
        starts.push(text.len() as u64);
        text.push_str(r);
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    (p, starts)
}

#[test]
fn bad_rows_name_their_line_and_byte_and_never_leave_a_wrong_book() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let snap = ["x,A,1000,1000,true,bid,10,1", "x,A,1000,1000,true,ask,11,1"];
    // (bad row appended after the snapshot, what the message must say)
    let cases: [(&str, &str); 7] = [
        ("x,A,2000,2000,false,bid,10,-1", "`amount` is -1"),
        ("x,A,2000,2000,false,bid,ten,1", "`price` `ten`"),
        ("x,A,2000,2000,false,bid,0,1", "`price` is 0"),
        (
            "x,A,2000,2000,false,buy,10,1",
            "`side` is `buy`; expected bid or ask",
        ),
        ("x,A,2000,2000,maybe,bid,10,1", "`is_snapshot` is `maybe`"),
        ("x,A,2000,2000,false,bid,10", "7 fields; expected 8"),
        (
            "x,A,500,500,false,bid,10,2",
            "earlier than the previous row",
        ),
    ];
    for (i, (row, want)) in cases.iter().enumerate() {
        let (p, starts) = incremental(d, &format!("bad{i}.csv"), &[snap[0], snap[1], row]);
        let e = fails(std::slice::from_ref(&p));
        let at = format!("bad{i}.csv:4: (byte {})", starts[4]);
        assert!(
            e.contains(&at) && e.contains(want),
            "`{e}` wants `{at}` and `{want}`"
        );
    }

    // A diff before any snapshot.
    let (p, starts) = incremental(d, "nosnap.csv", &["x,A,1000,1000,false,bid,10,1"]);
    let e = fails(std::slice::from_ref(&p));
    assert!(
        e.contains(&format!("nosnap.csv:2: (byte {})", starts[2]))
            && e.contains("a diff row for A before any snapshot"),
        "{e}"
    );

    // Under --skip-bad: the bad row's symbol waits for its next snapshot
    // (its diffs skipped and counted); another symbol is untouched.
    let (p, _) = incremental(
        d,
        "skip.csv",
        &[
            snap[0],
            snap[1],
            "x,B,1000,1000,true,bid,5,1",
            "x,B,1000,1000,true,ask,6,1",
            "x,A,2000,2000,false,bid,10,-3",
            "x,A,3000,3000,false,bid,9,4",
            "x,B,3000,3000,false,bid,5.5,2",
            "x,A,4000,4000,true,bid,8,1",
            "x,A,4000,4000,true,ask,12,2",
            "x,A,5000,5000,false,ask,12,0.5",
        ],
    );
    let (report, ticks) = run(std::slice::from_ref(&p), true);
    assert_eq!(report.inputs[0].bad_rows, 2, "{:?}", report.inputs[0]);
    assert!(
        report.inputs[0].bad_examples[1].contains("skip.csv:7:")
            && report.inputs[0].bad_examples[1].contains("after the bad row at line 6"),
        "{:?}",
        report.inputs[0].bad_examples
    );
    let books = rebuild(&ticks);
    assert_eq!(
        books["A"],
        book_of(&[lv(Bid, "8", "1"), lv(Ask, "12", "0.5")])
    );
    assert_eq!(
        books["B"],
        book_of(&[lv(Bid, "5", "1"), lv(Bid, "5.5", "2"), lv(Ask, "6", "1")])
    );
}

#[test]
fn a_crossed_update_is_refused_or_skipped_and_the_book_resyncs_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        "x,A,1000,1000,true,bid,10,1",
        "x,A,1000,1000,true,ask,11,1",
        // Crosses (bid 11.5 > ask 11) until the ask is lifted at 3000.
        "x,A,2000,2000,false,bid,11.5,2",
        "x,A,3000,3000,false,ask,11,0",
        "x,A,3000,3000,false,ask,12,1",
        "x,A,4000,4000,false,bid,10,0",
    ];
    let (p, starts) = incremental(dir.path(), "cross.csv", &rows);
    let e = fails(std::slice::from_ref(&p));
    assert!(
        e.contains(&format!("cross.csv:4: (byte {})", starts[4]))
            && e.contains("crossed (best bid 11.5 >= best ask 11)"),
        "{e}"
    );
    let (report, ticks) = run(std::slice::from_ref(&p), true);
    assert_eq!(report.inputs[0].bad_rows, 1);
    let got = records(&ticks);
    // snapshot; (crossed update not written); a whole snapshot again; diff.
    assert_eq!(
        got.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        vec![(1_000_000, true), (3_000_000, true), (4_000_000, false)]
    );
    assert_eq!(
        rebuild(&ticks)["A"],
        book_of(&[lv(Bid, "11.5", "2"), lv(Ask, "12", "1")])
    );

    // A locked book_snapshot row is refused the same way.
    let snap5 = std::fs::read_to_string(data("tardis_book_snapshot_5.csv")).unwrap();
    let mut lines: Vec<String> = snap5.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replacen(",10000.5,0.8,", ",10001.5,0.8,", 1);
    let p = dir.path().join("locked5.csv");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    let e = fails(std::slice::from_ref(&p));
    assert!(
        e.contains("locked5.csv:3:") && e.contains("is locked"),
        "{e}"
    );
}

#[test]
fn book_snapshot_rows_with_half_a_level_or_a_missing_column_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let snap5 = std::fs::read_to_string(data("tardis_book_snapshot_5.csv")).unwrap();
    let mut lines: Vec<String> = snap5.lines().map(str::to_owned).collect();
    // bids[4]: a price without an amount.
    lines[4] = lines[4].trim_end_matches(",,").to_owned() + ",9990,";
    let p = dir.path().join("half.csv");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    let e = fails(std::slice::from_ref(&p));
    assert!(
        e.contains("half.csv:5:") && e.contains("bids[4] has a price `9990` and an amount ``"),
        "{e}"
    );
    let header =
        "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price\n";
    let p = dir.path().join("cols.csv");
    std::fs::write(&p, header).unwrap();
    let e = fails(std::slice::from_ref(&p));
    assert!(e.contains("no `bids[0].amount` column"), "{e}");
}

#[test]
fn trades_quotes_and_both_book_layouts_merge_in_one_import() {
    let inputs = [
        data("tardis_binance-futures_BTCUSDT_20200222_trades.csv"),
        data("tardis_book_incremental_L2.csv"),
        data("tardis_book_snapshot_5.csv"),
    ];
    let (report, ticks) = run(&inputs, false);
    assert_eq!(report.inputs[0].trades, 9_999);
    assert_eq!(report.inputs[1].books, 8);
    assert_eq!(report.inputs[2].books, 3);
    assert_eq!(ticks.len(), 9_999 + 8 + 3);
    assert!(ticks.windows(2).all(|w| w[0].ts <= w[1].ts));
    let books = rebuild(&ticks);
    assert_eq!(
        books.keys().collect::<Vec<_>>(),
        ["BTC-PERPETUAL", "BTCUSDT", "ETHUSDT"]
    );
}
