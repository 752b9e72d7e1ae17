//! Reference data for `/v1/symbols?ref=1` (`serve --symbols-file FILE`):
//! per symbol, the price increment, the decimals prices are shown with,
//! the currency and the lot size, so clients (the ticker page) can format
//! prices with fixed decimals and validate orders.
//!
//! The file is TOML, one `[[symbol]]` table per instrument:
//!
//! ```toml
//! [[symbol]]
//! sym = "IBM"
//! tick_size = "0.01"     # price increment, exact decimal (a string)
//! currency = "USD"
//! lot_size = "1"         # size increment
//! # decimals = 2         # shown decimals; default: those of tick_size
//! ```
//!
//! Every field but `sym` is optional; an unknown field, a bad decimal, a
//! symbol outside the protocol's grammar or a symbol listed twice is an
//! error naming the entry.
//!
//! Publishers replace a symbol's entry with a `ref` message on
//! `/v1/publish` (parsed in [`crate::wire::reference`]): the newest wins,
//! whole, and the table is shared by every worker behind a lock (read by
//! `/v1/symbols?ref=1`, written by publishers: both rare next to ticks).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::model::decimal::Fixed;
pub use crate::model::instrument::{Instrument, decimals_of};
use crate::model::tick::validate_symbol;
use crate::wire::json::json_string;

/// Reference data by symbol.
#[derive(Debug, Default)]
pub struct Reference {
    /// Behind a lock as publishers replace entries while `/v1/symbols`
    /// reads them and the journal copies them.
    table: Mutex<Table>,
}

/// The entries, and the changes the journal has yet to write.
#[derive(Debug, Default)]
struct Table {
    /// Sorted by symbol, as `/v1/symbols` lists them.
    by_symbol: BTreeMap<String, Instrument>,
    /// Every change in order, while a journal takes them (`serve
    /// --journal`); `None`: nobody does, nothing is kept.
    changes: Option<Vec<(std::sync::Arc<str>, Instrument)>>,
}

/// A publisher's reference data for a new symbol when the table already
/// holds `--max-symbols` of them.
#[derive(Debug, thiserror::Error)]
#[error(
    "the reference table holds {0} symbols (--max-symbols); no new symbol can be given reference data"
)]
pub struct ReferenceFull(pub usize);

/// Why a `--symbols-file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("--symbols-file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--symbols-file {path}: {message}")]
    Bad { path: String, message: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    symbol: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sym: String,
    tick_size: Option<String>,
    decimals: Option<u8>,
    currency: Option<String>,
    lot_size: Option<String>,
}

impl Reference {
    /// Reads and checks a `--symbols-file`.
    pub fn load(path: &Path) -> Result<Reference, ReferenceError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::Read {
            path: name.clone(),
            source,
        })?;
        Reference::parse(&text).map_err(|message| ReferenceError::Bad {
            path: name,
            message,
        })
    }

    /// Parses the TOML text of a `--symbols-file`.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_symbol = BTreeMap::new();
        for (i, e) in file.symbol.into_iter().enumerate() {
            let at = format!("[[symbol]] #{} ({})", i + 1, e.sym);
            validate_symbol(&e.sym).map_err(|why| format!("{at}: {why}"))?;
            let dec = |field: &str, v: Option<String>| -> Result<Option<Fixed>, String> {
                v.map(|s| match Fixed::parse(&s) {
                    Ok(f) if f.raw() > 0 => Ok(f),
                    Ok(_) => Err(format!("{at}: {field} = \"{s}\" must be above zero")),
                    Err(why) => Err(format!("{at}: {field} = \"{s}\": {why}")),
                })
                .transpose()
            };
            let tick_size = dec("tick_size", e.tick_size)?;
            let lot_size = dec("lot_size", e.lot_size)?;
            if e.decimals.is_some_and(|d| d > 9) {
                return Err(format!("{at}: decimals must be 0 to 9 (prices have 9)"));
            }
            if let Some(c) = &e.currency {
                crate::model::instrument::validate_currency(c)
                    .map_err(|why| format!("{at}: currency = \"{c}\": {why}"))?;
            }
            let inst = Instrument {
                decimals: e.decimals.or(tick_size.map(decimals_of)),
                tick_size,
                currency: e.currency,
                lot_size,
            };
            if by_symbol.insert(e.sym.clone(), inst).is_some() {
                return Err(format!("{at}: the symbol is listed twice"));
            }
        }
        Ok(Reference {
            table: Mutex::new(Table {
                by_symbol,
                changes: None,
            }),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves whole entries.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, sym: &str) -> Option<Instrument> {
        self.table().by_symbol.get(sym).cloned()
    }

    /// Every entry now (a new journal file starts with them), and from now
    /// on every change is kept for [`Self::take_changes`].
    pub fn snapshot_and_log(&self) -> Vec<(std::sync::Arc<str>, Instrument)> {
        let mut t = self.table();
        t.changes.get_or_insert_with(Vec::new);
        t.by_symbol
            .iter()
            .map(|(s, i)| (std::sync::Arc::from(s.as_str()), i.clone()))
            .collect()
    }

    /// The changes since the last call, in order (an empty instrument: a
    /// removal), once [`Self::snapshot_and_log`] has started the log.
    pub fn take_changes(&self) -> Vec<(std::sync::Arc<str>, Instrument)> {
        self.table()
            .changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Replaces `sym`'s reference data (the newest wins, whole); an
    /// instrument with no field removes it. Refuses a new symbol beyond
    /// `max` entries: publishers cannot grow the table without bound.
    pub fn set(&self, sym: &str, inst: Instrument, max: usize) -> Result<(), ReferenceFull> {
        let mut t = self.table();
        if inst == Instrument::default() {
            t.by_symbol.remove(sym);
        } else if !t.by_symbol.contains_key(sym) && t.by_symbol.len() >= max {
            return Err(ReferenceFull(t.by_symbol.len()));
        } else {
            t.by_symbol.insert(sym.to_owned(), inst.clone());
        }
        if let Some(log) = &mut t.changes {
            log.push((std::sync::Arc::from(sym), inst));
        }
        Ok(())
    }

    /// The `/v1/symbols?ref=1` object of a symbol: `{"sym":…}` plus the
    /// fields known for it (prices and sizes as exact decimal strings).
    pub fn write_json(&self, out: &mut Vec<u8>, sym: &str) {
        out.extend_from_slice(b"{\"sym\":");
        json_string(out, sym);
        if let Some(i) = self.table().by_symbol.get(sym) {
            crate::wire::reference::write_fields(out, i);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_derives_decimals_and_refuses_bad_entries() {
        let r = Reference::parse(
            "[[symbol]]\nsym = \"IBM\"\ntick_size = \"0.01\"\ncurrency = \"USD\"\nlot_size = \"1\"\n\n[[symbol]]\nsym = \"BTCUSDT\"\ntick_size = \"0.1\"\ndecimals = 2\n",
        )
        .unwrap();
        assert_eq!(r.get("IBM").unwrap().decimals, Some(2));
        assert_eq!(r.get("BTCUSDT").unwrap().decimals, Some(2));
        let mut o = Vec::new();
        r.write_json(&mut o, "IBM");
        assert_eq!(
            String::from_utf8(o).unwrap(),
            r#"{"sym":"IBM","tick_size":"0.01","lot_size":"1","decimals":2,"currency":"USD"}"#
        );
        for (bad, words) in [
            ("[[symbol]]\nsym = \"bad sym\"\n", "#1 (bad sym)"),
            (
                "[[symbol]]\nsym = \"A\"\ntick_size = \"-1\"\n",
                "above zero",
            ),
            (
                "[[symbol]]\nsym = \"A\"\ntick_size = \"x\"\n",
                "tick_size = \"x\"",
            ),
            (
                "[[symbol]]\nsym = \"A\"\n[[symbol]]\nsym = \"A\"\n",
                "listed twice",
            ),
            ("[[symbol]]\nsym = \"A\"\nsize = 1\n", "unknown field"),
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}
