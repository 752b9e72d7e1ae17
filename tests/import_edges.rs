//! Import inputs a user gets wrong: impossible Lean trades, the same file
//! twice, a binary file given as Tardis CSV, and files of another `--from`.

mod replay_support;

use std::path::{Path, PathBuf};

use replay_support::{data, files_in, lean, make_zip};
use tickwire::recordings::import::{ImportError, Vendor, import};
use tickwire::recordings::selection::Selection;

fn run(vendor: Vendor, inputs: &[PathBuf], out: &Path) -> Result<u64, ImportError> {
    import(vendor, inputs, out, false, &Selection::default()).map(|r| r.written)
}

#[test]
fn lean_trades_with_a_price_at_or_below_zero_or_no_size_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (row2, words) in [
        ("34200001,-1800000,100,Q,0,0", "price is -1800000×10000"),
        ("34200001,0,100,Q,0,0", "price is 0×10000"),
        ("34200001,1800000,0,Q,0,0", "size is 0"),
    ] {
        let zip = dir.path().join("t.zip");
        let rows = format!("34200000,1800000,100,Q,0,0\n{row2}\n");
        make_zip(&zip, &[("20131007_aig_Trade_Tick.csv", rows.as_bytes())]);
        let out = dir.path().join("t.twr");
        let e = run(Vendor::Lean, std::slice::from_ref(&zip), &out).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ImportError::BadRow { line: 2, .. }), "{msg}");
        assert!(msg.contains(words), "{msg}");
        assert!(!out.exists());
        // --skip-bad skips and counts it.
        let r = import(Vendor::Lean, &[zip], &out, true, &Selection::default()).unwrap();
        assert_eq!((r.written, r.inputs[0].bad_rows), (1, 1));
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn the_same_input_twice_is_refused_by_any_path() {
    let dir = tempfile::tempdir().unwrap();
    let ibm = lean("ibm_20131007_trade.zip");
    let link = dir.path().join("ibm-link.zip");
    std::os::unix::fs::symlink(&ibm, &link).unwrap();
    let out = dir.path().join("o.twr");
    let e = run(Vendor::Lean, &[ibm.clone(), link.clone()], &out).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("ibm-link.zip")
            && msg.contains("same file")
            && msg.contains("ibm_20131007_trade.zip"),
        "{msg}"
    );
    assert_eq!(files_in(dir.path()), ["ibm-link.zip"], "no output");
}

#[test]
fn a_binary_file_as_tardis_is_described_not_printed_and_other_formats_get_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.twr");
    // A DBN file given as Tardis: no raw bytes in the message, and a hint.
    let dbn = data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst");
    let msg = run(Vendor::Tardis, &[dbn], &out).unwrap_err().to_string();
    assert!(
        msg.contains("binary data") && msg.contains("try --from dbn"),
        "{msg}"
    );
    assert!(
        msg.chars().all(|c| !c.is_control() && c != '\u{fffd}'),
        "{msg:?}"
    );
    let plain = data("dbn-testdata_ESH1_20201228_trades.dbn");
    let msg = run(Vendor::Tardis, &[plain], &out).unwrap_err().to_string();
    assert!(msg.contains("try --from dbn"), "{msg}");
    assert!(
        msg.chars().all(|c| !c.is_control() && c != '\u{fffd}'),
        "{msg:?}"
    );
    // A Lean zip as Tardis, a Tardis CSV as Lean.
    let msg = run(Vendor::Tardis, &[lean("aig_20131007_trade.zip")], &out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("try --from lean"), "{msg}");
    let csv = data("tardis_binance-futures_BTCUSDT_20200222_trades.csv");
    let msg = run(Vendor::Lean, std::slice::from_ref(&csv), &out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("try --from tardis"), "{msg}");
    let msg = run(Vendor::Dbn, &[csv], &out).unwrap_err().to_string();
    assert!(msg.contains("try --from tardis"), "{msg}");
    // A tickwire recording given to import.
    let rec = dir.path().join("r.twr");
    run(Vendor::Lean, &[lean("aig_20131007_trade.zip")], &rec).unwrap();
    let msg = run(Vendor::Dbn, &[rec], &out).unwrap_err().to_string();
    assert!(msg.contains("tickwire convert"), "{msg}");
}

#[test]
fn a_corrupt_zip_is_reported_as_corruption_not_as_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(lean("ibm_20131007_trade.zip")).unwrap();
    // Damage the compressed data in the middle of the entry.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let zip = dir.path().join("ibm_20131007_trade.zip");
    std::fs::write(&zip, &bytes).unwrap();
    let out = dir.path().join("o.twr");
    // Even --skip-bad does not skip it: the file is damaged, not a row.
    let e = import(Vendor::Lean, &[zip], &out, true, &Selection::default()).unwrap_err();
    assert!(matches!(e, ImportError::BadFile { .. }), "{e}");
    assert!(e.to_string().contains("the zip is corrupt"), "{e}");
    assert!(!out.exists());
}

#[test]
fn options_symbols_with_spaces_are_mapped_to_underscores() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("opts.csv");
    std::fs::write(
        &csv,
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n\
         cme,ESZ4 P5000,1700000000000000,1700000000000001,1,buy,12.25,1\n\
         opra,AAPL  240119C00190000 ,1700000000000002,1700000000000003,2,sell,1.5,3\n",
    )
    .unwrap();
    let out = dir.path().join("o.twr");
    // Was: the whole file failed on the first row ("symbol ... ' '").
    assert_eq!(run(Vendor::Tardis, &[csv], &out).unwrap(), 2);
    let syms: Vec<String> = tickwire::recordings::format::read_all(&out)
        .unwrap()
        .iter()
        .map(|t| t.sym.to_string())
        .collect();
    assert_eq!(syms, ["ESZ4_P5000", "AAPL_240119C00190000"]);
}

/// A damaged `.dbn.zst` says where decompression failed, in both streams:
/// the decompressed bytes produced and how far into the file the decoder
/// had read.
#[test]
fn a_corrupt_zst_names_the_position_of_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(data("glbx-mdp3_ESU4_20240701_mbp-1.dbn.zst")).unwrap();
    let total = bytes.len();
    // Cut it in the middle: decompression stops part way through.
    bytes.truncate(total / 2);
    let zst = dir.path().join("cut.dbn.zst");
    std::fs::write(&zst, &bytes).unwrap();
    let out = dir.path().join("o.twr");
    let e = run(Vendor::Dbn, &[zst], &out).unwrap_err().to_string();
    let number_after = |label: &str| -> u64 {
        let at = e
            .find(label)
            .unwrap_or_else(|| panic!("no `{label}` in: {e}"));
        e[at + label.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no number after `{label}`: {e}"))
    };
    let decompressed = number_after("after byte ");
    let compressed = number_after("within the first ");
    assert!(decompressed > 0, "some data came out before the cut: {e}");
    assert!(compressed <= (total / 2) as u64, "{e}");
    assert!(
        e.contains(&format!("of the file's {} bytes", total / 2)),
        "{e}"
    );
    assert!(!out.exists());
}
