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

/// Reads one message.
pub fn scan(payload: &[u8]) -> Result<Msg<'_>, ScanError> {
    let (mut ty, mut sym, mut seq, mut ts, mut rx, mut snap) =
        (None, None, None, None, None, false);
    members(payload, |key, quoted, v| match key {
        b"type" if quoted => ty = Some(v),
        b"sym" if quoted => sym = Some(v),
        b"seq" => seq = parse_u64(v),
        b"ts" => ts = parse_u64(v),
        b"rx" => rx = parse_u64(v),
        b"snap" => snap = v == b"true",
        _ => {}
    })?;
    let ty = ty.ok_or(ScanError::NoType)?;
    let channel = match ty {
        b"trade" => 0,
        b"quote" => 1,
        other => return Ok(Msg::Control(other)),
    };
    Ok(Msg::Tick(TickFields {
        channel,
        sym: sym.ok_or(ScanError::MissingField("sym"))?,
        seq: seq.ok_or(ScanError::MissingField("seq"))?,
        ts: ts.ok_or(ScanError::MissingField("ts"))?,
        rx: rx.ok_or(ScanError::MissingField("rx"))?,
        snap,
    }))
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
}
