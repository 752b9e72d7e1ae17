//! Reading server messages on the hot path: a scanner for flat JSON objects
//! that picks out the fields the runner needs from a tick (`type`, `sym`,
//! `seq`, `ts`, `rx`, `snap`) without building a document or allocating.
//!
//! A tree parser (simd-json, serde_json) costs 150–300 ns and an allocation
//! per message; at a million deliveries a second on a shared 2-core box
//! that would make the runner, not the server, the bottleneck. Field order
//! is not relied on (docs/PROTOCOL.md says clients must not). Control messages
//! (`hello`, `subscribed`, …) are rare and are re-read with serde_json by
//! whoever needs their details.

/// `trade` = 0, `quote` = 1, as the channel index used in per-key arrays.
pub type ChannelIdx = usize;

/// A tick's fields, borrowed from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickFields<'a> {
    pub channel: ChannelIdx,
    pub sym: &'a [u8],
    pub seq: u64,
    pub ts: u64,
    pub rx: u64,
    pub snap: bool,
}

/// One server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Tick(TickFields<'a>),
    /// Anything that is not a tick: its `type` (e.g. `b"subscribed"`).
    Control(&'a [u8]),
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not a JSON object: {0}")]
    Syntax(&'static str),
    #[error("a tick without a valid `{0}` field")]
    MissingField(&'static str),
    #[error("a message without a `type` field")]
    NoType,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), ScanError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(ScanError::Syntax(what))
        }
    }
    /// A string's raw contents (escapes left as they are); the cursor is on
    /// the opening quote.
    fn string(&mut self) -> Result<&'a [u8], ScanError> {
        self.i += 1;
        let start = self.i;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Ok(s);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        Err(ScanError::Syntax("unterminated string"))
    }
    /// Skips any value; returns the raw bytes of a scalar.
    fn value(&mut self) -> Result<&'a [u8], ScanError> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') | Some(b'[') => {
                let start = self.i;
                let mut depth = 0usize;
                while self.i < self.b.len() {
                    match self.b[self.i] {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(&self.b[start..self.i]);
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                Err(ScanError::Syntax("unterminated object or array"))
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'
                    )
                {
                    self.i += 1;
                }
                if self.i == start {
                    Err(ScanError::Syntax("empty value"))
                } else {
                    Ok(&self.b[start..self.i])
                }
            }
            None => Err(ScanError::Syntax("truncated")),
        }
    }
}

pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(n)
}

/// Walks a flat JSON object's members: `f(key, value is a string, raw
/// value)` for each (a nested value comes whole, unparsed). Shared by the
/// tickwire and Binance readers.
pub(crate) fn members<'a>(
    payload: &'a [u8],
    mut f: impl FnMut(&'a [u8], bool, &'a [u8]),
) -> Result<(), ScanError> {
    let mut c = Cursor { b: payload, i: 0 };
    c.expect(b'{', "expected `{`")?;
    c.ws();
    if c.peek() == Some(b'}') {
        return Ok(());
    }
    loop {
        c.ws();
        if c.peek() != Some(b'"') {
            return Err(ScanError::Syntax("expected a key"));
        }
        let key = c.string()?;
        c.expect(b':', "expected `:`")?;
        c.ws();
        let quoted = c.peek() == Some(b'"');
        let v = c.value()?;
        f(key, quoted, v);
        c.ws();
        match c.peek() {
            Some(b',') => c.i += 1,
            Some(b'}') => return Ok(()),
            _ => return Err(ScanError::Syntax("expected `,` or `}`")),
        }
    }
}

/// Reads a tick written the way tickwire and the peer write them,
/// `{"type":"trade","sym":"…","seq":N,"ts":N,"rx":N,…}` (docs/PROTOCOL.md's
/// order, no whitespace, no escapes, no nested values), straight from the
/// bytes: each number is read in the one pass that finds its end, and each
/// token's end is found by looking for its one terminator, where the
/// general walk skips whitespace around every token and parses a number
/// after finding it. `None` for anything else (another order, whitespace,
/// an escape, a nested value, a number that is not plain digits, a frame
/// cut short), which [`scan`] then reads with the general walk from the
/// start: this path never decides what an odd message means, so both give
/// the same result for every input (the tests hold them to it).
fn canonical(b: &[u8]) -> Option<Found<'_>> {
    let rest = b.strip_prefix(br#"{"type":""#)?;
    let (ty, rest) = if let Some(r) = rest.strip_prefix(br#"trade","sym":""#) {
        (&b"trade"[..], r)
    } else {
        (&b"quote"[..], rest.strip_prefix(br#"quote","sym":""#)?)
    };
    let (sym, rest) = plain_string(rest)?;
    let (seq, rest) = digits(rest.strip_prefix(br#","seq":"#)?)?;
    let (ts, rest) = digits(rest.strip_prefix(br#","ts":"#)?)?;
    let (rx, mut rest) = digits(rest.strip_prefix(br#","rx":"#)?)?;
    let mut f = Found {
        ty: Some(ty),
        sym: Some(sym),
        seq: Some(seq),
        ts: Some(ts),
        rx: Some(rx),
        snap: false,
    };
    // The event's own fields, `snap`, and any key repeated (the last wins,
    // as in the general walk).
    loop {
        match rest.split_first()? {
            (b'}', _) => return Some(f),
            (b',', r) => rest = r.strip_prefix(b"\"")?,
            _ => return None,
        }
        let (key, r) = plain_string(rest)?;
        rest = r.strip_prefix(b":")?;
        let (quoted, v, r) = match rest.first()? {
            b'"' => {
                let (v, r) = plain_string(&rest[1..])?;
                (true, v, r)
            }
            _ => {
                let len = rest.iter().position(
                    |c| !matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b'+' | b'-'),
                )?;
                (len > 0).then_some(())?;
                (false, &rest[..len], &rest[len..])
            }
        };
        f.member(key, quoted, v);
        rest = r;
    }
}

/// A string's contents when it holds no escape, and what follows its
/// closing quote (`b` starts after the opening one).
fn plain_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == b'"' || c == b'\\')?;
    (b[end] == b'"').then(|| (&b[..end], &b[end + 1..]))
}

/// A run of 1 to 20 ASCII digits as a u64 (as [`parse_u64`] reads it) and
/// what follows it; `None` if there are none, more than 20, or they
/// overflow. The first 16 go eight at a time ([`eight_digits`]: `ts` and
/// `rx` have 19); after that, only a 20th digit can overflow, so only it
/// is checked.
fn digits(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    let mut len = 0;
    while len < 16
        && let Some(v) = b.get(len..len + 8).and_then(eight_digits)
    {
        n = n * 100_000_000 + v;
        len += 8;
    }
    for &c in &b[len..] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        match len {
            20.. => return None,
            19 => n = n.checked_mul(10)?.checked_add(u64::from(d))?,
            _ => n = n * 10 + u64::from(d),
        }
        len += 1;
    }
    (len > 0).then(|| (n, &b[len..]))
}

/// Eight ASCII digits as their value, or `None` if any byte is not a
/// digit: one 64-bit load and three multiplies (simdjson's
/// `parse_eight_digits_unrolled` and `is_made_of_eight_digits_fast`).
fn eight_digits(b: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(b.try_into().ok()?);
    // Every byte is 0x30..=0x39: its high nibble is 3 and adding 6 to it
    // does not reach 0x40. A byte of 0xFA or more carries into the next,
    // but its own high nibble (F) already fails the test.
    let high = v & 0xF0F0_F0F0_F0F0_F0F0;
    let carried = (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4;
    if high | carried != 0x3333_3333_3333_3333 {
        return None;
    }
    // Pairs, then fours, then all eight, each step a multiply and a shift
    // (the first byte is the most significant digit).
    let v = (v & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32)
}

/// The fields [`scan`] picks out, as it finds them (the last of a repeated
/// key wins, in both of its paths).
#[derive(Default)]
struct Found<'a> {
    ty: Option<&'a [u8]>,
    sym: Option<&'a [u8]>,
    seq: Option<u64>,
    ts: Option<u64>,
    rx: Option<u64>,
    snap: bool,
}

impl<'a> Found<'a> {
    fn member(&mut self, key: &[u8], quoted: bool, v: &'a [u8]) {
        match key {
            b"type" if quoted => self.ty = Some(v),
            b"sym" if quoted => self.sym = Some(v),
            b"seq" => self.seq = parse_u64(v),
            b"ts" => self.ts = parse_u64(v),
            b"rx" => self.rx = parse_u64(v),
            b"snap" => self.snap = v == b"true",
            _ => {}
        }
    }

    /// The message these fields make: a tick, a control message, or why
    /// it is neither.
    fn into_msg(self) -> Result<Msg<'a>, ScanError> {
        let ty = self.ty.ok_or(ScanError::NoType)?;
        let channel = match ty {
            b"trade" => 0,
            b"quote" => 1,
            other => return Ok(Msg::Control(other)),
        };
        Ok(Msg::Tick(TickFields {
            channel,
            sym: self.sym.ok_or(ScanError::MissingField("sym"))?,
            seq: self.seq.ok_or(ScanError::MissingField("seq"))?,
            ts: self.ts.ok_or(ScanError::MissingField("ts"))?,
            rx: self.rx.ok_or(ScanError::MissingField("rx"))?,
            snap: self.snap,
        }))
    }
}

/// Reads one message.
pub fn scan(payload: &[u8]) -> Result<Msg<'_>, ScanError> {
    if let Some(f) = canonical(payload) {
        return f.into_msg();
    }
    scan_general(payload)
}

/// [`scan`] by the general walk alone: any field order and whitespace.
fn scan_general(payload: &[u8]) -> Result<Msg<'_>, ScanError> {
    let mut f = Found::default();
    members(payload, |k, q, v| f.member(k, q, v))?;
    f.into_msg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_in_any_field_order() {
        let t = br#"{"type":"trade","sym":"AAPL","seq":42,"ts":1700000000123456789,"rx":1700000000123460001,"px":189.23,"qty":100,"side":"B"}"#;
        let Msg::Tick(f) = scan(t).unwrap() else {
            panic!()
        };
        assert_eq!(
            f,
            TickFields {
                channel: 0,
                sym: b"AAPL",
                seq: 42,
                ts: 1_700_000_000_123_456_789,
                rx: 1_700_000_000_123_460_001,
                snap: false
            }
        );
        let q =
            br#"{ "rx":5, "snap":true, "bid":1.5,"sym":"X\"Y" , "seq":1,"ts":2,"type":"quote"}"#;
        let Msg::Tick(f) = scan(q).unwrap() else {
            panic!()
        };
        assert_eq!(
            (f.channel, f.sym, f.snap, f.rx),
            (1, &b"X\\\"Y"[..], true, 5)
        );
    }

    #[test]
    fn control_messages_with_nested_values() {
        let m = br#"{"type":"subscribed","id":1,"symbols":["A","B"],"channels":["trade"],"ids":{"A":1,"B":{"x":[1,"]"]}}}"#;
        assert_eq!(scan(m).unwrap(), Msg::Control(b"subscribed"));
        assert_eq!(
            scan(br#"{"limits":{"a":1},"type":"hello"}"#).unwrap(),
            Msg::Control(b"hello")
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{}",
            b"{\"type\":\"trade\"}",
            b"{\"type\":\"trade\",\"sym\":\"A\",\"seq\":-1,\"ts\":1,\"rx\":1}",
            b"{\"type\":\"trade\",\"sym\":\"A\",\"seq\":99999999999999999999999,\"ts\":1,\"rx\":1}",
            b"{\"type\":\"trade\" \"sym\":1}",
            b"{\"a\":\"unterminated}",
            b"{\"a\":[1,2}",
            b"{\"a\":",
            b"{\"type\":1}",
            b"\x00\xff",
        ] {
            assert!(scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Ticks as tickwire's encoder and the peer write them.
    const CANONICAL: [&[u8]; 4] = [
        br#"{"type":"trade","sym":"AAPL","seq":42,"ts":1700000000123456789,"rx":1700000000123460001,"px":189.23,"qty":100,"side":"B"}"#,
        br#"{"type":"quote","sym":"S0042","seq":7,"ts":1,"rx":18446744073709551615,"bid":1.5,"bsz":3,"ask":1.6,"asz":2,"snap":true}"#,
        br#"{"type":"trade","sym":"X","seq":1,"ts":2,"rx":3}"#,
        br#"{"type":"quote","sym":"","seq":0,"ts":0,"rx":0,"seq":9}"#,
    ];

    #[test]
    fn the_fast_path_reads_canonical_ticks_as_the_general_walk_does() {
        for t in CANONICAL {
            assert!(canonical(t).is_some(), "{}", String::from_utf8_lossy(t));
            assert_eq!(scan(t), scan_general(t), "{}", String::from_utf8_lossy(t));
            assert!(matches!(scan(t), Ok(Msg::Tick(_))));
        }
        // A repeated key after the head wins, as it does in the general walk.
        let Ok(Msg::Tick(f)) = scan(CANONICAL[3]) else {
            panic!()
        };
        assert_eq!(f.seq, 9);
        let Ok(Msg::Tick(f)) = scan(CANONICAL[1]) else {
            panic!()
        };
        assert!(f.snap && f.rx == u64::MAX && f.sym == b"S0042");
        // A later `type` makes it what it says, in both paths.
        let m = br#"{"type":"trade","sym":"A","seq":1,"ts":2,"rx":3,"px":-1.5e-3,"type":"hello"}"#;
        assert!(canonical(m).is_some());
        assert_eq!(scan(m), Ok(Msg::Control(b"hello")));
        assert_eq!(scan(m), scan_general(m));
    }

    #[test]
    fn malformed_ticks_are_errors_from_both_paths_never_panics() {
        // Every prefix and every one-byte change of a canonical tick: the
        // fast path must agree with the general walk (which decides what is
        // an error), and a broken frame stays an error.
        let odd = [
            b'"', b'\\', b'}', b'{', b']', b'[', b',', b':', b' ', b'\t', b'x', b'e', b'9', b'-',
            b'+', b'.', 0, 0xff,
        ];
        for t in CANONICAL {
            for cut in 0..t.len() {
                let p = &t[..cut];
                assert_eq!(scan(p), scan_general(p), "{}", String::from_utf8_lossy(p));
                assert!(
                    scan(p).is_err(),
                    "a truncated tick: {}",
                    String::from_utf8_lossy(p)
                );
            }
            for at in 0..t.len() {
                for &c in &odd {
                    let mut m = t.to_vec();
                    m[at] = c;
                    assert_eq!(
                        scan(&m),
                        scan_general(&m),
                        "{}",
                        String::from_utf8_lossy(&m)
                    );
                    let mut m = t.to_vec();
                    m.insert(at, c);
                    assert_eq!(
                        scan(&m),
                        scan_general(&m),
                        "{}",
                        String::from_utf8_lossy(&m)
                    );
                }
            }
        }
        for bad in [
            &br#"{"type":"trade","sym":"A","seq":123456789012345678901,"ts":1,"rx":1}"#[..],
            br#"{"type":"trade","sym":"A","seq":99999999999999999999,"ts":1,"rx":1}"#,
            br#"{"type":"trade","sym":"A","seq":1,"ts":1,"rx":1.5}"#,
            br#"{"type":"trade","sym":"A","seq":1,"ts":1,"rx":1,"px":}"#,
            br#"{"type":"trade","sym":"A","seq":1,"ts":1,"rx":1,"px":1"#,
            br#"{"type":"trade","sym":"A","seq":1,"ts":1,"rx":1,}"#,
            br#"{"type":"trade","sym":"A\"#,
        ] {
            assert!(scan(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert_eq!(scan(bad), scan_general(bad));
        }
        // Not canonical but valid: the general walk reads them.
        for other in [
            &br#"{"type":"trade","sym":"A\"B","seq":1,"ts":1,"rx":1}"#[..],
            br#"{"type": "trade","sym":"A","seq":1,"ts":1,"rx":1}"#,
            br#"{"type":"trade","sym":"A","seq":1,"ts":1,"rx":1 }"#,
        ] {
            assert!(canonical(other).is_none());
            assert!(matches!(scan(other), Ok(Msg::Tick(_))));
        }
    }

    #[test]
    fn digits_read_numbers_as_parse_u64_does() {
        for n in [
            "0",
            "7",
            "1700000000123456789",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "00000000000000000001",
            "000000000000000000001",
            "123456789012345678901",
        ] {
            let with_tail = format!("{n},");
            let got = digits(with_tail.as_bytes()).map(|(v, rest)| (v, rest.to_vec()));
            assert_eq!(
                got,
                parse_u64(n.as_bytes()).map(|v| (v, b",".to_vec())),
                "{n}"
            );
        }
        // Every length from 1 to 21 and a stop at every place, across the
        // eight-digit steps.
        let all = b"98765432109876543210987";
        for len in 1..=21 {
            for stop in 0..=len {
                let mut t = all[..len].to_vec();
                if stop < len {
                    t[stop] = b'x';
                }
                let want = parse_u64(&t[..stop]).map(|v| (v, t[stop..].to_vec()));
                let got = digits(&t).map(|(v, rest)| (v, rest.to_vec()));
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&t));
            }
        }
        for bad in [b'/', b':', 0x30 + 0x80, 0xFA, 0xFF, 0x00] {
            for at in 0..8 {
                let mut t = *b"12345678";
                t[at] = bad;
                assert_eq!(eight_digits(&t), None, "{t:?}");
            }
        }
        // Pseudo-random bytes, mostly digits: as a byte-by-byte reading.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            let mut t = [0u8; 8];
            for c in &mut t {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let r = (x >> 33) as u8;
                *c = if r.is_multiple_of(4) {
                    r
                } else {
                    b'0' + r % 10
                };
            }
            assert_eq!(eight_digits(&t), parse_u64(&t), "{t:?}");
        }
        assert_eq!(eight_digits(b"00000000"), Some(0));
        assert_eq!(eight_digits(b"99999999"), Some(99_999_999));
        assert_eq!(digits(b""), None);
        assert_eq!(digits(b",1"), None);
        assert_eq!(digits(b"12x"), Some((12, &b"x"[..])));
    }
}
