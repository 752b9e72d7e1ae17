//! Everything the runner takes from the tickwire server library, in one
//! place: the tick model, an event's JSON fields, the recording reader,
//! replay speeds, the libc wrappers, and (in tests) the publish parser.
//! The runner uses no server internals (it measures servers over the
//! wire); when a path moves in the library, this is the file to fix.

pub(crate) use tickwire::decimal::Fixed;
pub(crate) use tickwire::encode::event_json_fields;
#[cfg(test)]
pub(crate) use tickwire::protocol::{Published, parse_publish};
pub(crate) use tickwire::recording::{RecordingError, read_all};
pub(crate) use tickwire::replay::Speed;
pub(crate) use tickwire::sys;
pub(crate) use tickwire::tick::{Event, NewTick, Side, wall_clock_ns};
