//! Binary frames in the outbox: records sharing frames, symbol
//! announcements, control messages between records.

use std::sync::Arc;

use super::outbox::MAX_RECORDS_PER_FRAME;
use super::{ClientId, WorkerState};
use crate::model::decimal::Fixed;
use crate::model::tick::{Channel, ChannelSet, Event, KeyId, Side, Tick};
use crate::pipeline::ingest::RingItem;
use crate::pipeline::stats::Stats;
use crate::wire::encode::{EncodedTick, Encoding, RECORD_LEN};
use crate::wire::frame::OPCODE_BINARY;

fn item(sym: u32, seq: u64) -> RingItem {
    Arc::new(EncodedTick::new(Tick {
        key: KeyId::new(sym, Channel::Trade),
        sym: format!("S{sym}").into(),
        seq,
        ts: seq,
        rx: seq,
        event: Event::Trade {
            px: Fixed(seq as i64),
            qty: Fixed(1),
            side: Side::Sell,
        },
    }))
}

/// Splits queued bytes into (opcode, payload) frames.
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, off) = match b[1] {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => panic!("binary frames stay under 64 KiB"),
            n => (n as usize, 2),
        };
        assert!(off == 2 || len >= 126, "length in its shortest form");
        out.push((b[0] & 0x0f, b[off..off + len].to_vec()));
        b = &b[off + len..];
    }
    out
}

fn binary_star_client() -> (WorkerState, ClientId, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let mut st = WorkerState::default();
    let id = st.add_in_memory_client_with(stats.clone(), 1 << 20, Encoding::Binary);
    st.subscribe_star(id, ChannelSet::BOTH);
    (st, id, stats)
}

#[test]
fn pending_records_share_one_frame_after_the_symbol_announcement() {
    let (mut st, id, stats) = binary_star_client();
    for seq in 1..=3 {
        st.deliver(&item(5, seq));
    }
    let c = st.client(id).unwrap();
    let f = frames(c.queued());
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].0, crate::wire::frame::OPCODE_TEXT);
    let v: serde_json::Value = serde_json::from_slice(&f[0].1).unwrap();
    assert_eq!(v, serde_json::json!({"type":"symbol","sym":"S5","id":5}));
    assert_eq!(f[1].0, OPCODE_BINARY);
    assert_eq!(f[1].1.len(), 3 * RECORD_LEN);
    for (i, rec) in f[1].1.chunks(RECORD_LEN).enumerate() {
        assert_eq!(rec, item(5, i as u64 + 1).record(false));
    }
    let queued = stats
        .queued_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        queued as usize,
        c.queued().len(),
        "gauge follows the rewrites"
    );
    assert_eq!(Stats::get(&stats.ticks_out[1]), 3);
    assert_eq!(Stats::get(&stats.tick_frames_out[1]), 1);
}

#[test]
fn a_full_frame_starts_the_next_and_a_known_symbol_is_not_announced() {
    let (mut st, id, _) = binary_star_client();
    st.client(id).unwrap().learn_ids([5]);
    for seq in 1..=(MAX_RECORDS_PER_FRAME as u64 + 10) {
        st.deliver(&item(5, seq));
    }
    let c = st.client(id).unwrap();
    let f = frames(c.queued());
    let sizes: Vec<(u8, usize)> = f.iter().map(|(op, p)| (*op, p.len())).collect();
    assert_eq!(
        sizes,
        vec![
            (OPCODE_BINARY, MAX_RECORDS_PER_FRAME * RECORD_LEN),
            (OPCODE_BINARY, 10 * RECORD_LEN)
        ]
    );
}

#[test]
fn a_control_message_between_records_closes_the_frame() {
    let (mut st, id, _) = binary_star_client();
    st.deliver(&item(1, 1));
    st.client(id)
        .unwrap()
        .push_control(crate::wire::frame::frame(
            crate::wire::frame::OPCODE_TEXT,
            b"{}",
        ));
    st.deliver(&item(1, 2));
    st.deliver(&item(2, 1));
    let f = frames(st.client(id).unwrap().queued());
    let ops: Vec<(u8, usize)> = f.iter().map(|(op, p)| (*op, p.len())).collect();
    assert_eq!(ops[0].0, 1); // symbol S1
    assert_eq!(ops[1], (2, 64));
    assert_eq!(ops[2], (1, 2));
    assert_eq!(ops[3], (2, 64));
    assert_eq!(ops[4].0, 1); // symbol S2
    assert_eq!(ops[5], (2, 64));
    assert_eq!(ops.len(), 6);
}

#[test]
fn json_clients_are_unchanged() {
    let stats = Arc::new(Stats::default());
    let mut st = WorkerState::default();
    let id = st.add_in_memory_client(stats.clone(), 1 << 20);
    st.subscribe_star(id, ChannelSet::BOTH);
    st.deliver(&item(3, 1));
    st.deliver(&item(3, 2));
    let f = frames(st.client(id).unwrap().queued());
    assert_eq!(f.len(), 2);
    assert_eq!(f[1].1, item(3, 2).json[2..].to_vec());
    assert_eq!(Stats::get(&stats.tick_frames_out[0]), 2);
}

#[tokio::test]
async fn a_book_snapshot_waits_until_the_journal_has_written_its_last_update() {
    use crate::model::book::{BookChange, BookSide, Level};
    use crate::model::symbols::SymbolTable;
    use crate::pipeline::ingest::Ingest;
    use crate::pipeline::stats::Origin;
    use std::sync::atomic::{AtomicU64, Ordering};

    let stats = Arc::new(Stats::default());
    let (ingest, mut readers) = Ingest::new(64, 1, Arc::new(SymbolTable::new(10)), stats.clone());
    let watermark = Arc::new(AtomicU64::new(0));
    ingest.gate_delivery(watermark.clone());
    let level = |side, px, sz| Level {
        side,
        px: Fixed(px),
        sz: Fixed(sz),
    };
    let snap = BookChange::Snapshot(vec![
        level(BookSide::Bid, 99, 1),
        level(BookSide::Ask, 101, 1),
    ]);
    let first = ingest.admit_book("BK", 1, snap).unwrap();
    let (sid, _) = ingest.symbols().lookup("BK").unwrap();
    let key = KeyId::new(sid, Channel::Book);
    ingest
        .publish_book(&first, Origin::Publisher)
        .await
        .unwrap();
    let mut items = Vec::new();
    let mut reader = readers.pop().unwrap().ungated();
    reader.read_batch(&mut items, 16);
    // The journal has written the snapshot (and its derived quote)...
    watermark.store(items.last().unwrap().offset, Ordering::Release);
    // ... but not this update, which the book now holds.
    let diff = BookChange::Diff(vec![level(BookSide::Bid, 99, 5)]);
    let second = ingest.admit_book("BK", 2, diff).unwrap();
    ingest
        .publish_book(&second, Origin::Publisher)
        .await
        .unwrap();
    let before = items.len();
    reader.read_batch(&mut items, 16);
    let update = items[before].clone();
    assert_eq!((update.tick.key, update.tick.seq), (key, 2));

    let mut st = WorkerState::default();
    let id = st.add_in_memory_client(stats, 1 << 20);
    st.subscribe_keys(id, &[key]);
    let (mut out, mut held) = (Vec::new(), Vec::new());
    ingest.last_values_held([key], &mut out, &mut held);
    assert!(out.is_empty(), "not sent: it holds an update not journaled");
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].0, held[0].1.tick.seq), (update.offset, 2));
    st.hold_snapshots(id, held);
    // Delivery up to the watermark: nothing of the book yet (the diff
    // before the snapshot is dropped, it is in the snapshot).
    for item in &items[..before] {
        st.deliver(item);
    }
    assert!(st.client(id).unwrap().queued().is_empty());
    // The journal writes the update; delivery reaches it: the snapshot
    // goes out, and the update itself (in the snapshot) does not.
    watermark.store(update.offset, Ordering::Release);
    st.deliver(&update);
    let sent = frames(st.client(id).unwrap().queued());
    assert_eq!(sent.len(), 1, "{sent:?}");
    let msg: serde_json::Value = serde_json::from_slice(&sent[0].1).unwrap();
    assert_eq!(
        (msg["seq"].as_u64(), msg["snap"].as_bool()),
        (Some(2), Some(true)),
        "{msg}"
    );
}
