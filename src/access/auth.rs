//! API keys and entitlements (`serve --config FILE`).
//!
//! The file is TOML:
//!
//! ```toml
//! [[subscriber]]
//! name = "desk-a"                 # shown in logs instead of the key
//! key = "sk_live_5f1c0e…"         # at least 16 URL-safe characters
//! symbols = ["AAPL", "BTC*"]      # exact symbols, `PREFIX*`, or `*`
//! max_connections = 20            # optional
//!
//! [[publisher]]
//! name = "ingest-1"
//! key = "pk_live_9a7e…"
//! max_connections = 2             # optional
//! ```
//!
//! A client presents its key as `Authorization: Bearer KEY` or `?token=KEY`.
//! Subscriber keys may use `/v1/stream` only, publisher keys `/v1/publish`
//! only. Keys are compared in constant time and never logged: logs carry the
//! key's `name`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Shortest key accepted in the file: a short key is guessable.
const MIN_KEY_LEN: usize = 16;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What is wrong with a file's content, and the file.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        error: Box<KeysError>,
    },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("key #{0}: `name` is empty")]
    NoName(usize),
    #[error("two keys are named `{0}`")]
    SameName(String),
    #[error(
        "key `{0}`: at least {MIN_KEY_LEN} characters, please (generate one with e.g. `openssl rand -hex 24`)"
    )]
    TooShort(String),
    #[error("key `{0}`: use only letters, digits and - . _ ~ (it may travel in a URL)")]
    NotUrlSafe(String),
    #[error("key `{0}` is the same as another key")]
    SameKey(String),
    #[error("key `{0}`: max_connections must be at least 1")]
    NoConnections(String),
    #[error("subscriber `{0}`: `symbols` is empty (write [\"*\"] for everything)")]
    NoSymbols(String),
    #[error("subscriber `{name}`: pattern `{pattern}`: {why}")]
    Pattern {
        name: String,
        pattern: String,
        why: &'static str,
    },
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Subscriber,
    Publisher,
}

/// The symbols a subscriber key may see.
#[derive(Debug, Default)]
pub(crate) struct Entitlement {
    /// `*`: every symbol.
    all: bool,
    /// Symbols named exactly.
    exact: HashSet<String>,
    /// `PREFIX*` patterns, without the `*`.
    prefixes: Vec<String>,
}

impl Entitlement {
    /// Parses a subscriber's patterns: `*` (everything), `PREFIX*`, or an
    /// exact symbol.
    fn new(name: &str, patterns: &[String]) -> Result<Entitlement, KeysError> {
        let mut e = Entitlement::default();
        for p in patterns {
            let refuse = |why| KeysError::Pattern {
                name: name.to_owned(),
                pattern: p.clone(),
                why,
            };
            if p == "*" {
                e.all = true;
            } else if let Some(prefix) = p.strip_suffix('*') {
                if prefix.contains('*') || prefix.is_empty() {
                    return Err(refuse("only one trailing `*` is allowed"));
                }
                e.prefixes.push(prefix.to_owned());
            } else if p.is_empty() || p.contains('*') {
                return Err(refuse("write an exact symbol, `PREFIX*` or `*`"));
            } else {
                e.exact.insert(p.to_owned());
            }
        }
        Ok(e)
    }

    /// Whether every symbol is allowed (no filtering needed).
    pub fn is_all(&self) -> bool {
        self.all
    }

    pub fn allows(&self, sym: &str) -> bool {
        self.all || self.exact.contains(sym) || self.prefixes.iter().any(|p| sym.starts_with(p))
    }
}

/// One configured key, as the server knows it after authentication.
pub(crate) struct Identity {
    /// Position in the file: the per-key connection count's index.
    pub(crate) index: usize,
    /// The name from the file; safe to log.
    pub(crate) name: String,
    /// The endpoints it opens.
    pub(crate) role: Role,
    /// Subscribers: what they may see (publishers: nothing).
    pub(crate) entitlement: Arc<Entitlement>,
    /// Connections this key may hold at once; `None` = only the server's limits.
    pub(crate) max_connections: Option<usize>,
    /// The secret; compared in constant time, never logged.
    key: Vec<u8>,
}

// Written by hand so that the key itself can never reach a log line.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Every configured key.
#[derive(Debug)]
pub struct Keys {
    /// In file order: an identity's `index` is its position here.
    keys: Vec<Arc<Identity>>,
}

/// The file as written; its fields are the ones the module's example shows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    subscriber: Vec<SubscriberEntry>,
    #[serde(default)]
    publisher: Vec<PublisherEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberEntry {
    name: String,
    key: String,
    symbols: Vec<String>,
    max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublisherEntry {
    name: String,
    key: String,
    max_connections: Option<usize>,
}

impl Keys {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Keys, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        Keys::parse(&text).map_err(|error| KeysError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let file: File = toml::from_str(text)?;
        let entries = file
            .subscriber
            .into_iter()
            .map(|s| {
                (
                    s.name,
                    s.key,
                    Role::Subscriber,
                    Some(s.symbols),
                    s.max_connections,
                )
            })
            .chain(
                file.publisher
                    .into_iter()
                    .map(|p| (p.name, p.key, Role::Publisher, None, p.max_connections)),
            );
        let mut keys: Vec<Arc<Identity>> = Vec::new();
        for (index, (name, key, role, symbols, max_connections)) in entries.enumerate() {
            if name.is_empty() {
                return Err(KeysError::NoName(index + 1));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(KeysError::SameName(name));
            }
            if key.len() < MIN_KEY_LEN {
                return Err(KeysError::TooShort(name));
            }
            // URL-safe only, so `?token=KEY` needs no percent-decoding.
            if !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            {
                return Err(KeysError::NotUrlSafe(name));
            }
            if keys.iter().any(|k| k.key == key.as_bytes()) {
                return Err(KeysError::SameKey(name));
            }
            if max_connections == Some(0) {
                return Err(KeysError::NoConnections(name));
            }
            let entitlement = match symbols {
                Some(s) if s.is_empty() => return Err(KeysError::NoSymbols(name)),
                Some(s) => Entitlement::new(&name, &s)?,
                None => Entitlement::default(),
            };
            keys.push(Arc::new(Identity {
                index,
                name,
                role,
                entitlement: Arc::new(entitlement),
                max_connections,
                key: key.into_bytes(),
            }));
        }
        Ok(Keys { keys })
    }

    /// The key matching `presented`, if any.
    ///
    /// Every configured key is compared, each in constant time (`subtle`), so
    /// the time taken does not reveal how much of a guess was right. (It
    /// does reveal whether the length matched a key's; keys are long and
    /// random, their length is no secret.)
    pub(crate) fn find(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.key.as_slice().ct_eq(presented)) {
                found = Some(k.clone());
            }
        }
        found
    }

    /// How many keys have `role`.
    pub(crate) fn count(&self, role: Role) -> usize {
        self.keys.iter().filter(|k| k.role == role).count()
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, else the
/// `token` query parameter (browsers cannot set headers on a WebSocket).
pub(crate) fn presented_key<'a>(
    authorization: Option<&'a [u8]>,
    query: Option<&'a str>,
) -> Option<&'a [u8]> {
    if let Some(h) = authorization {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(h[7..].trim_ascii());
        }
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[subscriber]]
name = "desk"
key = "sub-key-0123456789abcdef"
symbols = ["AAPL", "BTC*"]
max_connections = 3

[[subscriber]]
name = "all"
key = "all-key-0123456789abcdef"
symbols = ["*"]

[[publisher]]
name = "feed"
key = "pub-key-0123456789abcdef"
"#;

    #[test]
    fn parses_and_finds_keys() {
        let k = Keys::parse(FILE).unwrap();
        assert_eq!(
            (k.count(Role::Subscriber), k.count(Role::Publisher)),
            (2, 1)
        );
        let desk = k.find(b"sub-key-0123456789abcdef").unwrap();
        assert_eq!(
            (desk.name.as_str(), desk.role, desk.max_connections),
            ("desk", Role::Subscriber, Some(3))
        );
        assert!(desk.entitlement.allows("AAPL"));
        assert!(desk.entitlement.allows("BTCUSDT"));
        assert!(!desk.entitlement.allows("AAP"));
        assert!(!desk.entitlement.allows("ETHBTC"));
        assert!(
            k.find(b"all-key-0123456789abcdef")
                .unwrap()
                .entitlement
                .is_all()
        );
        assert_eq!(
            k.find(b"pub-key-0123456789abcdef").unwrap().role,
            Role::Publisher
        );
        assert!(k.find(b"sub-key-0123456789abcdeF").is_none());
        assert!(k.find(b"sub-key").is_none());
        assert!(k.find(b"").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            (
                "[[subscriber]]\nname=\"a\"\nkey=\"short\"\nsymbols=[\"*\"]",
                "at least 16",
            ),
            (
                "[[subscriber]]\nname=\"a\"\nkey=\"0123456789abcdef\"\nsymbols=[]",
                "empty",
            ),
            (
                "[[subscriber]]\nname=\"a\"\nkey=\"0123456789abcdef\"\nsymbols=[\"A*B\"]",
                "pattern",
            ),
            (
                "[[subscriber]]\nname=\"a\"\nkey=\"0123456789abcdef\"\nsymbols=[\"**\"]",
                "pattern",
            ),
            ("[[publisher]]\nname=\"a\"\nkey=\"0123456789abcde/\"", "URL"),
            (
                "[[publisher]]\nname=\"a\"\nkey=\"0123456789abcdef\"\n[[publisher]]\nname=\"a\"\nkey=\"0123456789abcdeg\"",
                "two keys",
            ),
            (
                "[[publisher]]\nname=\"a\"\nkey=\"0123456789abcdef\"\n[[publisher]]\nname=\"b\"\nkey=\"0123456789abcdef\"",
                "same as",
            ),
            (
                "[[publisher]]\nname=\"a\"\nkey=\"0123456789abcdef\"\nsymbols=[\"*\"]",
                "unknown field",
            ),
            (
                "[[publisher]]\nname=\"a\"\nkey=\"0123456789abcdef\"\nmax_connections=0",
                "at least 1",
            ),
        ];
        for (text, needle) in cases {
            let e = Keys::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_key_comes_from_the_header_or_the_query() {
        assert_eq!(
            presented_key(Some(b"Bearer abc"), Some("token=zzz")),
            Some(&b"abc"[..])
        );
        assert_eq!(
            presented_key(Some(b"bearer  abc "), None),
            Some(&b"abc"[..])
        );
        assert_eq!(presented_key(Some(b"Basic abc"), None), None);
        assert_eq!(
            presented_key(None, Some("x=1&token=abc&y=2")),
            Some(&b"abc"[..])
        );
        assert_eq!(presented_key(None, Some("tokens=abc")), None);
        assert_eq!(presented_key(None, None), None);
    }
}

#[cfg(test)]
mod example_file {
    /// The example config in docs/ is valid.
    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../docs/tickwire.example.toml");
        let keys = super::Keys::parse(text).unwrap();
        let count = |role| keys.count(role);
        assert_eq!(
            count(super::Role::Subscriber) + count(super::Role::Publisher),
            3
        );
    }
}
