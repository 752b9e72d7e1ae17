//! The JSON-lines encoding: a header line, the protocol's publish tick
//! objects one per line, and an end line with the tick count.

use crate::model::tick::{Event, NewTick};
use crate::wire::json::json_string;

pub const FORMAT_NAME: &str = "tickwire.jsonl";

pub fn header_line(version: u16) -> String {
    format!("{{\"format\":\"{FORMAT_NAME}\",\"version\":{version}}}\n")
}

pub fn end_line(ticks: u64) -> String {
    format!("{{\"type\":\"end\",\"ticks\":{ticks}}}\n")
}

/// Writes `t` as the publish tick object of docs/PROTOCOL.md (no `seq`/`rx`),
/// prices and sizes as exact decimals. No trailing newline.
pub fn write_tick_json(out: &mut Vec<u8>, t: &NewTick) {
    let mut num = itoa::Buffer::new();
    if let Some(change) = &t.book {
        // The publish form of a book (docs/PROTOCOL.md "Publishing books").
        out.extend_from_slice(b"{\"type\":\"book\",\"sym\":");
        json_string(out, &t.sym);
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(num.format(t.ts).as_bytes());
        if matches!(**change, crate::model::book::BookChange::Snapshot(_)) {
            out.extend_from_slice(b",\"snap\":true");
        }
        for (name, side) in [
            (&b",\"bids\":["[..], crate::model::book::BookSide::Bid),
            (b"],\"asks\":[", crate::model::book::BookSide::Ask),
        ] {
            out.extend_from_slice(name);
            let levels = change.levels().iter().filter(|l| l.side == side);
            for (i, l) in levels.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                l.px.write_to(out);
                out.push(b',');
                l.sz.write_to(out);
                out.push(b']');
            }
        }
        out.extend_from_slice(b"]}");
        return;
    }
    out.extend_from_slice(match t.event {
        Event::Trade { .. } => b"{\"type\":\"trade\",\"sym\":",
        // A book tick's top of book is written as the quote it produced.
        Event::Quote { .. } | Event::Book(_) => b"{\"type\":\"quote\",\"sym\":",
        Event::Bar(_) => b"{\"type\":\"bar\",\"sym\":",
    });
    json_string(out, &t.sym);
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(num.format(t.ts).as_bytes());
    crate::wire::encode::event_json_fields(out, &t.event);
    out.push(b'}');
}

/// Writes a reference as the publish `ref` object of docs/PROTOCOL.md. No
/// trailing newline.
pub fn write_reference_json(
    out: &mut Vec<u8>,
    sym: &str,
    i: &crate::model::instrument::Instrument,
) {
    out.extend_from_slice(b"{\"type\":\"ref\",\"sym\":");
    json_string(out, sym);
    crate::wire::reference::write_fields(out, i);
    out.push(b'}');
}

/// The header line, parsed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u64,
}

/// The end line, parsed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    #[serde(rename = "type")]
    pub _kind: String,
    pub ticks: u64,
}

/// True for the end line (cheap check before a full parse).
pub fn is_end_line(line: &[u8]) -> bool {
    line.starts_with(b"{\"type\":\"end\"")
}
