//! Hand-written JSON output: string escaping and a small object writer for
//! control messages. Ticks have their own writer in [`super::encode`].

use bytes::Bytes;

use crate::wire::frame::{OPCODE_TEXT, frame};

/// Writes an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes `s` as a JSON string literal, escaping as RFC 8259 requires.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut tmp = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A small writer for control messages: `{"type":"…",` then fields.
/// Control messages are rare; clarity beats speed here.
pub struct JsonObject {
    out: Vec<u8>,
    first: bool,
}

impl JsonObject {
    pub fn new(kind: &str) -> Self {
        let mut o = JsonObject {
            out: Vec::with_capacity(128),
            first: true,
        };
        o.str("type", kind);
        o
    }

    /// An object without a `type` (nested in a message); it must get at
    /// least one field.
    pub fn bare() -> Self {
        JsonObject {
            out: Vec::with_capacity(64),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        json_string(&mut self.out, k);
        self.out.push(b':');
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        json_string(&mut self.out, v);
        self
    }

    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        push_u64(&mut self.out, v);
        self
    }

    /// The request id echoed back: an integer, or `null` when absent.
    pub fn id(&mut self, id: Option<i64>) -> &mut Self {
        self.key("id");
        match id {
            Some(v) => self
                .out
                .extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    pub fn strs<'a>(&mut self, k: &str, vs: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.key(k);
        self.out.push(b'[');
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_string(&mut self.out, v);
        }
        self.out.push(b']');
        self
    }

    /// A raw JSON value, already encoded.
    pub fn raw(&mut self, k: &str, json: &[u8]) -> &mut Self {
        self.key(k);
        self.out.extend_from_slice(json);
        self
    }

    /// `{"name": id, …}` from pairs.
    pub fn ids<'a>(
        &mut self,
        k: &str,
        pairs: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> &mut Self {
        self.key(k);
        self.out.push(b'{');
        for (i, (name, id)) in pairs.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_string(&mut self.out, name);
            self.out.push(b':');
            push_u64(&mut self.out, u64::from(id));
        }
        self.out.push(b'}');
        self
    }

    pub fn into_bytes(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }

    /// The message as one complete text frame.
    pub fn into_frame(self) -> Bytes {
        frame(OPCODE_TEXT, &self.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_objects_escape_strings() {
        let mut o = JsonObject::new("error");
        o.id(None).str("message", "bad \"x\"\n\u{1}");
        let s = String::from_utf8(o.into_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["message"], "bad \"x\"\n\u{1}");
        assert!(v["id"].is_null());
    }
}
