//! Everything the runner takes from the tickwire server library, in one
//! place: the tick model, an event's JSON fields, the recording reader,
//! replay speeds, the libc wrappers, WebSocket opcodes, the plain-or-TLS
//! stream type, and (in tests) the publish parser.
//! The runner uses no server internals (it measures servers over the
//! wire); when a path moves in the library, this is the file to fix.

pub(crate) use tickwire::model::decimal::Fixed;
pub(crate) use tickwire::model::speed::Speed;
pub(crate) use tickwire::model::tick::{Event, NewTick, Side, wall_clock_ns};
pub(crate) use tickwire::net::stream::MaybeTls;
pub(crate) use tickwire::recordings::connect::ClientTls;
pub(crate) use tickwire::recordings::format::{RecordingError, read_all};
pub(crate) use tickwire::sys;
pub(crate) use tickwire::wire::encode::event_json_fields;
pub(crate) use tickwire::wire::frame::{
    OPCODE_BINARY, OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
};
#[cfg(test)]
pub(crate) use tickwire::wire::publish::{Published, parse_publish};
