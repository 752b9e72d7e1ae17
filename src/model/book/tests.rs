//! Unit tests of the book model: levels, windows and their diffs, the checksum.

use super::checksum::push_checksum_digits;
use super::*;

fn lv(side: BookSide, px: i64, sz: i64) -> Level {
    Level {
        side,
        px: Fixed::from_units(px).unwrap(),
        sz: Fixed::from_units(sz).unwrap(),
    }
}

#[test]
fn a_refused_diff_changes_nothing() {
    let mut b = Book::new();
    let snap = BookChange::Snapshot(vec![lv(BookSide::Bid, 99, 1), lv(BookSide::Ask, 101, 2)]);
    b.apply("X", &snap, false, 100).unwrap();
    let before = b.clone();
    let cross = BookChange::Diff(vec![lv(BookSide::Bid, 98, 0), lv(BookSide::Bid, 101, 5)]);
    assert!(matches!(
        b.apply("X", &cross, true, 100),
        Err(BookError::Crossed { what: "locked", .. })
    ));
    assert_eq!(b, before);
    let many = BookChange::Diff((1..=3).map(|p| lv(BookSide::Bid, p, 1)).collect());
    assert!(matches!(
        b.apply("X", &many, true, 3),
        Err(BookError::TooManyLevels {
            levels: 4,
            limit: 3
        })
    ));
    assert_eq!(b, before);
    let neg = BookChange::Diff(vec![Level {
        side: BookSide::Ask,
        px: Fixed::from_units(102).unwrap(),
        sz: Fixed(-1),
    }]);
    assert!(matches!(
        b.apply("X", &neg, true, 100),
        Err(BookError::NegativeSize { index: 1, .. })
    ));
    assert!(matches!(
        Book::new().apply("X", &BookChange::Diff(vec![]), false, 10),
        Err(BookError::DiffBeforeSnapshot(_))
    ));
}

#[test]
fn window_diffs_add_and_remove_levels_crossing_the_edge() {
    let mut b = Book::new();
    let levels: Vec<Level> = (1..=5).map(|p| lv(BookSide::Bid, p, 1)).collect();
    b.apply("X", &BookChange::Snapshot(levels), false, 100)
        .unwrap();
    let before = b.window(3);
    // A new best bid pushes bid 3 out of a 3-level window.
    b.apply(
        "X",
        &BookChange::Diff(vec![lv(BookSide::Bid, 6, 2)]),
        true,
        100,
    )
    .unwrap();
    let d = window_diff(&before, &b.window(3));
    assert_eq!(d, vec![lv(BookSide::Bid, 6, 2), lv(BookSide::Bid, 3, 0)]);
}

/// The checksum as first written (a text of filtered digits), kept as
/// the reference the in-place version must match.
fn reference_checksum(b: &Book) -> u32 {
    let mut text = Vec::new();
    let push = |v: Fixed, text: &mut Vec<u8>| {
        let mut num = Vec::new();
        v.write_to(&mut num);
        let digits = num.iter().copied().filter(|&b| b != b'.');
        text.extend(digits.skip_while(|&b| b == b'0'));
    };
    for (px, sz) in b.top_asks(CHECKSUM_LEVELS) {
        push(px, &mut text);
        push(sz, &mut text);
    }
    for (px, sz) in b.top_bids(CHECKSUM_LEVELS) {
        push(px, &mut text);
        push(sz, &mut text);
    }
    crc32fast::hash(&text)
}

#[test]
fn merged_window_diffs_and_checksums_match_the_reference_on_random_books() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut book = Book::new();
    let (mut before, mut after) = (Window::default(), Window::default());
    for _ in 0..5_000 {
        book.fill_window(25, &mut before);
        let old = book.clone();
        // A few levels at once, around a mid price of 1000 (raw units
        // with fractions, so the checksum text drops `.` and zeros).
        for _ in 0..1 + next(3) {
            let side = if next(2) == 0 {
                BookSide::Bid
            } else {
                BookSide::Ask
            };
            let off = next(40) as i64 * 1_250_000;
            let px = match side {
                BookSide::Bid => 999_000_000_000 - off,
                BookSide::Ask => 1_001_000_000_000 + off,
            };
            let sz = if next(4) == 0 {
                0
            } else {
                next(5_000_000_000) as i64
            };
            book.set(side, Fixed(px), Fixed(sz));
        }
        book.fill_window(25, &mut after);
        for n in [10, 25] {
            let mut got = Vec::new();
            Window::diff(&before, &after, n, &mut got);
            assert_eq!(
                got,
                window_diff(&old.window(n), &book.window(n)),
                "depth {n}"
            );
        }
        assert_eq!(
            before.same_top(&after, 10),
            old.window(10) == book.window(10)
        );
        assert_eq!(book.checksum(), reference_checksum(&book));
    }
}

#[test]
fn checksum_digits_are_the_json_text_without_dot_and_leading_zeros() {
    let reference = |v: Fixed| {
        let mut num = Vec::new();
        v.write_to(&mut num);
        let digits = num.iter().copied().filter(|&b| b != b'.');
        digits.skip_while(|&b| b == b'0').collect::<Vec<u8>>()
    };
    let mut values = vec![
        0,
        1,
        9,
        10,
        1_000_000_000,
        50_000_000,
        -1,
        -500_000_000,
        i64::MAX,
        i64::MIN,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Values with many trailing zeros are the interesting ones.
        values.push(((x >> (x % 40)) as i64).wrapping_mul(10i64.pow((x % 10) as u32)));
    }
    let mut buf = itoa::Buffer::new();
    for v in values {
        let mut got = Vec::new();
        push_checksum_digits(&mut got, &mut buf, Fixed(v));
        assert_eq!(got, reference(Fixed(v)), "{v}");
    }
}

#[test]
fn a_repeated_level_is_refused_in_small_and_large_changes() {
    for n in [2usize, 40] {
        let mut levels: Vec<Level> = (1..n as i64).map(|p| lv(BookSide::Bid, p, 1)).collect();
        levels.push(lv(BookSide::Bid, 1, 2));
        let snap = BookChange::Snapshot(levels);
        assert!(matches!(
            Book::new().apply("X", &snap, false, 100),
            Err(BookError::DuplicateLevel { index, .. }) if index == n
        ));
    }
}

#[test]
fn the_checksum_follows_krakens_text() {
    // Kraken's documented v2 example shape: "45285.2" → "452852",
    // "0.00100000" → "100000" (ours has no trailing zeros: "0.001" → "1").
    let mut b = Book::new();
    b.set(
        BookSide::Ask,
        Fixed::parse("45285.2").unwrap(),
        Fixed::parse("0.001").unwrap(),
    );
    b.set(
        BookSide::Bid,
        Fixed::parse("45283.5").unwrap(),
        Fixed::parse("0.05").unwrap(),
    );
    assert_eq!(b.checksum(), crc32fast::hash(b"45285214528355"));
}

/// The best prices `set` keeps equal the trees' ends after every change
/// (inserts above and below the best, resizes, removals of the best and of
/// other levels, a side emptied), and the crossing check reads the same as
/// one that walks the trees.
#[test]
fn kept_best_prices_follow_every_set() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut b = Book::new();
    for _ in 0..20_000 {
        let side = if next(2) == 0 {
            BookSide::Bid
        } else {
            BookSide::Ask
        };
        // Sizes of 0 a third of the time: removals, often of the best.
        let sz = if next(3) == 0 { 0 } else { 1 + next(9) as i64 };
        b.set(
            side,
            Fixed::from_units(90 + next(20) as i64).unwrap(),
            Fixed::from_units(sz).unwrap(),
        );
        for s in [BookSide::Bid, BookSide::Ask] {
            assert_eq!(b.best[s as usize], b.walk_best(s), "{s:?}");
        }
        let walked = match (b.bids.keys().next_back(), b.asks.keys().next()) {
            (Some(bid), Some(ask)) if bid >= ask => Some((*bid, *ask)),
            _ => None,
        };
        assert_eq!(
            b.crossed_or_locked().map(|(_, bid, ask)| (bid, ask)),
            walked
        );
    }
}

#[test]
fn a_diff_that_changes_nothing_says_so_and_a_snapshot_always_changes() {
    let mut b = Book::new();
    let snap = BookChange::Snapshot(vec![lv(BookSide::Bid, 99, 1), lv(BookSide::Ask, 101, 2)]);
    assert_eq!(b.apply("X", &snap, false, 100), Ok(true));
    let before = b.clone();
    for noop in [
        vec![lv(BookSide::Bid, 98, 0)],
        vec![lv(BookSide::Ask, 101, 2), lv(BookSide::Ask, 105, 0)],
        vec![],
    ] {
        assert_eq!(b.apply("X", &BookChange::Diff(noop), true, 100), Ok(false));
        assert_eq!(b, before);
    }
    // Still checked whole: a bad level is refused, not taken as no change.
    assert!(
        b.apply(
            "X",
            &BookChange::Diff(vec![lv(BookSide::Bid, 0, 0)]),
            true,
            100
        )
        .is_err()
    );
    let mixed = BookChange::Diff(vec![lv(BookSide::Bid, 98, 0), lv(BookSide::Bid, 97, 4)]);
    assert_eq!(b.apply("X", &mixed, true, 100), Ok(true));
    assert_eq!(
        b.get(BookSide::Bid, Fixed::from_units(97).unwrap()),
        Some(Fixed::from_units(4).unwrap())
    );
    assert_eq!(
        b.apply("X", &snap, true, 100),
        Ok(true),
        "a snapshot is a change even if it equals the book"
    );
}
