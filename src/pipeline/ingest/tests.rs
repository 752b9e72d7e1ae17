//! Ingest checked without sockets: sequencing, staging, history.

use super::*;
use crate::model::decimal::Fixed;
use crate::model::tick::Side;

fn trade(sym: &str, px: i64) -> NewTick {
    NewTick {
        book: None,
        sym: sym.into(),
        ts: 1,
        event: Event::Trade {
            px: Fixed(px),
            qty: Fixed(1),
            side: Side::Buy,
        },
    }
}

fn setup(cap: usize) -> (Arc<Ingest>, Vec<IngestReader>) {
    Ingest::new(
        cap,
        1,
        Arc::new(SymbolTable::new(100)),
        Arc::new(Stats::default()),
    )
}

#[test]
fn seq_is_per_key_and_contiguous() {
    let (ingest, mut readers) = setup(16);
    let batch: Vec<_> = ["A", "B", "A", "A", "B"]
        .iter()
        .map(|s| ingest.admit(trade(s, 1)).unwrap())
        .collect();
    assert_eq!(ingest.try_publish(&batch), 5);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 10);
    let seqs: Vec<_> = out
        .iter()
        .map(|e| (e.tick.sym.to_string(), e.tick.seq))
        .collect();
    assert_eq!(
        seqs,
        [("A", 1), ("B", 1), ("A", 2), ("A", 3), ("B", 2)].map(|(s, n)| (s.to_string(), n))
    );
    let mut last = Vec::new();
    ingest.all_last_values(ChannelSet::BOTH, &mut last);
    assert_eq!(last.iter().map(|e| e.tick.seq).collect::<Vec<_>>(), [3, 2]);
    assert_eq!(ingest.symbols().seen().len(), 2);
}

#[test]
fn a_full_ring_accepts_only_what_fits() {
    let (ingest, mut readers) = setup(4);
    let batch: Vec<_> = (0..6)
        .map(|i| ingest.admit(trade("A", i)).unwrap())
        .collect();
    assert_eq!(ingest.try_publish(&batch), 4);
    assert_eq!(ingest.try_publish(&batch[4..]), 0);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 1);
    assert_eq!(ingest.try_publish(&batch[4..]), 1);
}

fn sequenced(ingest: &Ingest, sym: &str, seq: u64) -> Tick {
    let a = ingest.admit(trade(sym, seq as i64)).unwrap();
    Tick {
        key: a.key,
        sym: a.sym,
        seq,
        ts: 1,
        rx: 42,
        event: a.event,
    }
}

#[test]
fn sequenced_ticks_keep_their_seq_and_duplicates_are_dropped() {
    let (ingest, mut readers) = setup(16);
    let batch: Vec<Tick> = [("A", 1), ("A", 2), ("B", 7), ("A", 2), ("A", 1), ("A", 5)]
        .iter()
        .map(|&(s, n)| sequenced(&ingest, s, n))
        .collect();
    assert_eq!(ingest.try_publish_sequenced(&batch), 6);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 16);
    let got: Vec<_> = out
        .iter()
        .map(|e| (e.tick.sym.to_string(), e.tick.seq, e.tick.rx))
        .collect();
    assert_eq!(
        got,
        [("A", 1), ("A", 2), ("B", 7), ("A", 5)].map(|(s, n)| (s.to_string(), n, 42))
    );
    assert_eq!(ingest.stats.bus_duplicates.load(Ordering::Relaxed), 2);
    // A→5 skipped 3 and 4; B starting at 7 is not a gap (first seen).
    assert_eq!(ingest.stats.bus_seq_gaps.load(Ordering::Relaxed), 1);
    let key_a = batch[0].key;
    assert_eq!(ingest.published_seq(key_a), 5);
}

#[test]
fn a_full_ring_stops_sequenced_publishing_without_losing_the_rest() {
    let (ingest, mut readers) = setup(2);
    let batch: Vec<Tick> = (1..=4).map(|n| sequenced(&ingest, "A", n)).collect();
    assert_eq!(ingest.try_publish_sequenced(&batch), 2);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 16);
    assert_eq!(ingest.try_publish_sequenced(&batch[2..]), 2);
}

#[test]
fn a_last_value_from_elsewhere_serves_snapshots_but_not_the_live_seq() {
    let (ingest, mut readers) = setup(16);
    let t3 = sequenced(&ingest, "A", 3);
    let key = t3.key;
    ingest.offer_last_value(t3);
    let mut last = Vec::new();
    ingest.last_values([key], &mut last);
    assert_eq!(last[0].tick.seq, 3);
    // An older one does not replace it.
    ingest.offer_last_value(sequenced(&ingest, "A", 2));
    last.clear();
    ingest.last_values([key], &mut last);
    assert_eq!(last[0].tick.seq, 3);
    // The live tick 3 itself still goes out to subscribers.
    assert_eq!(ingest.published_seq(key), 0);
    assert_eq!(
        ingest.try_publish_sequenced(&[sequenced(&ingest, "A", 3)]),
        1
    );
    let mut out = Vec::new();
    assert_eq!(readers[0].read_batch(&mut out, 16), 1);
}

#[test]
fn a_resumed_sequence_continues_after_the_last_seq() {
    let (ingest, mut readers) = setup(16);
    ingest.resume_sequence(sequenced(&ingest, "A", 10));
    ingest.resume_sequence(sequenced(&ingest, "A", 4)); // never lowers
    let a = ingest.admit(trade("A", 1)).unwrap();
    assert_eq!(ingest.try_publish(&[a]), 1);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 16);
    assert_eq!(out[0].tick.seq, 11);
    assert_eq!(ingest.symbols().seen().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn publish_waits_for_space_then_delivers_everything() {
    let (ingest, mut readers) = setup(4);
    let batch: Vec<_> = (0..100)
        .map(|i| ingest.admit(trade("A", i)).unwrap())
        .collect();
    let mut reader = readers.pop().unwrap();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 100 {
            let mut out = Vec::new();
            if reader.read_batch(&mut out, 3) == 0 {
                reader.waker.notified().await;
            }
            got.extend(out.iter().map(|e| e.tick.seq));
        }
        got
    });
    ingest.publish(&batch).await;
    let got = consumer.await.unwrap();
    assert_eq!(got, (1..=100).collect::<Vec<u64>>());
    assert!(ingest.stats.ring_full.load(Ordering::Relaxed) > 0);
}

fn trade_at(sym: &str, ts: u64, px: i64) -> NewTick {
    NewTick {
        ts,
        ..trade(sym, px)
    }
}

#[test]
fn bars_follow_trades_with_their_own_seq_and_offsets() {
    use crate::model::tick::Channel;
    let (ingest, mut readers) = setup(16);
    ingest.set_bars(true);
    const DAY: u64 = 86_400_000_000_000;
    let t0 = 19_000 * DAY;
    let a = ingest.admit(trade_at("A", t0 + 5, 10)).unwrap();
    assert_eq!(ingest.try_publish(std::slice::from_ref(&a)), 1);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 100);
    // The trade, then one new bar per interval, at the next offsets.
    let channels: Vec<_> = out.iter().map(|e| e.tick.key.channel()).collect();
    assert_eq!(
        channels,
        [
            Channel::Trade,
            Channel::Bar1s,
            Channel::Bar1m,
            Channel::Bar1h,
            Channel::Bar1d
        ]
    );
    assert_eq!(
        out.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // The next day's trade crosses every boundary: four closes, and (a
    // second of wall time later) four opens: nine slots, all in one go.
    std::thread::sleep(std::time::Duration::from_millis(1001));
    let b = ingest.admit(trade_at("A", t0 + DAY, 11)).unwrap();
    assert_eq!(ingest.try_publish(std::slice::from_ref(&b)), 1);
    out.clear();
    readers[0].read_batch(&mut out, 100);
    assert_eq!(out.len(), 9);
    let closed: Vec<_> = out
        .iter()
        .filter_map(|e| match &e.tick.event {
            Event::Bar(b) => Some((b.closed, e.tick.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(closed.iter().filter(|c| c.0).count(), 4);
    assert!(closed.iter().all(|&(c, seq)| seq == if c { 2 } else { 3 }));
}

#[test]
fn the_bar_clock_closes_a_quiet_symbols_bar_by_the_feeds_time() {
    let (ingest, mut readers) = setup(64);
    ingest.set_bars(true);
    let t0 = 1_700_000_000_000_000_000u64;
    let a = ingest.admit(trade_at("QUIET", t0, 10)).unwrap();
    let b = ingest
        .admit(trade_at("BUSY", t0 + 1_500_000_000, 10))
        .unwrap();
    assert_eq!(ingest.try_publish(&[a, b]), 2);
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 100);
    out.clear();
    // BUSY's trade put the feed past QUIET's 1 s bar: the clock closes it
    // (and nothing else: every other bar is still in its interval).
    let closed = run_bar_clock(&ingest, &mut readers[0], wall_clock_ns());
    assert_eq!(closed, [("QUIET".to_string(), "1s", true)]);
    // Closed once.
    assert!(run_bar_clock(&ingest, &mut readers[0], wall_clock_ns()).is_empty());
}

/// Runs the bar clock at `wall`; returns the bars it published, as
/// (symbol, interval, closed).
fn run_bar_clock(
    ingest: &Ingest,
    reader: &mut IngestReader,
    wall: u64,
) -> Vec<(String, &'static str, bool)> {
    ingest.bar_clock(wall);
    let mut out = Vec::new();
    reader.read_batch(&mut out, 100);
    out.iter()
        .map(|e| match &e.tick.event {
            Event::Bar(b) => (e.tick.sym.to_string(), b.interval.as_str(), b.closed),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn each_symbol_closes_by_the_clock_of_its_own_source() {
    let (ingest, mut readers) = setup(64);
    ingest.set_bars(true);
    let (old_source, new_source) = (FeedClock::new(), FeedClock::new());
    let y2020 = 1_582_329_600_000_000_000u64;
    let y2024 = 1_715_126_400_000_000_000u64;
    let old = ingest.admit(trade_at("OLD", y2020, 10)).unwrap();
    let new = ingest.admit(trade_at("NEW", y2024, 10)).unwrap();
    let past_new = ingest
        .admit(trade_at("NEW2", y2024 + 1_500_000_000, 10))
        .unwrap();
    assert_eq!(
        ingest.try_publish_from_source(&[old], Origin::Recorded, &old_source),
        1
    );
    assert_eq!(
        ingest.try_publish_from_source(&[new, past_new], Origin::Publisher, &new_source),
        2
    );
    let mut out = Vec::new();
    readers[0].read_batch(&mut out, 100);
    out.clear();
    // The 2024 source is past NEW's 1 s bar; OLD's source is still in its
    // 2020 second, so OLD's bars stay open (one global clock closed them).
    let closed = run_bar_clock(&ingest, &mut readers[0], wall_clock_ns());
    assert_eq!(closed, [("NEW".to_string(), "1s", true)]);
    // A silent source's time moves on with the wall clock after the grace:
    // three seconds later each source is two seconds on, OLD's 1 s bar
    // closes by its own 2020 time, NEW2's by 2024's.
    let closed = run_bar_clock(&ingest, &mut readers[0], wall_clock_ns() + 3_000_000_000);
    assert_eq!(
        closed,
        [
            ("OLD".to_string(), "1s", true),
            ("NEW2".to_string(), "1s", true)
        ]
    );
}
