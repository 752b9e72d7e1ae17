//! What a client received, per (symbol, channel), in order: the check
//! that every tick arrived exactly once (tests/journal.rs,
//! tests/journal_resume.rs).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Each (symbol, channel)'s seqs as received, in order.
#[derive(Default, Debug)]
pub struct Ledger(pub BTreeMap<(String, String), Vec<u64>>);

impl Ledger {
    /// Takes a JSON trade or quote (anything else is ignored).
    pub fn take(&mut self, v: &Value) {
        self.take_as(v["type"].as_str().unwrap_or(""), v);
    }

    /// Takes `v` as a tick of channel `kind` (SSE: the event name).
    pub fn take_as(&mut self, kind: &str, v: &Value) {
        if kind != "trade" && kind != "quote" {
            return;
        }
        let key = (v["sym"].as_str().unwrap().to_string(), kind.to_string());
        self.0
            .entry(key)
            .or_default()
            .push(v["seq"].as_u64().unwrap());
    }

    pub fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// The seqs received of `sym` on `channel`.
    pub fn seqs(&self, sym: &str, channel: &str) -> Option<&Vec<u64>> {
        self.0.get(&(sym.to_string(), channel.to_string()))
    }

    /// The last seq of each key, as a resume's `seq` object.
    pub fn positions(&self) -> Value {
        let mut p = json!({"trade":{},"quote":{}});
        for ((sym, ch), seqs) in &self.0 {
            p[ch][sym] = json!(seqs.last().unwrap());
        }
        p
    }

    /// Every key's seqs are exactly 1..=n: nothing lost, nothing twice.
    pub fn assert_contiguous(&self) {
        for (k, seqs) in &self.0 {
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, &want, "{k:?}");
        }
    }

    /// Each of `keys` (symbol, channel) got exactly `from..=to`, once, in
    /// order.
    pub fn assert_exactly(&self, keys: &[(&str, &str)], from: u64, to: u64, what: &str) {
        let want: Vec<u64> = (from..=to).collect();
        for &(sym, ch) in keys {
            assert_eq!(self.seqs(sym, ch), Some(&want), "{what}: {sym}/{ch}");
        }
    }
}

/// The (channel, symbol id, seq) of each 64-byte `tickwire.bin.v1` tick
/// record of a binary frame, checking that none is a snapshot (a resumed
/// client gets none).
pub fn resumed_bin_ticks(frame: &[u8]) -> Vec<(&'static str, u64, u64)> {
    assert_eq!(frame.len() % 64, 0);
    frame
        .chunks(64)
        .map(|r| {
            assert_eq!(r[1] & 1, 0, "a resumed client gets no snapshot");
            let id = u32::from_le_bytes(r[4..8].try_into().unwrap()) as u64;
            let seq = u64::from_le_bytes(r[8..16].try_into().unwrap());
            (if r[0] == 1 { "trade" } else { "quote" }, id, seq)
        })
        .collect()
}
