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
    /// Stop before this time (same forms as --start).
    #[arg(long, value_name = "TIME", value_parser = TimeSpec::parse)]
    pub end: Option<TimeSpec>,
    /// Only these symbols (comma-separated); none: every symbol.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub symbols: Vec<String>,
}

impl Selection {
    /// Fixes relative times against the first tick's `ts`.
    pub fn resolve(&self, first_ts: u64) -> Window {
        Window {
            start: self.start.map_or(0, |t| t.resolve(first_ts)),
            end: self.end.map_or(u64::MAX, |t| t.resolve(first_ts)),
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

impl Window {
    pub fn admits(&self, t: &NewTick) -> bool {
        t.ts >= self.start
            && t.ts < self.end
            && self
                .symbols
                .as_ref()
                .is_none_or(|s| s.contains(t.sym.as_ref()))
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
}
