//! The feed's epoch: the name of one `seq` numbering.
//!
//! Within one epoch, `(key, seq)` names one tick forever. A new epoch starts
//! exactly when numbering restarts: a standalone server started without a
//! journal, or a scale-out deployment whose last values were lost. Clients
//! compare epochs before resuming from a position: a position from another
//! epoch means nothing here.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// A feed epoch: 64 random bits, written as 16 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A fresh epoch: 64 bits from the standard library's randomly seeded
    /// hasher, mixed with the wall clock and the process id, so two servers
    /// started in the same nanosecond still differ. Never 0 (0 means "no
    /// epoch known" on the wire and in the journal).
    pub fn generate() -> Epoch {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::model::tick::wall_clock_ns());
        h.write_u32(std::process::id());
        Epoch(h.finish().max(1))
    }

    /// Parses the 16-hex-digit form (the only one the server writes).
    pub fn parse(s: &str) -> Option<Epoch> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_differ_and_round_trip_through_their_text() {
        let a = Epoch::generate();
        let b = Epoch::generate();
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
        assert_eq!(Epoch::parse(&a.to_string()), Some(a));
        assert_eq!(Epoch(0x2a).to_string(), "000000000000002a");
        for bad in [
            "",
            "2a",
            "000000000000002g",
            "0000000000000002a",
            "-00000000000002a",
        ] {
            assert_eq!(Epoch::parse(bad), None, "{bad}");
        }
    }
}
