//! The tick as it travels on the bus: docs/PROTOCOL.md's 64-byte
//! `tickwire.bin.v1` record, the feed epoch its `seq` belongs to (8 bytes,
//! little-endian), then the symbol's UTF-8 bytes.
//!
//! The record already carries everything a gateway needs (kind, `seq`, `ts`,
//! `rx`, the four fixed-point fields) in little-endian binary, so a gateway
//! decodes a tick with a few loads and no JSON. Its symbol-id field is the
//! ingest node's own id and is ignored: each node numbers symbols itself.
//! The symbol travels in the payload as well as in the subject so that a
//! message read back from the last-value store is complete on its own.
//! The epoch travels with every tick for the same reason: a restarted
//! ingest node continues `seq` from the last values it reads back, so it
//! takes their epoch from the same place (see `ingest_node`), and a
//! gateway learns a new epoch from the first tick numbered in it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::bar::{Bar, BarInterval};
use crate::model::decimal::Fixed;
use crate::model::epoch::Epoch;
use crate::model::tick::{Event, MAX_SYMBOL_LEN, Side, Tick, validate_symbol};
use crate::wire::bar::{BAR_RECORD_LEN, FLAG_BAR_CLOSED, KIND_BAR, bar_record};
use crate::wire::encode::{RECORD_LEN, tick_record};

/// Why a bus payload is not a tick.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error(
        "payload is {0} bytes; a tick is a {RECORD_LEN}-byte record, an {EPOCH_LEN}-byte epoch and a symbol"
    )]
    Length(usize),
    #[error("record kind {0} is not 1 (trade), 2 (quote) or 4 (bar)")]
    Kind(u8),
    #[error("bar interval code {0} is not 1 to 4")]
    Interval(u8),
    #[error("trade side byte {0:#04x} is not B, S or N")]
    Side(u8),
    #[error("seq 0: sequences start at 1")]
    ZeroSeq,
    #[error("bad symbol: {0}")]
    Symbol(String),
}

/// A tick decoded from the bus, before its symbol is interned locally
/// (the fields are [`Tick`]'s, less the node's own key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusTick {
    pub sym: String,
    pub seq: u64,
    pub ts: u64,
    pub rx: u64,
    pub event: Event,
    /// The feed epoch the ingest node numbered `seq` in.
    pub epoch: Epoch,
}

/// Bytes of the epoch between the record and the symbol.
const EPOCH_LEN: usize = 8;

/// The bus payload of a tick sequenced in `epoch`.
pub(super) fn encode(t: &Tick, epoch: Epoch) -> Bytes {
    let mut b = BytesMut::with_capacity(BAR_RECORD_LEN + EPOCH_LEN + t.sym.len());
    match &t.event {
        Event::Bar(bar) => b.put_slice(&bar_record(t, bar)),
        _ => b.put_slice(&tick_record(t)),
    }
    b.put_u64_le(epoch.0);
    b.put_slice(t.sym.as_bytes());
    b.freeze()
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn i64_at(p: &[u8], at: usize) -> i64 {
    u64_at(p, at) as i64
}

/// Decodes a bus payload, checking everything a gateway relies on.
pub fn decode(p: &[u8]) -> Result<BusTick, PayloadError> {
    // A bar's record is two 64-byte slots.
    let record_len = if p.first() == Some(&KIND_BAR) {
        BAR_RECORD_LEN
    } else {
        RECORD_LEN
    };
    let head = record_len + EPOCH_LEN;
    if p.len() <= head || p.len() > head + MAX_SYMBOL_LEN {
        return Err(PayloadError::Length(p.len()));
    }
    let sym =
        std::str::from_utf8(&p[head..]).map_err(|_| PayloadError::Symbol("not UTF-8".into()))?;
    validate_symbol(sym).map_err(PayloadError::Symbol)?;
    let seq = u64_at(p, 8);
    if seq == 0 {
        return Err(PayloadError::ZeroSeq);
    }
    let (a, b, c, d) = (i64_at(p, 32), i64_at(p, 40), i64_at(p, 48), i64_at(p, 56));
    let event = match p[0] {
        1 => Event::Trade {
            px: Fixed(a),
            qty: Fixed(b),
            side: match u8::try_from(c).unwrap_or(0) {
                b'B' => Side::Buy,
                b'S' => Side::Sell,
                b'N' => Side::Unknown,
                other => return Err(PayloadError::Side(other)),
            },
        },
        2 => Event::Quote {
            bid: Fixed(a),
            bsz: Fixed(b),
            ask: Fixed(c),
            asz: Fixed(d),
        },
        KIND_BAR => {
            let code = p[2];
            let interval = BarInterval::from_code(code).ok_or(PayloadError::Interval(code))?;
            Event::Bar(Box::new(Bar {
                interval,
                start: u64_at(p, 96),
                open: Fixed(a),
                high: Fixed(b),
                low: Fixed(c),
                close: Fixed(d),
                volume: Fixed(i64_at(p, 64)),
                quote_volume: Fixed(i64_at(p, 72)),
                buy_volume: Fixed(i64_at(p, 80)),
                trades: u64_at(p, 88),
                closed: p[1] & FLAG_BAR_CLOSED != 0,
            }))
        }
        k => return Err(PayloadError::Kind(k)),
    };
    Ok(BusTick {
        sym: sym.to_owned(),
        seq,
        ts: u64_at(p, 16),
        rx: u64_at(p, 24),
        event,
        epoch: Epoch(u64_at(p, record_len)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tick::{Channel, KeyId};
    use proptest::prelude::*;

    fn tick(sym: &str, seq: u64, event: Event) -> Tick {
        Tick {
            key: KeyId::new(7, event.channel()),
            sym: sym.into(),
            seq,
            ts: 1_700_000_000_000_000_000,
            rx: 1_700_000_000_000_000_123,
            event,
        }
    }

    #[test]
    fn trades_quotes_and_bars_round_trip() {
        for event in [
            Event::Trade {
                px: Fixed(187_120_000_000),
                qty: Fixed(-5),
                side: Side::Sell,
            },
            Event::Quote {
                bid: Fixed(1),
                bsz: Fixed(i64::MAX),
                ask: Fixed(i64::MIN),
                asz: Fixed(0),
            },
            Event::Bar(Box::new(Bar {
                interval: BarInterval::M1,
                start: 1_700_000_040_000_000_000,
                open: Fixed(1),
                high: Fixed(i64::MAX),
                low: Fixed(i64::MIN),
                close: Fixed(4),
                volume: Fixed(5),
                quote_volume: Fixed(6),
                buy_volume: Fixed(7),
                trades: 8,
                closed: true,
            })),
        ] {
            let t = tick("BRK.B", 42, event);
            let got = decode(&encode(&t, Epoch(0xfeed))).unwrap();
            assert_eq!(got.epoch, Epoch(0xfeed));
            assert_eq!(got.sym, "BRK.B");
            assert_eq!((got.seq, got.ts, got.rx), (t.seq, t.ts, t.rx));
            assert_eq!(got.event, t.event);
            assert_eq!(got.event.channel(), t.event.channel());
        }
        let _ = Channel::Trade;
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        let good = encode(
            &tick(
                "A",
                1,
                Event::Trade {
                    px: Fixed(1),
                    qty: Fixed(1),
                    side: Side::Buy,
                },
            ),
            Epoch(1),
        );
        assert_eq!(
            decode(&good[..RECORD_LEN + EPOCH_LEN]),
            Err(PayloadError::Length(72))
        );
        let mut p = good.to_vec();
        p[0] = 9;
        assert_eq!(decode(&p), Err(PayloadError::Kind(9)));
        let mut p = good.to_vec();
        p[48] = b'X';
        assert_eq!(decode(&p), Err(PayloadError::Side(b'X')));
        let mut p = good.to_vec();
        p[8..16].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode(&p), Err(PayloadError::ZeroSeq));
        let mut p = good.to_vec();
        p.push(b' ');
        assert!(matches!(decode(&p), Err(PayloadError::Symbol(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(p in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&p);
        }
    }
}
