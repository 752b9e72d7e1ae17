//! `tickwire bench --book` end to end: a spawned server, a short bounded
//! run at each `--book-depth`, and the report's per-phase table read back.

use std::time::Duration;

mod support;

use support::bench;

/// The `unchanged` and `deliv./tick in` columns of a phase's row in the
/// second table (the one headed `bytes/deliv.`).
fn second_table_row(stdout: &str, phase: &str) -> (f64, f64) {
    let table = stdout
        .split_once("bytes/deliv.")
        .unwrap_or_else(|| panic!("no second table:\n{stdout}"))
        .1;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(phase))
        .unwrap_or_else(|| panic!("no {phase} row:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 7, "{row}");
    (cols[6].parse().unwrap(), cols[3].parse().unwrap())
}

#[test]
fn every_book_depth_runs_and_reports_unchanged_diffs() {
    for depth in ["10", "25", "full"] {
        // One level per side: every removal after the first of a level is
        // a removal of an absent level, which the server does not sequence.
        let out = bench(
            &[
                "--book",
                "--book-depth",
                depth,
                "--book-levels",
                "1",
                "--clients",
                "6",
                "--symbols",
                "2",
                "--per-client",
                "1",
                "--slow",
                "1",
                "--rate",
                "300",
                "--seconds",
                "1",
                "--warmup",
                "0.5",
            ],
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{depth}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("books at depth {depth} ")),
            "{stdout}"
        );
        let (book_unchanged, book_per_tick) = second_table_row(&stdout, "book");
        let (trades_unchanged, trades_per_tick) = second_table_row(&stdout, "trades");
        assert!(book_unchanged > 0.0, "{depth}: {stdout}");
        assert_eq!(trades_unchanged, 0.0, "{depth}: {stdout}");
        assert!(book_per_tick > 0.0 && trades_per_tick > 0.0, "{stdout}");
    }
}

#[test]
fn a_depth_the_server_does_not_offer_is_refused() {
    let out = bench(&["--book", "--book-depth", "11"], Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--book-depth") && err.contains("full"),
        "{err}"
    );
}
