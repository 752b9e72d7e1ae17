//! Databento `mbo` records that cannot be applied, made by changing one
//! record of the real CME ESM4 sample: a modify that changes an order's
//! side and a cancel of an order id never added are each an error naming
//! the record's byte offset, or under `--skip-bad` skipped and counted with
//! it; the rest of the file still rebuilds an uncrossed book.

mod replay_support;

use replay_support::{data, files_in};
use tickwire::recordings::import::{Vendor, import, rebuild_dbn_books};
use tickwire::recordings::selection::Selection;

/// Offsets of `action` and `side` and `order_id` in an `MboMsg` record.
const ORDER_ID: usize = 16;
const ACTION: usize = 38;
const SIDE: usize = 39;

/// The decompressed sample and the byte offset of every record.
fn sample() -> (Vec<u8>, Vec<usize>) {
    let raw = std::fs::read(data(
        "glbx-mdp3_orderbooks_mbo_20240508T000000-000002.dbn.zst",
    ))
    .unwrap();
    let plain = zstd::stream::decode_all(raw.as_slice()).unwrap();
    let mut at = 8 + u32::from_le_bytes(plain[4..8].try_into().unwrap()) as usize;
    let mut offsets = Vec::new();
    while at < plain.len() {
        offsets.push(at);
        at += plain[at] as usize * 4;
    }
    (plain, offsets)
}

fn order_id(rec: &[u8]) -> u64 {
    u64::from_le_bytes(rec[ORDER_ID..ORDER_ID + 8].try_into().unwrap())
}

/// Imports `bytes` as a plain DBN file: the error without `--skip-bad`,
/// then the bad-record count and first example with it.
fn import_both(bytes: &[u8]) -> (String, u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("edited.dbn");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out.twr");
    let inputs = [input.clone()];
    let e = import(Vendor::Dbn, &inputs, &out, false, &Selection::default())
        .unwrap_err()
        .to_string();
    assert_eq!(files_in(dir.path()), ["edited.dbn"], "nothing written");
    let report = import(Vendor::Dbn, &inputs, &out, true, &Selection::default()).unwrap();
    let (rebuilt, _, _) = rebuild_dbn_books(&input).unwrap();
    assert_eq!(rebuilt.crossed_at_boundary, 0, "{rebuilt:?}");
    let r = &report.inputs[0];
    (
        e,
        r.bad_rows,
        r.bad_examples.first().cloned().unwrap_or_default(),
    )
}

#[test]
fn a_modify_that_changes_side_is_refused_with_its_byte_offset() {
    let (mut plain, offsets) = sample();
    let mut added = std::collections::HashSet::new();
    let at = offsets
        .iter()
        .copied()
        .find(|&o| {
            let rec = &plain[o..];
            match rec[ACTION] {
                b'A' => {
                    added.insert(order_id(rec));
                    false
                }
                b'M' => added.contains(&order_id(rec)),
                _ => false,
            }
        })
        .expect("a modify of an order added earlier");
    plain[at + SIDE] = if plain[at + SIDE] == b'B' { b'A' } else { b'B' };
    let (e, bad, example) = import_both(&plain);
    let want = format!(
        "edited.dbn: byte {at}: modify of order {}",
        order_id(&plain[at..])
    );
    assert!(
        e.contains(&want) && e.contains("changes its side"),
        "`{e}` wants `{want}`"
    );
    assert_eq!(bad, 1);
    assert!(example.contains(&format!("byte {at}:")), "{example}");
}

#[test]
fn a_cancel_of_an_unknown_order_is_refused_with_its_byte_offset() {
    let (mut plain, offsets) = sample();
    let at = offsets
        .iter()
        .copied()
        .find(|&o| plain[o + ACTION] == b'C')
        .expect("a cancel");
    let unknown: u64 = 0xdead_beef_0000_0001;
    plain[at + ORDER_ID..at + ORDER_ID + 8].copy_from_slice(&unknown.to_le_bytes());
    let (e, bad, example) = import_both(&plain);
    let want =
        format!("edited.dbn: byte {at}: cancel of order {unknown}, which is not in the book");
    assert!(e.contains(&want), "`{e}` wants `{want}`");
    // The order it really cancelled stays in the book: nothing else fails.
    assert_eq!(bad, 1);
    assert!(example.contains(&format!("byte {at}:")), "{example}");
}
