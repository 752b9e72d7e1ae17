//! How `ts` and `rx` are written in a subscriber's JSON ticks, chosen per
//! connection with `?ts=string` on `/v1/stream` or `/v1/sse`.
//!
//! They are ns since the epoch, about 1.7e18: past 2^53, so JavaScript's
//! `JSON.parse` (and any reader that turns JSON numbers into doubles)
//! rounds them to a multiple of 256 ns. `string` writes them as decimal
//! strings (`"ts":"1795645005495781431"`), which such a client reads exactly
//! with `BigInt(s)`, or as a number after subtracting a base. Strings
//! rather than milliseconds plus a nanosecond remainder: the field names
//! and meaning stay the same, no client arithmetic is needed to get the
//! exact value back, and the text is the same digits a numeric client sees.

/// The form of `ts` and `rx` in JSON ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TsFormat {
    /// JSON integers (the default; exact for 64-bit integer readers).
    #[default]
    Number,
    /// JSON strings holding the same decimal digits.
    String,
}

impl TsFormat {
    /// The value of the `ts` query parameter: `number` or `string`.
    pub fn parse(value: &str) -> Result<TsFormat, String> {
        match value {
            "number" => Ok(TsFormat::Number),
            "string" => Ok(TsFormat::String),
            other => Err(format!(
                "ts={other} is not a timestamp format; use ts=string (exact in JavaScript) or ts=number (the default)"
            )),
        }
    }

    /// The `ts` parameter of a request's query string, if present.
    pub fn from_query(query: Option<&str>) -> Result<TsFormat, String> {
        let mut format = TsFormat::Number;
        for pair in query.unwrap_or("").split('&') {
            if let Some(v) = pair.strip_prefix("ts=") {
                format = TsFormat::parse(v)?;
            }
        }
        Ok(format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_query_parameter() {
        assert_eq!(TsFormat::from_query(None), Ok(TsFormat::Number));
        assert_eq!(
            TsFormat::from_query(Some("token=x&ts=string")),
            Ok(TsFormat::String)
        );
        assert_eq!(
            TsFormat::from_query(Some("ts=number")),
            Ok(TsFormat::Number)
        );
        let e = TsFormat::from_query(Some("ts=ms")).unwrap_err();
        assert!(e.contains("ts=string"), "{e}");
    }
}
