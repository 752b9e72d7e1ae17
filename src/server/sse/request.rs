//! Recognising and reading a `/v1/sse` request: the peek at a new
//! connection's first bytes, the request head read by hand, and its query.

use crate::wire::ts_format::TsFormat;
use std::time::Duration;

use hyper::StatusCode;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::model::epoch::Epoch;
use crate::model::tick::{Channel, ChannelSet, validate_symbol};
use crate::net::tls::TlsConn;
use crate::net::transport::Conn;
use crate::server::sse::PATH;
use crate::server::subscriber::Refusal;
use crate::wire::request::SymbolList;
use crate::wire::resume::{OnGap, Resume, Since, SlowPolicy};

/// Largest request head accepted on `/v1/sse`.
const MAX_HEAD: usize = 16 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// `GET /v1/sse` followed by `?` or a space.
    Sse,
    /// Anything else: hyper's.
    Other,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// How far into a connection the peek looks: enough for `GET`, an
/// absolute-form target's scheme and host (RFC 9112 §3.2.2) and the path.
const PEEK_BYTES: usize = 256;

/// Classifies the start of a request: `GET /v1/sse…` or, in absolute
/// form as proxies send it, `GET http://host:port/v1/sse…`.
pub(crate) fn classify(head: &[u8]) -> Peeked {
    const METHOD: &[u8] = b"GET ";
    let prefix_of = |have: &[u8], want: &[u8]| {
        have.iter()
            .zip(want)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    if head.iter().zip(METHOD).any(|(a, b)| a != b) {
        return Peeked::Other;
    }
    let Some(mut target) = head.get(METHOD.len()..).filter(|t| !t.is_empty()) else {
        return Peeked::NeedMore;
    };
    if target[0] != b'/' {
        // Absolute form: skip the scheme and authority up to the path.
        let scheme = [b"http://".as_slice(), b"https://"]
            .into_iter()
            .find(|s| prefix_of(target, s));
        let Some(scheme) = scheme else {
            return Peeked::Other;
        };
        if target.len() < scheme.len() {
            return Peeked::NeedMore;
        }
        let rest = &target[scheme.len()..];
        match rest.iter().position(|&b| matches!(b, b'/' | b' ' | b'?')) {
            Some(at) if rest[at] == b'/' => target = &rest[at..],
            Some(_) => return Peeked::Other,
            None if head.len() >= PEEK_BYTES => return Peeked::Other,
            None => return Peeked::NeedMore,
        }
    }
    let path = PATH.as_bytes();
    if target.iter().zip(path).any(|(a, b)| a != b) {
        return Peeked::Other;
    }
    match target.get(path.len()) {
        None if head.len() >= PEEK_BYTES => Peeked::Other,
        None => Peeked::NeedMore,
        Some(b'?' | b' ') => Peeked::Sse,
        Some(_) => Peeked::Other,
    }
}

/// Peeks (without consuming) until the connection's first bytes tell
/// whether it is an SSE request. `None`: timeout, EOF or error.
pub(crate) async fn peek(conn: &mut Conn, timeout: Duration) -> Option<Peeked> {
    match conn {
        Conn::Plain(s) => peek_tcp(s, timeout).await,
        Conn::Tls(t) => peek_tls(t, timeout).await,
    }
}

/// [`peek`] over TLS: decrypted bytes are read ahead and kept in the
/// connection, which serves them again to whoever reads it next.
async fn peek_tls(conn: &mut TlsConn, timeout: Duration) -> Option<Peeked> {
    let deadline = Instant::now() + timeout;
    loop {
        match classify(conn.ahead()) {
            Peeked::NeedMore => {}
            p => return Some(p),
        }
        let n = tokio::time::timeout_at(deadline, conn.read_ahead())
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return Some(Peeked::Other); // EOF: hyper deals with it
        }
    }
}

async fn peek_tcp(stream: &TcpStream, timeout: Duration) -> Option<Peeked> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; PEEK_BYTES];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return Some(Peeked::Other); // EOF: hyper deals with it
        }
        match classify(&buf[..n]) {
            Peeked::NeedMore => {
                // peek returns at once while bytes are waiting: a request
                // split mid-line (rare) is polled, not spun on.
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            p => return Some(p),
        }
    }
}

/// Reads the request head; the bytes after it (a GET has no body) are left.
pub(crate) async fn read_head(stream: &mut Conn, timeout: Duration) -> Result<Vec<u8>, Refusal> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head is over {MAX_HEAD} bytes"),
            ));
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut tmp)).await {
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request head did not arrive in time",
                ));
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Err(bad("connection ended inside the request head")),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A valid `/v1/sse` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseRequest {
    /// `*` and the named symbols (validated, without duplicates, in
    /// request order).
    pub(crate) symbols: SymbolList,
    pub(crate) channels: ChannelSet,
    /// `ts=string`: `ts`/`rx` as strings in the events' JSON.
    pub(crate) ts_format: TsFormat,
    /// `heartbeat=MS`: an `event: heartbeat` every MS.
    pub(crate) heartbeat: Option<std::time::Duration>,
    /// `depth=10|25|full`: the window of `book` keys (default 10).
    pub(crate) depth: crate::model::book::DepthClass,
    /// The `Last-Event-ID` header, if any.
    pub(crate) last_event_id: Option<String>,
    /// The `Authorization` header and the raw query, for the API key
    /// (`Bearer KEY`, or `?token=KEY` as browsers' EventSource cannot set
    /// headers).
    pub(crate) authorization: Option<String>,
    pub(crate) query: String,
    /// `catchup=` and `on_gap=`: the slow-consumer policy (conflate on both
    /// channels unless asked). `catchup` keeps event ids in offset order, so
    /// a `Last-Event-ID` resume is exact; a conflated stream's are not.
    pub(crate) policy: SlowPolicy,
}

/// A 400 with its reason.
pub(crate) fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

/// Decodes a query value; a `%` not followed by two hex digits, or bytes
/// that are not UTF-8 once decoded, refuse the request.
fn percent_decode(s: &str) -> Result<String, Refusal> {
    // The crate passes a malformed escape through as it is.
    let b = s.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(bad(format!("bad percent-escape in the query: {s}")));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| bad("the query is not UTF-8 once decoded"))
}

/// Parses a request head (everything up to and including the blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<SseRequest, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if method != Some("GET") || !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("send `GET /v1/sse?symbols=… HTTP/1.1`"));
    }
    let target = target.unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut last_event_id = None;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let v = value.trim();
            if name.trim().eq_ignore_ascii_case("last-event-id") && !v.is_empty() {
                last_event_id = Some(v.to_owned());
            } else if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.to_owned());
            }
        }
    }

    let mut symbols: Option<String> = None;
    let mut channels: Option<String> = None;
    let mut policy = SlowPolicy::default();
    let mut ts_format = TsFormat::Number;
    let mut heartbeat = None;
    let mut depth = crate::model::book::DepthClass::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "symbols" => symbols = Some(percent_decode(v)?),
            "channels" => channels = Some(percent_decode(v)?),
            "catchup" => policy.catchup = parse_channels(&percent_decode(v)?, "catchup")?,
            "on_gap" => {
                policy.on_gap = match v {
                    "conflate" => OnGap::Conflate,
                    "evict" => OnGap::Evict,
                    _ => return Err(bad("on_gap is conflate or evict")),
                }
            }
            "depth" => {
                depth = match v {
                    "full" => Some(crate::model::book::DepthClass::Full),
                    n => n
                        .parse()
                        .ok()
                        .and_then(crate::model::book::DepthClass::from_wire),
                }
                .ok_or_else(|| bad(format!("depth is `{v}`; it is 10, 25 or full")))?;
            }
            // The API key; checked in `serve`.
            "token" => {}
            "ts" => ts_format = TsFormat::parse(v).map_err(bad)?,
            "heartbeat" => heartbeat = Some(crate::wire::heartbeat::parse(v).map_err(bad)?),
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{other}`; use symbols=A,B (or *), channels=trade,quote,book,bar_1s,bar_1m,bar_1h,bar_1d, depth=10|25|full, catchup=trade,quote, on_gap=conflate|evict, ts=string, heartbeat=MS and token=KEY"
                )));
            }
        }
    }
    let symbols = symbols.ok_or_else(|| {
        bad("the query needs symbols, e.g. /v1/sse?symbols=AAPL,MSFT or symbols=*")
    })?;
    let mut all = false;
    let mut names: Vec<String> = Vec::new();
    for s in symbols.split(',').filter(|s| !s.is_empty()) {
        if s == "*" {
            all = true;
            continue;
        }
        validate_symbol(s).map_err(|e| bad(format!("invalid symbol: {e}")))?;
        if !names.iter().any(|n| n == s) {
            names.push(s.to_owned());
        }
    }
    if !all && names.is_empty() {
        return Err(bad(
            "symbols is empty; name at least one symbol, or * for all",
        ));
    }
    let channels = match channels {
        None => ChannelSet::BOTH,
        Some(list) => parse_channels(&list, "channels")?,
    };
    if all && channels.contains(Channel::Book) {
        return Err(bad(
            "the book channel needs named symbols; * covers trade, quote and bars only",
        ));
    }
    Ok(SseRequest {
        symbols: SymbolList { all, names },
        channels,
        ts_format,
        heartbeat,
        depth,
        last_event_id,
        authorization,
        query: query.to_owned(),
        policy,
    })
}

/// A comma-separated channel list (`channels=`, `catchup=`); `what` names
/// the parameter in the error.
fn parse_channels(list: &str, what: &str) -> Result<ChannelSet, Refusal> {
    let mut set = ChannelSet::default();
    for c in list.split(',').filter(|s| !s.is_empty()) {
        let ch = Channel::parse(c).ok_or_else(|| {
            bad(format!(
                "unknown channel `{c}` in {what}; channels are {}",
                Channel::NAMES
            ))
        })?;
        set.insert(ch);
    }
    if set.is_empty() {
        return Err(bad(format!("{what} is empty; use trade, quote or both")));
    }
    Ok(set)
}

/// The position a `Last-Event-ID` names: `EPOCH:OFFSET` (what live ticks
/// and the stream's first event carry: every key of the stream resumes
/// after that offset), or the older `SYM:CHANNEL:SEQ` (one key resumes;
/// it has no epoch, so it is taken as this one's). `None`: neither.
pub(crate) fn event_id_position(id: &str, current: Epoch) -> Option<Resume> {
    if let Some((sym, channel, seq)) = parse_event_id(id) {
        return Some(Resume {
            epoch: current,
            seqs: vec![(sym.to_owned(), channel, seq)],
            since: None,
        });
    }
    let (epoch, offset) = id.split_once(':')?;
    Some(Resume {
        epoch: Epoch::parse(epoch)?,
        seqs: Vec::new(),
        since: Some(Since::Offset(offset.parse().ok()?)),
    })
}

/// `SYM:CHANNEL:SEQ` (the symbol may itself contain `:`).
pub(crate) fn parse_event_id(id: &str) -> Option<(&str, Channel, u64)> {
    let mut it = id.rsplitn(3, ':');
    let seq = it.next()?.parse().ok()?;
    let channel = Channel::parse(it.next()?)?;
    let sym = it.next()?;
    validate_symbol(sym).ok()?;
    Some((sym, channel, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: A:B:trade:7\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn classifies_the_first_bytes() {
        assert_eq!(classify(b"GET /v1/sse?symbols=A"), Peeked::Sse);
        assert_eq!(classify(b"GET /v1/sse HTTP/1.1"), Peeked::Sse);
        assert_eq!(classify(b"GET /v1/ss"), Peeked::NeedMore);
        assert_eq!(classify(b"GET /v1/sse"), Peeked::NeedMore);
        assert_eq!(classify(b"GET /v1/sseX"), Peeked::Other);
        assert_eq!(classify(b"GET /v1/stream"), Peeked::Other);
        assert_eq!(classify(b"POST /v1/sse"), Peeked::Other);
        // Absolute form, as a proxy sends it.
        assert_eq!(classify(b"GET http://h:80/v1/sse?x"), Peeked::Sse);
        assert_eq!(classify(b"GET HTTPS://h/v1/sse HTTP/1.1"), Peeked::Sse);
        assert_eq!(classify(b"GET http://h:80"), Peeked::NeedMore);
        assert_eq!(classify(b"GET http://h/v1/ss"), Peeked::NeedMore);
        assert_eq!(classify(b"GET http://h/v1/stream"), Peeked::Other);
        assert_eq!(classify(b"GET http://h?x"), Peeked::Other);
        assert_eq!(classify(b"GET ftp://h/v1/sse"), Peeked::Other);
        assert_eq!(
            classify(
                &[
                    b'G', b'E', b'T', b' ', b'h', b't', b't', b'p', b':', b'/', b'/'
                ]
                .into_iter()
                .chain(std::iter::repeat_n(b'h', PEEK_BYTES))
                .collect::<Vec<u8>>()
            ),
            Peeked::Other
        );
    }

    #[test]
    fn parses_symbols_channels_and_the_last_event_id() {
        let r = parse_head(&head("/v1/sse?symbols=AAPL,%2A,AAPL,BRK.B&channels=quote")).unwrap();
        assert!(r.symbols.all);
        assert_eq!(r.symbols.names, ["AAPL", "BRK.B"]);
        assert_eq!(r.channels, ChannelSet(Channel::Quote.bit()));
        assert_eq!(r.last_event_id.as_deref(), Some("A:B:trade:7"));
        assert_eq!(
            parse_event_id("A:B:trade:7"),
            Some(("A:B", Channel::Trade, 7))
        );
        assert_eq!(parse_event_id("A:bok:7"), None);
        let r = parse_head(&head("/v1/sse?symbols=X&channels=book&depth=full")).unwrap();
        assert_eq!(r.depth, crate::model::book::DepthClass::Full);
        let e = Epoch(0xab);
        assert_eq!(
            event_id_position("00000000000000ab:42", Epoch(1)),
            Some(Resume {
                epoch: e,
                seqs: vec![],
                since: Some(Since::Offset(42))
            })
        );
        assert_eq!(
            event_id_position("A:trade:7", e).map(|r| r.seqs),
            Some(vec![("A".to_string(), Channel::Trade, 7)])
        );
        for bad in ["", "x", "00000000000000ab:", "00000000000000ab:-1", "ab:1"] {
            assert_eq!(event_id_position(bad, e), None, "{bad}");
        }
        let r = parse_head(&head("/v1/sse?symbols=X")).unwrap();
        assert_eq!(r.channels, ChannelSet::BOTH);
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        for (target, words) in [
            ("/v1/sse", "needs symbols"),
            ("/v1/sse?symbols=", "empty"),
            ("/v1/sse?symbols=BAD%20SYM", "contains"),
            ("/v1/sse?symbols=A&channels=bok", "unknown channel"),
            ("/v1/sse?symbols=*&channels=book", "named symbols"),
            ("/v1/sse?symbols=A&channels=book&depth=11", "depth"),
            ("/v1/sse?symbols=A&symbol=B", "unknown query parameter"),
            ("/v1/sse?symbols=%ZZ", "percent-escape"),
        ] {
            let e = parse_head(&head(target)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(words), "{target}: {}", e.message);
        }
    }

    #[test]
    fn percent_escapes_decode_or_refuse_as_before() {
        assert_eq!(percent_decode("A%2CB%2a").unwrap(), "A,B*");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        for s in ["%", "%4", "%G1", "A%%41", "%41%"] {
            let e = percent_decode(s).unwrap_err();
            assert!(e.message.contains("percent-escape"), "{s}: {}", e.message);
        }
        let e = percent_decode("%FF").unwrap_err();
        assert!(e.message.contains("not UTF-8"), "{}", e.message);
    }
}
