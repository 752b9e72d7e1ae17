//! Why an inbound message was refused: the error codes of docs/PROTOCOL.md
//! and the one error type both parsers return.

use std::borrow::Cow;

/// The error codes of docs/PROTOCOL.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownOp,
    BadField,
    InvalidSymbol,
    TooManySymbols,
    RateLimited,
    Unauthorized,
    /// A book update the book cannot take (diff before snapshot, crossed,
    /// too many levels); the book is unchanged.
    BadBook,
    /// A message over the size cap, read through and ignored.
    MessageTooLarge,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadField => "bad_field",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadBook => "bad_book",
            ErrorCode::MessageTooLarge => "message_too_large",
        }
    }
}

/// A refused message: answered with `{"type":"error",…}`, connection kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ProtocolError {
    pub id: Option<i64>,
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(id: Option<i64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            id,
            code,
            message: message.into(),
        }
    }
}

/// `s` cut to `max` characters with an ellipsis, for quoting a client's
/// input back in an error message.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}…", s.chars().take(max).collect::<String>()))
    }
}

/// Where and why `payload` is not JSON, in words a client can act on:
/// `expected value at character 12 ('x')`. The position counts characters
/// from 1 over the whole message and names the character the parser
/// stopped at (the end of the message when it ran out). Called on the error
/// path only: the message is parsed again, by serde_json, whose errors say
/// what was expected where, whatever parser refused it first (simd-json's
/// own errors name its internal states and point at the last structural
/// character instead).
pub(crate) fn json_syntax_error(payload: &[u8]) -> String {
    let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(payload) else {
        return "the message is not a JSON value the server accepts".into();
    };
    // serde_json says "… at line L column C"; its own words come before.
    let full = e.to_string();
    let what = match full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(w, _)| w)
    {
        // serde_json's name for a bare word it could not finish.
        "expected ident" => "expected true, false or null",
        what => what,
    };
    let text = String::from_utf8_lossy(payload);
    // The byte the parser stopped at: line and column are 1-based, and the
    // column counts bytes.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let mut at = if e.is_eof() {
        // Reported at the last byte read; what is missing comes after it.
        text.len()
    } else {
        (line_start + e.column()).saturating_sub(1).min(text.len())
    };
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let position = text[..at].chars().count() + 1;
    match text[at..].chars().next() {
        Some(c) if !c.is_control() => format!("{what} at character {position} ('{c}')"),
        Some(c) => format!("{what} at character {position} ({c:?})"),
        None => format!("{what} at character {position} (the end of the message)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_point_at_the_offending_character() {
        for (text, want) in [
            ("{nope", "key must be a string at character 2 ('n')"),
            (
                r#"{"op":"ping","id":tru}"#,
                "expected true, false or null at character 22 ('}')",
            ),
            (
                r#"{"op":tx}"#,
                "expected true, false or null at character 8 ('x')",
            ),
            (
                "{\n \"op\": \"ping\",\n \"id\": ?}",
                "expected value at character 25 ('?')",
            ),
            (
                r#"{"op":"ping""#,
                "EOF while parsing an object at character 13 (the end of the message)",
            ),
            ("{\"é\":x}", "expected value at character 6 ('x')"),
        ] {
            assert_eq!(json_syntax_error(text.as_bytes()), want, "{text}");
        }
    }
}
