//! What every importer does to a row: the `--skip-bad` policy and its
//! count, the time-order check within one input, and symbols made valid.

use super::ImportError;

/// Bad-row policy and bookkeeping for one input.
pub(crate) struct BadRows {
    skip: bool,
    pub count: u64,
    pub examples: Vec<String>,
}

impl BadRows {
    pub(super) fn new(skip: bool) -> Self {
        BadRows {
            skip,
            count: 0,
            examples: Vec::new(),
        }
    }

    /// Skips and counts a row-level error under `--skip-bad`, else returns it.
    pub(crate) fn handle(&mut self, e: ImportError) -> Result<(), ImportError> {
        if !self.skip || !e.is_row_level() {
            return Err(e);
        }
        self.count += 1;
        if self.examples.len() < 5 {
            self.examples.push(e.to_string());
        }
        Ok(())
    }
}

/// Checks that `ts` does not go back in time within one input.
pub(crate) struct OrderCheck {
    last: u64,
}

impl OrderCheck {
    pub(crate) fn new() -> Self {
        OrderCheck { last: 0 }
    }

    /// `Err(message)` if `ts` is earlier than the previous one.
    pub(crate) fn check(&mut self, ts: u64) -> Result<(), String> {
        if ts < self.last {
            return Err(format!(
                "timestamp {ts} is earlier than the previous row's {}; the input must be in time order",
                self.last
            ));
        }
        self.last = ts;
        Ok(())
    }
}

/// A vendor symbol as a tickwire symbol: options symbols of CME and OPRA
/// hold spaces (`ESZ4 P5000`, the OCC's padded `AAPL  240119C00190000`),
/// which the protocol's symbols cannot; each run of spaces becomes one `_`
/// and spaces at either end are dropped (`ESZ4_P5000`,
/// `AAPL_240119C00190000`). Every other character must already be valid.
pub(crate) fn sanitise_symbol(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains(' ') {
        return std::borrow::Cow::Borrowed(raw);
    }
    std::borrow::Cow::Owned(
        raw.split(' ')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("_"),
    )
}
