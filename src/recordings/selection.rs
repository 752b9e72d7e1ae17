//! Selecting part of a recording: a time window (`--start`/`--end`) and a
//! symbol list (`--symbols`), shared by `import` and `replay`.

use std::collections::HashSet;
use std::time::Duration;

use crate::model::tick::NewTick;

/// A point in time as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// ns since the Unix epoch.
    Absolute(u64),
    /// This long after the first tick of the input.
    AfterFirst(Duration),
}

const TIME_HELP: &str = "write an RFC 3339 time (2013-10-07T13:30:00Z, 2013-10-07T09:30:00-04:00), a zoned time (2013-10-07T09:30[America/New_York]), ns since the epoch, or +DURATION after the first tick (+10m)";

impl TimeSpec {
    pub fn parse(s: &str) -> Result<TimeSpec, String> {
        if let Some(rel) = s.strip_prefix('+') {
            return humantime::parse_duration(rel)
                .map(TimeSpec::AfterFirst)
                .map_err(|e| format!("`{s}`: {e}; {TIME_HELP}"));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u64>()
                .map(TimeSpec::Absolute)
                .map_err(|e| format!("`{s}`: {e}; {TIME_HELP}"));
        }
        let ts = match s.parse::<jiff::Timestamp>() {
            Ok(ts) => ts,
            Err(_) => s
                .parse::<jiff::ZonedDateTime>()
                .map(|z| z.timestamp())
                .map_err(|e| format!("`{s}` is not a time ({e}); {TIME_HELP}"))?,
        };
        u64::try_from(ts.as_nanosecond())
            .map(TimeSpec::Absolute)
            .map_err(|_| format!("`{s}` is before 1970; {TIME_HELP}"))
    }

    /// ns since the epoch, given the input's first `ts`.
    pub fn resolve(self, first_ts: u64) -> u64 {
        match self {
            TimeSpec::Absolute(ns) => ns,
            TimeSpec::AfterFirst(d) => {
                first_ts.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// What to keep of a recording, as given on the command line
/// (`--start`, `--end`, `--symbols` of `import` and `replay`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Selection {
    /// Start at this time: RFC 3339 (2013-10-07T13:30:00Z), zoned
    /// (2013-10-07T09:30[America/New_York]), ns since the epoch, or
    /// +DURATION after the first tick (+5m).
    #[arg(long, value_name = "TIME", value_parser = TimeSpec::parse)]
    pub start: Option<TimeSpec>,
    /// Stop before this time (same forms as --start; +DURATION counts from
    /// --start when it is given: `--start 09:30… --end +5m` is five minutes).
    #[arg(long, value_name = "TIME", value_parser = TimeSpec::parse)]
    pub end: Option<TimeSpec>,
    /// Only these symbols (comma-separated); none: every symbol.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub symbols: Vec<String>,
}

impl Selection {
    /// Fixes relative times: `--start +D` against the first tick's `ts`,
    /// `--end +D` against the start of the window when `--start` is given
    /// (so `--start T --end +5m` is the five minutes from T), else against
    /// the first tick too.
    pub fn resolve(&self, first_ts: u64) -> Window {
        let start = self.start.map(|t| t.resolve(first_ts));
        Window {
            start: start.unwrap_or(0),
            end: self
                .end
                .map_or(u64::MAX, |t| t.resolve(start.unwrap_or(first_ts))),
            symbols: if self.symbols.is_empty() {
                None
            } else {
                Some(self.symbols.iter().cloned().collect())
            },
        }
    }
}

/// `start <= ts < end`, and the symbol in the set (when there is one).
#[derive(Clone, Debug)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub symbols: Option<HashSet<String>>,
}

/// ns since the epoch as an RFC 3339 UTC time (`2013-10-07T13:30:00Z`,
/// with a fraction only when there is one), for messages.
pub fn rfc3339(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map_or_else(|_| ns.to_string(), |t| t.to_string())
}

impl std::fmt::Display for Window {
    /// `[START, END)` as RFC 3339 times (ns precision), then the symbols:
    /// what error messages show of the window a selection resolved to.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = rfc3339;
        let end = if self.end == u64::MAX {
            "the end".to_owned()
        } else {
            time(self.end)
        };
        write!(f, "[{}, {end})", time(self.start))?;
        if let Some(syms) = &self.symbols {
            let mut syms: Vec<&str> = syms.iter().map(String::as_str).collect();
            syms.sort_unstable();
            write!(f, " for {}", syms.join(","))?;
        }
        Ok(())
    }
}

impl Window {
    pub fn admits(&self, t: &NewTick) -> bool {
        t.ts >= self.start && t.ts < self.end && self.admits_symbol(&t.sym)
    }

    /// `--symbols` alone: reference records describe an instrument, not a
    /// moment, so the time window does not apply to them.
    pub fn admits_symbol(&self, sym: &str) -> bool {
        self.symbols.as_ref().is_none_or(|s| s.contains(sym))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_time_forms() {
        let open = 1_381_152_600_000_000_000; // 2013-10-07T13:30:00Z
        for s in [
            "2013-10-07T13:30:00Z",
            "2013-10-07T09:30:00-04:00",
            "2013-10-07T09:30[America/New_York]",
            "1381152600000000000",
        ] {
            assert_eq!(TimeSpec::parse(s), Ok(TimeSpec::Absolute(open)), "{s}");
        }
        assert_eq!(
            TimeSpec::parse("+10m").map(|t| t.resolve(5)),
            Ok(5 + 600_000_000_000)
        );
        for bad in ["", "yesterday", "+", "2013-13-01T00:00Z", "+5 parsecs"] {
            let e = TimeSpec::parse(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_relative_end_counts_from_the_start_when_one_is_given() {
        let first = 1_381_132_800_000_000_000; // 2013-10-07T08:00:00Z, the file's first tick
        let open = 1_381_152_600_000_000_000; // 13:30Z
        let five = 300_000_000_000;
        let sel = |start: Option<&str>, end: &str| Selection {
            start: start.map(|s| TimeSpec::parse(s).unwrap()),
            end: Some(TimeSpec::parse(end).unwrap()),
            symbols: vec!["SPY".into(), "IBM".into()],
        };
        let w = sel(Some("2013-10-07T13:30:00Z"), "+5m").resolve(first);
        assert_eq!((w.start, w.end), (open, open + five));
        assert_eq!(
            w.to_string(),
            "[2013-10-07T13:30:00Z, 2013-10-07T13:35:00Z) for IBM,SPY"
        );
        // Without --start, from the first tick (as before).
        let w = sel(None, "+5m").resolve(first);
        assert_eq!((w.start, w.end), (0, first + five));
        // --start relative too: both from the first tick, end after start.
        let w = sel(Some("+10m"), "+5m").resolve(first);
        assert_eq!((w.start, w.end), (first + 2 * five, first + 3 * five));
    }
}
