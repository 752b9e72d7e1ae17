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
