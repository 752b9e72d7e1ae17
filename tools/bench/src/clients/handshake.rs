//! Setting up a connection: the WebSocket upgrade, `hello`, the subscribe
//! and its `subscribed`; and the one-connection probe before a run.

use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClientError, READ_BUFFER, ThreadCtx, endpoint_index};
use crate::binance::{self, Protocol};
use crate::plan::{ClientSpec, Plan};
use crate::resume::ResumePlan;
use crate::scan::{Msg, scan};
use crate::tickwire_lib::wall_clock_ns;
use crate::tls::{self, Stream};
use crate::ws::{self, Endpoint, WsError};

/// Connects, upgrades, waits for `hello`, subscribes (with `resume` when
/// given) and waits for `subscribed`. Returns the stream, the bytes already
/// read after it, and the `subscribed` reply.
pub(super) async fn open(
    spec: &ClientSpec,
    ctx: &ThreadCtx,
    resume: Option<serde_json::Value>,
) -> Result<(Stream, BytesMut, serde_json::Value), ClientError> {
    let ep = &ctx.cfg.endpoints[endpoint_index(spec, ctx.cfg.endpoints.len())];
    let nonce = (spec.id as u64) << 20 ^ wall_clock_ns();
    if ctx.cfg.protocol == Protocol::Binance {
        // The streams are in the path: nothing to say, nothing to wait for.
        let path = binance::stream_path(spec, &ctx.cfg.plan);
        let (s, buf) = upgrade(ep, &path, nonce).await?;
        return Ok((s, buf, serde_json::Value::Null));
    }
    let (mut s, mut buf) = upgrade(ep, STREAM_PATH, nonce).await?;
    // hello, then subscribe, then wait for `subscribed` (id 1).
    let mut said_hello = false;
    let mut resume = resume;
    loop {
        while let Some(h) = ws::parse_head(&buf)? {
            if buf.len() < h.total() {
                break;
            }
            let payload = buf[h.header_len..h.total()].to_vec();
            buf.advance(h.total());
            match h.opcode {
                ws::OPCODE_TEXT => {}
                ws::OPCODE_CLOSE => {
                    return Err(WsError::Closed(if said_hello {
                        "before `subscribed` arrived"
                    } else {
                        "before `hello` arrived"
                    })
                    .into());
                }
                _ => continue,
            }
            let text = String::from_utf8_lossy(&payload);
            let kind = match scan(&payload) {
                Ok(Msg::Control(k)) => String::from_utf8_lossy(k).into_owned(),
                Ok(Msg::Tick(_)) => "tick".into(),
                Err(_) => String::new(),
            };
            if !said_hello {
                if kind != "hello" {
                    return Err(ClientError::NoHello(text.chars().take(200).collect()));
                }
                said_hello = true;
                let mut frame = Vec::new();
                let msg = subscribe_message(spec, &ctx.cfg.plan, &ctx.cfg.resume, resume.take());
                let m = (spec.id as u64 ^ 0xDEAD_BEEF).to_le_bytes();
                ws::client_frame(
                    &mut frame,
                    ws::OPCODE_TEXT,
                    msg.as_bytes(),
                    [m[0], m[1], m[2], m[3]],
                );
                s.write_all(&frame).await.map_err(WsError::Io)?;
            } else if kind == "subscribed" {
                let reply = serde_json::from_slice(&payload).unwrap_or_default();
                return Ok((s, buf, reply));
            } else if kind == "error" {
                return Err(ClientError::SubscribeRefused(
                    text.chars().take(300).collect(),
                ));
            }
        }
        if s.read_buf(&mut buf).await.map_err(WsError::Io)? == 0 {
            return Err(WsError::Closed(if said_hello {
                "before `subscribed` arrived"
            } else {
                "before `hello` arrived"
            })
            .into());
        }
    }
}

/// Where tickwire's subscribers connect.
const STREAM_PATH: &str = "/v1/stream";

/// Connects to `path` (over TLS for `wss://`) and completes the WebSocket
/// upgrade.
async fn upgrade(ep: &Endpoint, path: &str, nonce: u64) -> Result<(Stream, BytesMut), WsError> {
    let mut s = tls::connect(ep).await?;
    let (req, accept) = ws::upgrade_request(ep, path, nonce);
    s.write_all(&req).await?;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(WsError::Closed("during the WebSocket handshake"));
        }
        if let Some(n) = ws::parse_upgrade_response(&buf, &accept, ep, path)? {
            buf.advance(n);
            return Ok((s, buf));
        }
    }
}

/// Connects once and reads the `hello` (Binance: the answer to a
/// `LIST_SUBSCRIPTIONS`), so that a dead address or a server speaking
/// another protocol is reported once, clearly, before thousands of clients
/// try. Returns the server's name and version from `hello`.
pub async fn probe(
    ep: &Endpoint,
    protocol: Protocol,
    limit: Duration,
) -> Result<String, ClientError> {
    let path = match protocol {
        Protocol::Tickwire => STREAM_PATH,
        Protocol::Binance => "/ws",
    };
    let (mut s, mut buf) =
        match tokio::time::timeout(limit, upgrade(ep, path, wall_clock_ns())).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(WsError::HandshakeTimeout {
                    addr: ep.addr,
                    path: path.into(),
                    secs: limit.as_secs(),
                }
                .into());
            }
        };
    let read = async {
        match protocol {
            Protocol::Tickwire => read_hello(&mut s, &mut buf).await,
            Protocol::Binance => binance_reply(&mut s, &mut buf).await,
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::NoHello(format!(
            "nothing within {} s",
            limit.as_secs()
        ))),
    }
}

/// Asks a Binance endpoint for its subscriptions and reads the reply.
async fn binance_reply(s: &mut Stream, buf: &mut BytesMut) -> Result<String, ClientError> {
    let mut frame = Vec::new();
    let req = br#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#;
    ws::client_frame(&mut frame, ws::OPCODE_TEXT, req, [5, 6, 7, 8]);
    s.write_all(&frame).await.map_err(WsError::Io)?;
    loop {
        if let Some(h) = ws::parse_head(buf)?
            && buf.len() >= h.total()
        {
            let payload = &buf[h.header_len..h.total()];
            if h.opcode != ws::OPCODE_TEXT || binance::scan(payload) != Ok(Msg::Control(b"result"))
            {
                let text = String::from_utf8_lossy(payload);
                return Err(ClientError::NoHello(format!(
                    "not a Binance endpoint's reply to LIST_SUBSCRIPTIONS: {}",
                    text.chars().take(200).collect::<String>()
                )));
            }
            let mut close = Vec::new();
            ws::client_frame(
                &mut close,
                ws::OPCODE_CLOSE,
                &1000u16.to_be_bytes(),
                [1, 2, 3, 4],
            );
            let _ = s.write_all(&close).await;
            return Ok("Binance endpoint".into());
        }
        if s.read_buf(buf).await.map_err(WsError::Io)? == 0 {
            return Err(WsError::Closed("before the reply to LIST_SUBSCRIPTIONS").into());
        }
    }
}

async fn read_hello(s: &mut Stream, buf: &mut BytesMut) -> Result<String, ClientError> {
    loop {
        if let Some(h) = ws::parse_head(buf)?
            && buf.len() >= h.total()
        {
            let payload = &buf[h.header_len..h.total()];
            let text = String::from_utf8_lossy(payload).into_owned();
            if h.opcode != ws::OPCODE_TEXT || scan(payload) != Ok(Msg::Control(b"hello")) {
                return Err(ClientError::NoHello(text.chars().take(200).collect()));
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let name = format!(
                "{} {}",
                v["server"].as_str().unwrap_or("?"),
                v["version"].as_str().unwrap_or("?")
            );
            let mut close = Vec::new();
            ws::client_frame(
                &mut close,
                ws::OPCODE_CLOSE,
                &1000u16.to_be_bytes(),
                [1, 2, 3, 4],
            );
            let _ = s.write_all(&close).await;
            return Ok(name);
        }
        if s.read_buf(buf).await.map_err(WsError::Io)? == 0 {
            return Err(WsError::Closed("before `hello` arrived").into());
        }
    }
}

fn subscribe_message(
    spec: &ClientSpec,
    plan: &Plan,
    scenario: &ResumePlan,
    resume: Option<serde_json::Value>,
) -> String {
    let symbols: Vec<&str> = if spec.all {
        vec!["*"]
    } else {
        spec.symbols
            .iter()
            .map(|&i| plan.symbols[i as usize].as_str())
            .collect()
    };
    let mut msg = serde_json::json!({
        "op": "subscribe",
        "id": 1,
        "symbols": symbols,
        "channels": plan.channel_names(),
        "snapshot": true,
    });
    if let Some(policy) = scenario.stall_policy.filter(|_| spec.slow) {
        let each: serde_json::Map<String, serde_json::Value> = plan
            .channel_names()
            .into_iter()
            .map(|c| (c.to_owned(), policy.name().into()))
            .collect();
        msg["policy"] = each.into();
    }
    if let Some(r) = resume {
        msg["resume"] = r;
    }
    msg.to_string()
}
