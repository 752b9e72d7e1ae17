//! A lean WebSocket client for the runner: the HTTP upgrade handshake,
//! server frames parsed in place out of the read buffer (no copy and no
//! allocation per message), and masked client frames.
//!
//! A general client library would allocate a message per frame and make a
//! syscall per frame; at 10,000 connections the runner must stay far cheaper
//! than the server it measures, so it reads whatever the socket holds and
//! walks the frames in it.

use std::net::{SocketAddr, ToSocketAddrs};

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Largest server frame the runner accepts (ticks are ~150 bytes; a
/// `subscribed` reply for thousands of symbols is the biggest message).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("`{url}` is not a usable URL: {why} (write e.g. ws://127.0.0.1:8080)")]
    BadUrl { url: String, why: String },
    #[error("cannot connect to {addr}: {source} (is a server listening there?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{addr}: no answer to the WebSocket upgrade of {path} within {secs} s (does it speak HTTP?)"
    )]
    HandshakeTimeout {
        addr: SocketAddr,
        path: String,
        secs: u64,
    },
    #[error(
        "{addr}{path} answered `{status}` instead of switching to WebSocket (101): is it a server speaking docs/PROTOCOL.md?"
    )]
    Refused {
        addr: SocketAddr,
        path: String,
        status: String,
    },
    #[error("{addr}{path}: the upgrade answer is not a valid WebSocket handshake: {why}")]
    BadHandshake {
        addr: SocketAddr,
        path: String,
        why: String,
    },
    #[error("the server broke the WebSocket protocol: {0}")]
    Protocol(String),
    #[error("the connection closed {0}")]
    Closed(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(String),
}

/// Where a server is: `ws://host:port` or `wss://host:port`, resolved once.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    /// `wss://`: connections go over TLS (see `crate::tls`).
    pub tls: bool,
    /// The host as written, without the port: the name a TLS certificate
    /// must carry.
    pub host: String,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// Parses `ws://HOST[:PORT][/...]` or `wss://…`; a path (such as `/v1/stream`) is
    /// ignored because the runner uses both `/v1/stream` and `/v1/publish`.
    pub fn parse(url: &str) -> Result<Endpoint, WsError> {
        let bad = |why: &str| WsError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let (rest, tls) = if let Some(r) = url.strip_prefix("ws://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (r, true)
        } else {
            return Err(bad("it must start with ws:// or wss://"));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        } else {
            authority.to_owned()
        };
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => h,
            _ => authority,
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // The first IPv4 address, as `serve --listen` picks (so that
        // `localhost` reaches a server on 127.0.0.1), else the first.
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve `{authority}`: {e}")))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| bad(&format!("`{authority}` resolves to no address")))?;
        Ok(Endpoint {
            url: format!("{}://{authority}", if tls { "wss" } else { "ws" }),
            tls,
            host,
            authority: authority.to_owned(),
            addr,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// The upgrade request for `path` and the `Sec-WebSocket-Accept` value the
/// server must answer with.
pub fn upgrade_request(ep: &Endpoint, path: &str, nonce: u64) -> (Vec<u8>, String) {
    let mut key_bytes = [0u8; 16];
    key_bytes[..8].copy_from_slice(&nonce.to_le_bytes());
    key_bytes[8..].copy_from_slice(
        &nonce
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes(),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(key_bytes);
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = b64.encode(h.finalize());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ep.authority
    );
    (req.into_bytes(), accept)
}

/// Checks the upgrade answer in `buf`. `Ok(None)`: the head is not complete
/// yet. `Ok(Some(n))`: the head is `n` bytes long and valid; what follows it
/// is already WebSocket frames.
pub fn parse_upgrade_response(
    buf: &[u8],
    accept: &str,
    ep: &Endpoint,
    path: &str,
) -> Result<Option<usize>, WsError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err(WsError::BadHandshake {
                addr: ep.addr,
                path: path.to_owned(),
                why: "no end of the HTTP head in 16 KiB".into(),
            });
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("").trim().to_owned();
    let code = status.split(' ').nth(1).unwrap_or("");
    if !status.starts_with("HTTP/1.") || code != "101" {
        return Err(WsError::Refused {
            addr: ep.addr,
            path: path.to_owned(),
            status: status.chars().take(80).collect(),
        });
    }
    let got = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| v.trim().to_owned())
    });
    match got {
        Some(v) if v == accept => Ok(Some(end + 4)),
        Some(v) => Err(WsError::BadHandshake {
            addr: ep.addr,
            path: path.to_owned(),
            why: format!("Sec-WebSocket-Accept is `{v}`, expected `{accept}`"),
        }),
        None => Err(WsError::BadHandshake {
            addr: ep.addr,
            path: path.to_owned(),
            why: "no Sec-WebSocket-Accept header".into(),
        }),
    }
}

pub(crate) use crate::tickwire_lib::{
    OPCODE_BINARY, OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
};

/// A frame header found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub payload_len: usize,
}

impl FrameHead {
    pub fn total(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Reads a server frame's header. `Ok(None)`: more bytes are needed. Server
/// frames must be unmasked and use no extension bits (none is negotiated).
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol(format!(
            "reserved bits set in a frame header ({b0:#04x}) with no extension negotiated"
        )));
    }
    if b1 & 0x80 != 0 {
        return Err(WsError::Protocol(
            "a server frame is masked (RFC 6455 forbids it)".into(),
        ));
    }
    let opcode = b0 & 0x0F;
    let (len, header_len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME as u64 {
        return Err(WsError::Protocol(format!(
            "a frame of {len} bytes (the runner accepts up to {MAX_FRAME})"
        )));
    }
    if opcode >= 0x8 && (len > 125 || b0 & 0x80 == 0) {
        return Err(WsError::Protocol(format!(
            "control frame {opcode:#x} is fragmented or longer than 125 bytes"
        )));
    }
    if !matches!(
        opcode,
        OPCODE_CONTINUATION
            | OPCODE_TEXT
            | OPCODE_BINARY
            | OPCODE_CLOSE
            | OPCODE_PING
            | OPCODE_PONG
    ) {
        return Err(WsError::Protocol(format!("unknown opcode {opcode:#x}")));
    }
    Ok(Some(FrameHead {
        fin: b0 & 0x80 != 0,
        opcode,
        header_len,
        payload_len: len as usize,
    }))
}

/// Appends a masked client frame (FIN set) to `out`.
pub fn client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// A close frame's status code, if it carries one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::parse("ws://127.0.0.1:9").unwrap()
    }

    #[test]
    fn urls() {
        let e = Endpoint::parse("ws://127.0.0.1:9090/v1/stream").unwrap();
        assert_eq!(e.authority, "127.0.0.1:9090");
        assert_eq!(e.addr.port(), 9090);
        assert_eq!(Endpoint::parse("ws://[::1]:7").unwrap().addr.port(), 7);
        assert_eq!(Endpoint::parse("ws://127.0.0.1").unwrap().addr.port(), 80);
        assert!(Endpoint::parse("http://x").is_err());
        let e = Endpoint::parse("wss://127.0.0.1:1").unwrap();
        assert!(e.tls && e.host == "127.0.0.1" && e.url == "wss://127.0.0.1:1");
        let e = Endpoint::parse("wss://[::1]").unwrap();
        assert!(e.host == "::1" && e.addr.port() == 443, "{e:?}");
        assert!(Endpoint::parse("http://127.0.0.1:1").is_err());
        assert!(Endpoint::parse("ws://").is_err());
    }

    #[test]
    fn handshake_accept_matches_rfc_example() {
        // RFC 6455 1.3: key dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
        let mut h = Sha1::new();
        h.update(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.encode(h.finalize()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upgrade_answers() {
        let (_, accept) = upgrade_request(&ep(), "/v1/stream", 1);
        let mut ok =
            format!("HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: {accept}\r\n\r\n")
                .into_bytes();
        ok.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(
            parse_upgrade_response(&ok, &accept, &ep(), "/").unwrap(),
            Some(ok.len() - 2)
        );
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 101 Sw", &accept, &ep(), "/").unwrap(),
            None
        );
        let e = parse_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n", &accept, &ep(), "/")
            .unwrap_err();
        assert!(e.to_string().contains("404 Not Found"), "{e}");
        let e = parse_upgrade_response(
            b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n",
            &accept,
            &ep(),
            "/",
        )
        .unwrap_err();
        assert!(matches!(e, WsError::BadHandshake { .. }));
        assert!(parse_upgrade_response(b"SSH-2.0-OpenSSH\r\n\r\n", &accept, &ep(), "/").is_err());
    }

    #[test]
    fn frame_heads() {
        assert_eq!(parse_head(&[0x81]).unwrap(), None);
        let h = parse_head(&[0x81, 5, b'h']).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len),
            (true, 1, 2, 5)
        );
        let h = parse_head(&[0x01, 126, 1, 0]).unwrap().unwrap();
        assert_eq!((h.fin, h.header_len, h.payload_len), (false, 4, 256));
        assert_eq!(parse_head(&[0x82, 127, 0, 0, 0]).unwrap(), None);
        assert!(parse_head(&[0x81, 0x85]).is_err(), "masked");
        assert!(parse_head(&[0xC1, 0]).is_err(), "rsv1");
        assert!(parse_head(&[0x83, 0]).is_err(), "opcode");
        assert!(parse_head(&[0x09, 0]).is_err(), "fragmented ping");
        assert!(parse_head(&[0x82, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        client_frame(&mut out, OPCODE_TEXT, b"abc", [1, 2, 3, 4]);
        assert_eq!(out, [0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        out.clear();
        client_frame(&mut out, OPCODE_TEXT, &[0u8; 300], [0; 4]);
        assert_eq!(&out[..4], &[0x81, 0xFE, 1, 44]);
        assert_eq!(close_code(&[0x0F, 0xA0]), Some(4000));
        assert_eq!(close_code(&[]), None);
    }
}
