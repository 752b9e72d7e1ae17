//! Databento `definition` records (`InstrumentDefMsg`): an instrument's
//! reference data, written into the recording as reference records
//! (docs/RECORDING.md) beside the ticks of the same instrument.
//!
//! Databento sends definitions in files of their own (schema `definition`)
//! keyed by `instrument_id`, as every other schema is, so a definitions file
//! given with a trades file is **joined by instrument id**: a definition is
//! written under the symbol the ticks of its instrument were written under
//! (any DBN input of the import), else under its own symbol (the file's
//! symbol mapping, else its `raw_symbol`). Definitions are placed among the
//! ticks by `ts_recv`, like ticks; a later definition of an instrument
//! replaces the earlier (the newest wins, whole), and a `D` (delete) action
//! clears it.
//!
//! Fields carried: `min_price_increment` → `tick_size` (and `decimals`,
//! the decimals it is written with: `price_display_format` is the venue's
//! fractional-display code, not a count of decimals), `currency`, and
//! `min_lot_size_round_lot` → `lot_size`. Undefined values (`UNDEF_PRICE`,
//! `i32::MAX`, zero, empty) are left out.

use std::collections::HashMap;
use std::sync::Arc;

use dbn::{InstrumentDefMsg, SecurityUpdateAction, UNDEF_PRICE};

use crate::model::decimal::Fixed;
use crate::model::instrument::{Instrument, decimals_of, validate_currency};

/// One definition read, waiting for its place among the ticks.
struct Definition {
    /// `ts_recv`: where it goes in the recording's time order.
    ts: u64,
    /// Joins it to the ticks of the same instrument.
    instrument_id: u32,
    /// Its own symbol, used when no tick names the instrument.
    name: Arc<str>,
    /// The reference data (all `None`: a deletion).
    instrument: Instrument,
}

/// The definitions of every DBN input of one import, and the symbol each
/// instrument's ticks were written under (the join).
#[derive(Default)]
pub(crate) struct Definitions {
    /// Read and not yet written, in read order.
    pending: Vec<Definition>,
    /// Instrument id → the symbol of its ticks, from any input.
    tick_names: HashMap<u32, Arc<str>>,
}

impl Definitions {
    /// Notes the symbol `instrument`'s ticks are written under.
    pub(crate) fn name_ticks(&mut self, instrument: u32, sym: &Arc<str>) {
        self.tick_names
            .entry(instrument)
            .or_insert_with(|| sym.clone());
    }

    /// Keeps a definition record's reference data, under `name` unless
    /// ticks name its instrument otherwise.
    pub(crate) fn push(&mut self, m: &InstrumentDefMsg, name: Arc<str>) -> Result<(), String> {
        let instrument = reference_of(m)?;
        self.pending.push(Definition {
            ts: m.ts_recv,
            instrument_id: m.hd.instrument_id,
            name,
            instrument,
        });
        Ok(())
    }

    /// Definitions read so far and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The earliest `ts` of a definition not yet written.
    pub(crate) fn earliest(&self) -> Option<u64> {
        self.pending.iter().map(|d| d.ts).min()
    }

    /// Takes the definitions due at or before `until` (every one: `None`),
    /// in `ts` order (ties: read order), each under its joined symbol.
    pub(crate) fn take_until(&mut self, until: Option<u64>) -> Vec<(Arc<str>, Instrument)> {
        if self.pending.is_empty() || until.is_some_and(|u| self.earliest() > Some(u)) {
            return Vec::new();
        }
        let (mut due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|d| until.is_none_or(|u| d.ts <= u));
        self.pending = rest;
        due.sort_by_key(|d| d.ts);
        due.into_iter()
            .map(|d| {
                let sym = self
                    .tick_names
                    .get(&d.instrument_id)
                    .cloned()
                    .unwrap_or(d.name);
                (sym, d.instrument)
            })
            .collect()
    }
}

/// A definition's reference data; a deletion is an instrument with none.
fn reference_of(m: &InstrumentDefMsg) -> Result<Instrument, String> {
    if matches!(m.security_update_action(), Ok(SecurityUpdateAction::Delete)) {
        return Ok(Instrument::default());
    }
    let tick_size = (m.min_price_increment != UNDEF_PRICE && m.min_price_increment > 0)
        .then_some(Fixed(m.min_price_increment));
    let currency = match m.currency().map(str::trim) {
        Ok("") => None,
        Ok(c) => {
            validate_currency(c).map_err(|why| format!("definition currency `{c}`: {why}"))?;
            Some(c.to_owned())
        }
        Err(e) => return Err(format!("definition currency: {e}")),
    };
    let lot = m.min_lot_size_round_lot;
    let lot_size = (lot > 0 && lot != i32::MAX)
        .then(|| Fixed::from_units(lot.into()))
        .flatten();
    Ok(Instrument {
        tick_size,
        decimals: tick_size.map(decimals_of),
        currency,
        lot_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: u32, ts: u64, tick: i64, action: u8) -> InstrumentDefMsg {
        let mut m = InstrumentDefMsg {
            ts_recv: ts,
            min_price_increment: tick,
            min_lot_size_round_lot: 1,
            security_update_action: action as std::ffi::c_char,
            ..Default::default()
        };
        m.hd.instrument_id = id;
        for (d, s) in m.currency.iter_mut().zip(b"USD") {
            *d = *s as std::ffi::c_char;
        }
        m
    }

    #[test]
    fn joins_by_instrument_id_in_ts_order_and_deletes() {
        let mut d = Definitions::default();
        d.push(&def(7, 20, 250_000_000, b'M'), Arc::from("RAW7"))
            .unwrap();
        d.push(&def(7, 10, 10_000_000, b'A'), Arc::from("RAW7"))
            .unwrap();
        d.push(&def(8, 30, 1, b'D'), Arc::from("RAW8")).unwrap();
        d.name_ticks(7, &Arc::from("ESU4"));
        assert_eq!(d.take_until(Some(5)), []);
        let due = d.take_until(Some(20));
        assert_eq!(due.len(), 2);
        assert_eq!(&*due[0].0, "ESU4");
        assert_eq!(due[0].1.tick_size, Some(Fixed(10_000_000)));
        assert_eq!(due[1].1.decimals, Some(2));
        assert_eq!(due[1].1.lot_size, Some(Fixed::from_units(1).unwrap()));
        assert_eq!(due[1].1.currency.as_deref(), Some("USD"));
        let rest = d.take_until(None);
        assert_eq!(&*rest[0].0, "RAW8");
        assert_eq!(rest[0].1, Instrument::default());
    }
}
