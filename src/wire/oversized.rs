//! The answer to a message over the size cap: read through without being
//! buffered (see [`super::frame_scan`]), it is known by its length and its
//! first bytes only, from which its `op` and `id` are taken when they come
//! early (as clients write them).

use serde::Deserialize;

use super::error::{ErrorCode, ProtocolError};
use super::frame_scan::Oversized;

/// The limits an oversized message is measured against, for the answer.
pub struct SizeLimits {
    /// The largest message this connection reads.
    pub max_message_bytes: usize,
    /// Keys a subscriber may hold (subscribers only).
    pub max_keys_per_connection: Option<usize>,
}

/// The value of top-level-looking key `key` in the start of a JSON object,
/// when the start holds the whole of it. A key of that name inside a nested
/// value may be found instead; the answer's `id` is a courtesy.
fn peek<'a, T: Deserialize<'a>>(prefix: &'a [u8], key: &str) -> Option<T> {
    let quoted = format!("\"{key}\"");
    let mut from = 0;
    while let Some(at) = find(&prefix[from..], quoted.as_bytes()) {
        let rest = &prefix[from + at + quoted.len()..];
        let rest = rest.trim_ascii_start();
        if let Some(value) = rest.strip_prefix(b":") {
            let mut values = serde_json::Deserializer::from_slice(value).into_iter::<T>();
            if let Some(Ok(v)) = values.next() {
                return Some(v);
            }
        }
        from += at + quoted.len();
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The error answering `message`: `too_many_symbols` for a subscribe (it
/// names more symbols than a connection may hold: a subscribe within the
/// key limit fits the cap), `message_too_large` for anything else; with the
/// message's `id` when its start has one, and the limits.
pub fn oversized_error(message: &Oversized, limits: &SizeLimits) -> ProtocolError {
    let id = peek::<i64>(&message.prefix, "id");
    let op = peek::<&str>(&message.prefix, "op");
    let max = limits.max_message_bytes;
    let kind = match message.opcode {
        1 => "text message",
        _ => "binary message",
    };
    match (op, limits.max_keys_per_connection) {
        (Some("subscribe"), Some(keys)) if message.opcode == 1 => ProtocolError::new(
            id,
            ErrorCode::TooManySymbols,
            format!(
                "this subscribe is {} bytes, more than the largest message ({max} bytes), \
                 which has room for {keys} symbols, the per-connection limit; it was read \
                 through and ignored: nothing was subscribed. Subscribe in smaller batches",
                message.bytes
            ),
        ),
        _ => ProtocolError::new(
            id,
            ErrorCode::MessageTooLarge,
            format!(
                "{kind} of {} bytes is larger than the largest message this connection \
                 takes ({max} bytes); it was read through and ignored",
                message.bytes
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(prefix: &str) -> Oversized {
        Oversized {
            opcode: 1,
            bytes: 900_000,
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    const LIMITS: SizeLimits = SizeLimits {
        max_message_bytes: 1000,
        max_keys_per_connection: Some(20),
    };

    #[test]
    fn a_subscribe_is_too_many_symbols_with_its_id() {
        let e = oversized_error(
            &over(r#"{"op" : "subscribe", "id": 7, "symbols":["id","op","A"#),
            &LIMITS,
        );
        assert_eq!((e.code, e.id), (ErrorCode::TooManySymbols, Some(7)));
        assert!(e.message.contains("900000 bytes"), "{}", e.message);
        assert!(e.message.contains("1000 bytes") && e.message.contains("20 symbols"));
    }

    #[test]
    fn anything_else_is_message_too_large() {
        // The `id` comes after the cut: none in the answer.
        let e = oversized_error(&over(r#"{"symbols":["id","A"#), &LIMITS);
        assert_eq!((e.code, e.id), (ErrorCode::MessageTooLarge, None));
        let publisher = SizeLimits {
            max_keys_per_connection: None,
            ..LIMITS
        };
        let e = oversized_error(&over(r#"{"op":"subscribe","id":3"#), &publisher);
        assert_eq!((e.code, e.id), (ErrorCode::MessageTooLarge, Some(3)));
    }
}
