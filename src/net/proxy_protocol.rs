//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it and
//! nginx's stream module sends it with `proxy_protocol on`): behind an L4
//! load balancer, the client's real address arrives in a header before
//! the connection's first byte of TLS or HTTP.
//!
//! The header is believed only from the addresses in
//! `--proxy-protocol-from`, and required from them (a balancer that should
//! send it but does not would otherwise make every client look like the
//! balancer). Anyone else sending one is refused with a 400 saying so: a
//! client must not be able to choose its own address. Parsing is the `ppp`
//! crate's; this module reads exactly the header's bytes off the socket so
//! nothing after it needs putting back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// v1 headers start with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// v2 headers start with this.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (the specification's bound).
const V1_MAX: usize = 107;
/// The longest v2 header we accept: 16 bytes and the addresses, with room
/// for a balancer's TLVs.
const V2_MAX: usize = 16 + 1024;
/// How long to wait between looks at a header that arrived in pieces.
const PIECE_WAIT: Duration = Duration::from_millis(2);

/// The addresses allowed to send a PROXY header (`--proxy-protocol-from`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyTrust(pub Vec<IpNet>);

impl ProxyTrust {
    /// Parses `--proxy-protocol-from` values: CIDRs or single addresses.
    pub fn parse(list: &[String]) -> Result<ProxyTrust, String> {
        list.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`{s}` is not an address or CIDR (e.g. 10.0.0.0/8, 127.0.0.1, ::1)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ProxyTrust)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Why a connection was refused before its request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyRefusal {
    #[error(
        "a PROXY protocol header from {peer}, which is not in --proxy-protocol-from; only the load balancers listed there may say where a connection comes from"
    )]
    Untrusted { peer: SocketAddr },
    #[error(
        "no PROXY protocol header from {peer}, which is in --proxy-protocol-from: its connections must start with one (nginx: `proxy_protocol on;`)"
    )]
    Missing { peer: SocketAddr },
    #[error("a malformed PROXY protocol header from {peer}: {why}")]
    Malformed { peer: SocketAddr, why: String },
    /// Closed, or silent past the handshake budget: nothing to answer.
    #[error("the connection ended before its first bytes")]
    Gone,
}

/// What the start of a connection looks like.
enum Start {
    /// Not enough bytes yet to tell.
    Unsure,
    Header,
    Other,
}

fn classify(seen: &[u8]) -> Start {
    let is_prefix = |sig: &[u8]| {
        let m = seen.len().min(sig.len());
        seen[..m] == sig[..m]
    };
    match (is_prefix(V1_PREFIX), is_prefix(V2_SIGNATURE)) {
        (false, false) => Start::Other,
        (true, _) if seen.len() >= V1_PREFIX.len() => Start::Header,
        (_, true) if seen.len() >= V2_SIGNATURE.len() => Start::Header,
        _ => Start::Unsure,
    }
}

/// Peeks at least until `want` says it has enough, within `budget`.
async fn peek_until<T>(
    stream: &TcpStream,
    buf: &mut [u8],
    budget: Duration,
    mut want: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, ProxyRefusal> {
    let until = tokio::time::Instant::now() + budget;
    loop {
        let n = tokio::time::timeout_at(until, stream.peek(buf))
            .await
            .map_err(|_| ProxyRefusal::Gone)?
            .map_err(|_| ProxyRefusal::Gone)?;
        if n == 0 {
            return Err(ProxyRefusal::Gone);
        }
        if let Some(t) = want(&buf[..n]) {
            return Ok(t);
        }
        if n == buf.len() || tokio::time::Instant::now() >= until {
            return Err(ProxyRefusal::Gone);
        }
        // peek() returns at once while bytes wait: let more arrive.
        tokio::time::sleep(PIECE_WAIT).await;
    }
}

/// The connection's client address: `peer` itself, or the one a trusted
/// balancer's header names (its header consumed from `stream`). Refusals
/// are answered with a 400 naming the problem, then the caller drops the
/// connection.
pub(crate) async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trust: &ProxyTrust,
    budget: Duration,
) -> Result<SocketAddr, ProxyRefusal> {
    let trusted = trust.trusts(peer.ip());
    let result = read_header(stream, peer, trusted, budget).await;
    if let Err(e) = &result
        && !matches!(e, ProxyRefusal::Gone)
    {
        let body = format!("{e}\n");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(budget, stream.write_all(answer.as_bytes())).await;
        let _ = stream.shutdown().await;
    }
    result
}

async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: bool,
    budget: Duration,
) -> Result<SocketAddr, ProxyRefusal> {
    let mut buf = vec![0u8; V2_MAX];
    let start = peek_until(
        stream,
        &mut buf[..V2_SIGNATURE.len()],
        budget,
        |seen| match classify(seen) {
            Start::Unsure => None,
            s => Some(s),
        },
    )
    .await?;
    match (start, trusted) {
        (Start::Header, false) => return Err(ProxyRefusal::Untrusted { peer }),
        (_, false) => return Ok(peer),
        (Start::Header, true) => {}
        (_, true) => return Err(ProxyRefusal::Missing { peer }),
    }
    let malformed = |why: String| ProxyRefusal::Malformed { peer, why };
    // The header's length, once enough of it is here to parse.
    let len = peek_until(stream, &mut buf, budget, |seen| {
        let r = HeaderResult::parse(seen);
        if r.is_incomplete() && seen.len() < V2_MAX {
            return None;
        }
        Some(match r {
            HeaderResult::V1(Ok(h)) => Ok(h.header.len()),
            HeaderResult::V2(Ok(h)) => Ok(h.len()),
            HeaderResult::V1(Err(e)) => Err(format!("{e:?}")),
            HeaderResult::V2(Err(e)) => Err(format!("{e:?}")),
        })
    })
    .await?
    .map_err(malformed)?;
    if len > V2_MAX || (buf.starts_with(V1_PREFIX) && len > V1_MAX) {
        return Err(malformed(format!("{len} bytes is too long")));
    }
    let mut header = vec![0u8; len];
    tokio::time::timeout(budget, stream.read_exact(&mut header))
        .await
        .map_err(|_| ProxyRefusal::Gone)?
        .map_err(|_| ProxyRefusal::Gone)?;
    match HeaderResult::parse(&header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
            v1::Addresses::Tcp6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
            // The balancer's own connection (a health check).
            v1::Addresses::Unknown => peer,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                SocketAddr::new(a.source_address.into(), a.source_port)
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                SocketAddr::new(a.source_address.into(), a.source_port)
            }
            // LOCAL (a health check) or a family other than TCP/IP.
            _ => peer,
        }),
        HeaderResult::V1(Err(e)) => Err(malformed(format!("{e:?}"))),
        HeaderResult::V2(Err(e)) => Err(malformed(format!("{e:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_lists_take_cidrs_and_addresses() {
        let t = ProxyTrust::parse(&["10.0.0.0/8, 127.0.0.1".into(), "::1".into()]).unwrap();
        assert!(t.trusts("10.1.2.3".parse().unwrap()));
        assert!(t.trusts("127.0.0.1".parse().unwrap()));
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(!t.trusts("127.0.0.2".parse().unwrap()));
        assert!(ProxyTrust::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn the_start_of_a_connection_is_told_apart_early() {
        assert!(matches!(classify(b"GET / HTTP/1.1"), Start::Other));
        assert!(matches!(classify(b"\x16\x03\x01"), Start::Other));
        assert!(matches!(classify(b"P"), Start::Unsure));
        assert!(matches!(classify(b"POST /"), Start::Other));
        assert!(matches!(classify(b"PROXY TCP4 "), Start::Header));
        assert!(matches!(classify(b"\r\n\r\n"), Start::Unsure));
        assert!(matches!(classify(V2_SIGNATURE), Start::Header));
    }
}
