//! Bus subjects: one NATS subject per (channel, symbol) key, and the
//! reversible escaping of symbol characters NATS gives a meaning to.
//!
//! A tick of `BRK.B` on the trade channel travels on
//! `tickwire.trade.BRK%2EB`: `.` separates subject tokens, so it and every
//! other byte outside `A-Z a-z 0-9 - _ / :` (including `%` itself, `*`, `>`
//! and whitespace, none of which a valid symbol has today) is written as
//! `%` and two upper-case hex digits. Decoding is exact: `decode(encode(s))
//! == s` for every string, and a malformed escape is refused.

use crate::model::tick::Channel;

/// The subjects of one deployment, under a common prefix (`--bus-prefix`).
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of one key's ticks.
    pub fn tick(&self, channel: Channel, symbol: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 8 + symbol.len() * 3);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(channel.as_str());
        s.push('.');
        escape_into(symbol, &mut s);
        s
    }

    /// Every key of one channel (what a `*` subscriber needs).
    pub(super) fn channel_wildcard(&self, channel: Channel) -> String {
        format!("{}.{}.>", self.prefix, channel.as_str())
    }

    /// The ingest node's heartbeat.
    pub(super) fn heartbeat(&self) -> String {
        format!("{}.heartbeat", self.prefix)
    }

    /// A subject nobody answers: a request to it is a round trip to the
    /// NATS server ("no responders").
    pub(super) fn sync(&self) -> String {
        format!("{}.sync", self.prefix)
    }

    /// Parses a tick subject back into its key. Only the tests need it
    /// (the payload carries the symbol); they check escaping round-trips.
    #[cfg(test)]
    fn parse_tick(&self, subject: &str) -> Option<(Channel, String)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (channel, symbol) = rest.split_once('.')?;
        // Only tick channels travel on the bus; books stay on their node.
        let channel = Channel::parse(channel).filter(|c| Channel::ALL.contains(c))?;
        Some((channel, unescape(symbol)?))
    }
}

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b':')
}

/// Appends `symbol` as one subject token.
fn escape_into(symbol: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in symbol.as_bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The symbol a token stands for; `None` for a malformed escape, a byte
/// that should have been escaped, or a result that is not UTF-8.
pub fn unescape(token: &str) -> Option<String> {
    let b = token.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if plain(v) {
                return None; // not the canonical form: one symbol, one subject
            }
            out.push(v);
            i += 3;
        } else if plain(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserved_characters_are_escaped() {
        let s = Subjects::new("tickwire");
        assert_eq!(s.tick(Channel::Trade, "AAPL"), "tickwire.trade.AAPL");
        assert_eq!(s.tick(Channel::Quote, "BRK.B"), "tickwire.quote.BRK%2EB");
        assert_eq!(
            s.tick(Channel::Trade, "a b*>%"),
            "tickwire.trade.a%20b%2A%3E%25"
        );
        assert_eq!(
            s.tick(Channel::Trade, "BTC/USD:X"),
            "tickwire.trade.BTC/USD:X"
        );
        assert_eq!(
            s.parse_tick("tickwire.quote.BRK%2EB"),
            Some((Channel::Quote, "BRK.B".into()))
        );
    }

    #[test]
    fn malformed_subjects_are_refused() {
        let s = Subjects::new("tickwire");
        for bad in [
            "tickwire.trade.A%2",
            "tickwire.trade.A%zz",
            "tickwire.trade.A%2e",
            "tickwire.trade.A%41",
            "tickwire.trade.A.B",
            "tickwire.book.A",
            "other.trade.A",
            "tickwire.trade",
        ] {
            assert_eq!(s.parse_tick(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips(sym in "\\PC{0,40}") {
            let s = Subjects::new("tw");
            let subject = s.tick(Channel::Trade, &sym);
            let token = subject.strip_prefix("tw.trade.").unwrap();
            prop_assert!(!token.contains('.') && !token.contains(' '));
            prop_assert!(!token.contains('*') && !token.contains('>'));
            prop_assert_eq!(s.parse_tick(&subject), Some((Channel::Trade, sym)));
        }
    }
}
