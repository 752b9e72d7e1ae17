//! The book checksum a client verifies its copy with (docs/PROTOCOL.md,
//! "Book checksum"): CRC-32 over the text of the top [`CHECKSUM_LEVELS`] asks
//! then bids, each price and size written without its `.` and leading
//! zeros, as Kraken defines it.

use crate::model::decimal::Fixed;

/// Levels per side the checksum covers.
pub const CHECKSUM_LEVELS: usize = 10;

/// [`Book::checksum`](super::Book::checksum) of a book whose best levels are `bids` and `asks`
/// (best first; only the first [`CHECKSUM_LEVELS`] of each are read).
pub fn checksum_of(
    bids: impl IntoIterator<Item = (Fixed, Fixed)>,
    asks: impl IntoIterator<Item = (Fixed, Fixed)>,
) -> u32 {
    let mut text = Vec::with_capacity(4 * CHECKSUM_LEVELS * 12);
    let mut digits = itoa::Buffer::new();
    let mut push = |v: Fixed| push_checksum_digits(&mut text, &mut digits, v);
    for (px, sz) in asks.into_iter().take(CHECKSUM_LEVELS) {
        push(px);
        push(sz);
    }
    for (px, sz) in bids.into_iter().take(CHECKSUM_LEVELS) {
        push(px);
        push(sz);
    }
    crc32fast::hash(&text)
}

/// Appends `v` as the checksum text writes it: its JSON number with the `.`
/// and the leading zeros removed. For `v > 0` that is the digits of its
/// raw value without the fraction's trailing zeros (`0.05` is raw
/// 50,000,000: "5"), written directly; zero and negative values (never in a
/// book) go through the JSON text.
pub(super) fn push_checksum_digits(text: &mut Vec<u8>, digits: &mut itoa::Buffer, v: Fixed) {
    if v.raw() > 0 {
        text.extend_from_slice(
            digits
                .format(strip_fraction_zeros(v.raw() as u64))
                .as_bytes(),
        );
        return;
    }
    let start = text.len();
    v.write_to(text);
    let mut kept = start;
    let mut leading = true;
    for read in start..text.len() {
        let b = text[read];
        if b == b'.' || (leading && b == b'0') {
            continue;
        }
        leading = false;
        text[kept] = b;
        kept += 1;
    }
    text.truncate(kept);
}

/// A raw value (nine fraction digits) without its fraction's trailing
/// zeros: a whole number's nine go at once, else up to eight by 4, 2, 1
/// (prices are mostly whole cents: one test and two divisions, where a
/// digit at a time took seven).
fn strip_fraction_zeros(mut n: u64) -> u64 {
    if n.is_multiple_of(1_000_000_000) {
        return n / 1_000_000_000;
    }
    if n.is_multiple_of(100_000_000) {
        return n / 100_000_000;
    }
    for step in [10_000, 100, 10] {
        if n.is_multiple_of(step) {
            n /= step;
        }
    }
    n
}
