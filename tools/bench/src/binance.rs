//! Subscribers speaking Binance's market streams (`--protocol binance`, or a
//! `binance:` target): each client opens one raw-stream connection,
//! `/ws/<sym>@trade/<sym>@bookTicker/…?timeUnit=MICROSECOND`, to tickwire's
//! Binance endpoint (docs/BINANCE.md), while the publisher feeds the main
//! endpoint's `/v1/publish` as usual. Raw streams keep every payload a flat
//! object the runner's scanner reads without a tree parser.

use crate::plan::{ClientSpec, Plan};
use crate::scan::{ChannelIdx, Msg, ScanError, TickFields, members, parse_u64};

/// Which protocol the subscribers speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// docs/PROTOCOL.md on `/v1/stream`: `hello`, `subscribe`, ticks.
    #[default]
    Tickwire,
    /// Binance's raw streams on `--binance-listen`.
    Binance,
}

impl Protocol {
    /// `--protocol`'s values.
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "tickwire" => Ok(Protocol::Tickwire),
            "binance" => Ok(Protocol::Binance),
            other => Err(format!("`{other}`: use tickwire or binance")),
        }
    }
}

/// Why a plan cannot be run over Binance streams.
pub fn check_plan(plan: &Plan) -> Result<(), String> {
    if plan.clients.iter().any(|c| c.all) {
        return Err("Binance streams name each symbol: --all-symbols is not available".into());
    }
    if let Some(bad) = plan
        .symbols
        .iter()
        .find(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(format!(
            "`{bad}`: with Binance streams the symbols must be letters and digits (their Binance names)"
        ));
    }
    Ok(())
}

/// The path a client opens: its symbols' streams for the plan's channels,
/// times in µs (`E` and `T` then carry tickwire's `rx` and `ts` to the µs).
pub fn stream_path(spec: &ClientSpec, plan: &Plan) -> String {
    let mut path = String::from("/ws");
    for &i in &spec.symbols {
        let sym = plan.symbols[i as usize].to_ascii_lowercase();
        for (bit, suffix) in [(1u8, "@trade"), (2, "@bookTicker")] {
            if plan.channels & bit != 0 {
                path.push('/');
                path.push_str(&sym);
                path.push_str(suffix);
            }
        }
    }
    path.push_str("?timeUnit=MICROSECOND");
    path
}

/// Reads one Binance payload: a `trade` (channel 0: `t` is its seq, `T`
/// its `ts`, `E` its `rx`, in µs) or a `bookTicker` (channel 1: `u` is its
/// seq; it carries no time, so `ts` and `rx` are 0 and it is counted but
/// not timed). A reply (`result`) or an `error` is a control message.
pub fn scan(payload: &[u8]) -> Result<Msg<'_>, ScanError> {
    let (mut e, mut sym, mut t, mut u, mut trade_time, mut event_time) =
        (None, None, None, None, None, None);
    let mut control = None;
    members(payload, |key, quoted, v| match key {
        b"e" if quoted => e = Some(v),
        b"s" if quoted => sym = Some(v),
        b"t" => t = parse_u64(v),
        b"u" => u = parse_u64(v),
        b"T" => trade_time = parse_u64(v),
        b"E" => event_time = parse_u64(v),
        b"result" => control = Some(&b"result"[..]),
        b"error" => control = Some(&b"error"[..]),
        _ => {}
    })?;
    if let Some(c) = control {
        return Ok(Msg::Control(c));
    }
    let sym = sym.ok_or(ScanError::MissingField("s"))?;
    let micros = |v: Option<u64>, name| {
        v.map(|x| x.saturating_mul(1_000))
            .ok_or(ScanError::MissingField(name))
    };
    let (channel, seq, ts, rx): (ChannelIdx, _, _, _) = match e {
        Some(b"trade") => (
            0,
            t.ok_or(ScanError::MissingField("t"))?,
            micros(trade_time, "T")?,
            micros(event_time, "E")?,
        ),
        Some(other) => return Ok(Msg::Control(other)),
        None => (1, u.ok_or(ScanError::MissingField("u"))?, 0, 0),
    };
    Ok(Msg::Tick(TickFields {
        channel,
        sym,
        seq,
        ts,
        rx,
        snap: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trades_and_book_tickers_as_tickwire_sends_them() {
        let t = br#"{"e":"trade","E":1582329600123457,"s":"S0001","t":42,"p":"9662.05000000","q":"0.00400000","T":1582329600123456,"m":true,"M":true}"#;
        assert_eq!(
            scan(t),
            Ok(Msg::Tick(TickFields {
                channel: 0,
                sym: b"S0001",
                seq: 42,
                ts: 1_582_329_600_123_456_000,
                rx: 1_582_329_600_123_457_000,
                snap: false,
            }))
        );
        let q = br#"{"u":7,"s":"S0002","b":"1.00000000","B":"2.00000000","a":"1.10000000","A":"3.00000000"}"#;
        let Ok(Msg::Tick(f)) = scan(q) else { panic!() };
        assert_eq!((f.channel, f.sym, f.seq, f.rx), (1, &b"S0002"[..], 7, 0));
        assert_eq!(
            scan(br#"{"result":null,"id":1}"#),
            Ok(Msg::Control(b"result"))
        );
        assert_eq!(
            scan(br#"{"error":{"code":2,"msg":"x"},"id":null}"#),
            Ok(Msg::Control(b"error"))
        );
        assert_eq!(
            scan(br#"{"e":"trade","s":"X","t":1,"E":2}"#),
            Err(ScanError::MissingField("T"))
        );
        assert!(scan(b"[1]").is_err());
    }
}
