//! How a node reaches the bus: [`BusConfig`], and what its URL and
//! `--bus-tls-ca` say about authentication.
//!
//! A bus URL may carry credentials the NATS way (`nats://user:pass@host`,
//! `nats://token@host`). async-nats 0.51 does not read them there, so they
//! are taken out of the URL and passed as connect options; and since a URL
//! is logged and shown in errors, it is only ever shown redacted.

use std::path::PathBuf;
use std::time::Duration;

use super::Role;

/// How a node reaches the bus (`serve --bus … --role …`).
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `nats://host:port` (several, comma-separated, for a NATS cluster).
    /// May hold credentials: show it with [`BusConfig::shown_url`] only.
    pub(super) url: String,
    /// Which side of the bus this node is: ingest publishes, gateway reads.
    pub role: Role,
    /// Subject prefix: `PREFIX.trade.SYMBOL`, `PREFIX.heartbeat`.
    pub prefix: String,
    /// JetStream stream that keeps each key's last value.
    pub stream: String,
    /// Keep the last values on disk (survives a NATS restart) or in memory.
    pub file_storage: bool,
    /// How long an ingest node waits for NATS at start before giving up.
    pub connect_timeout: Duration,
    /// CA certificate (PEM) to verify the NATS server with; setting it
    /// makes TLS required (`tls://` URLs require it anyway).
    pub tls_ca: Option<PathBuf>,
    /// Connection name NATS shows in its monitoring (`/connz`); the server
    /// sets it to `tickwire-ROLE-LISTENADDR` unless given.
    pub(crate) name: Option<String>,
    /// The ingest node's heartbeat period.
    pub(super) heartbeat_every: Duration,
    /// A gateway without a heartbeat for this long reports the feed stale.
    pub stale_after: Duration,
}

impl BusConfig {
    pub fn new(url: &str, role: Role) -> BusConfig {
        BusConfig {
            url: url.to_owned(),
            role,
            prefix: "tickwire".into(),
            stream: "TICKWIRE_LAST".into(),
            file_storage: true,
            connect_timeout: Duration::from_secs(10),
            name: None,
            tls_ca: None,
            heartbeat_every: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
        }
    }

    /// The URL(s) as logs and errors show them: user, password or token
    /// (`nats://user:pass@host`) replaced by `***`.
    pub(super) fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL(s) to dial, and `opts` with the authentication this config
    /// asks for: the CA (which makes TLS required) and the credentials
    /// taken out of the URL.
    pub(super) fn authenticate(
        &self,
        opts: async_nats::ConnectOptions,
    ) -> (String, async_nats::ConnectOptions) {
        let opts = opts.require_tls(self.tls_ca.is_some());
        let opts = match &self.tls_ca {
            Some(ca) => opts.add_root_certificates(ca.clone()),
            None => opts,
        };
        let (urls, auth) = split_credentials(&self.url);
        let opts = match auth {
            Some(UrlAuth::UserPassword(u, p)) => opts.user_and_password(u, p),
            Some(UrlAuth::Token(t)) => opts.token(t),
            None => opts,
        };
        (urls, opts)
    }
}

/// Credentials written in a bus URL, the NATS way: `user:pass@` or `token@`.
#[derive(Debug, PartialEq, Eq)]
enum UrlAuth {
    UserPassword(String, String),
    Token(String),
}

/// Takes credentials out of the URL(s). Returns the URLs without them and
/// the first credentials found (one connection has one identity).
fn split_credentials(urls: &str) -> (String, Option<UrlAuth>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut auth = None;
    let clean: Vec<String> = urls
        .split(',')
        .map(|u| {
            let Ok(mut parsed) = url::Url::parse(u.trim()) else {
                return u.to_owned(); // async-nats reports what is wrong with it
            };
            if parsed.username().is_empty() {
                return u.to_owned();
            }
            let user = decode(parsed.username());
            let found = match parsed.password() {
                Some(p) => UrlAuth::UserPassword(user, decode(p)),
                None => UrlAuth::Token(user),
            };
            auth.get_or_insert(found);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_owned()
        })
        .collect();
    (clean.join(","), auth)
}

/// `nats://user:pass@host:4222,nats://h2` → `nats://***@host:4222,nats://h2`.
fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::{UrlAuth, redact_url, split_credentials};

    #[test]
    fn credentials_in_urls_become_connect_options() {
        assert_eq!(
            split_credentials("tls://tw:s3%40cret@127.0.0.1:4222,nats://h2:4222"),
            (
                "tls://127.0.0.1:4222,nats://h2:4222".into(),
                Some(UrlAuth::UserPassword("tw".into(), "s3@cret".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://tok3n@h:1"),
            ("nats://h:1".into(), Some(UrlAuth::Token("tok3n".into())))
        );
        assert_eq!(split_credentials("nats://h:1"), ("nats://h:1".into(), None));
    }

    #[test]
    fn credentials_never_show_in_urls() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("tls://tw:s3cret@127.0.0.1:4222,nats://tok@h2:4222/x@y"),
            "tls://***@127.0.0.1:4222,nats://***@h2:4222/x@y"
        );
        assert_eq!(redact_url("user:pw@host:4222"), "***@host:4222");
    }
}
