//! The Server-Sent Events block, written in one place: `event: NAME`, one
//! `data:` line (tickwire's JSON never holds a newline), an optional `id:`
//! line, and the blank line that ends the event.

use bytes::Bytes;

/// Writes `event: NAME\ndata: `; the caller writes the data next.
pub(crate) fn open_event(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}

/// Starts the `id:` line after the data; the caller writes the id next.
pub(crate) fn open_id(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\nid: ");
}

/// Ends the event.
pub(crate) fn close_event(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\n\n");
}

/// A whole event without an id: `event: NAME\ndata: JSON\n\n`.
pub(crate) fn event(name: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + json.len() + 16);
    open_event(&mut out, name);
    out.extend_from_slice(json);
    close_event(&mut out);
    Bytes::from(out)
}

/// The reconnection delay a browser's `EventSource` waits after the stream
/// drops: `retry: MS\n\n` (a block with no event, which dispatches nothing).
pub(crate) fn retry(delay: std::time::Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", delay.as_millis()))
}
