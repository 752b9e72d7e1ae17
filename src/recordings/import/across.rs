//! What one input's reading leaves for the next ones of an import: Binance
//! depth update ids, checked across the inputs, and DBN definitions, joined
//! to the ticks of every DBN input and written among them by `ts`.

use super::{ImportError, binance_depth, dbn_definition};
use crate::recordings::format::RecordingWriter;

/// What one input's reading leaves for the next ones.
#[derive(Default)]
pub(super) struct Across {
    /// Binance depth: update ids are checked across the inputs, in order.
    pub(super) depth_ids: binance_depth::Continuity,
    /// DBN definitions, joined to the ticks of every DBN input and written
    /// among them by `ts`.
    pub(super) definitions: dbn_definition::Definitions,
}

impl Across {
    /// Writes the definitions due at or before `until` (all: `None`) whose
    /// symbols the selection keeps.
    pub(super) fn write_definitions(
        &mut self,
        w: &mut RecordingWriter,
        window: &crate::recordings::selection::Window,
        until: Option<u64>,
    ) -> Result<(), ImportError> {
        for (sym, inst) in self.definitions.take_until(until) {
            if window.admits_symbol(&sym) {
                w.write_reference(&sym, &inst)?;
            }
        }
        Ok(())
    }
}
