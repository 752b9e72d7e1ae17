//! Driving the Binance endpoint by hand: a tokio-tungstenite client,
//! requests, REST over a raw socket, and ticks and books published straight
//! into ingest.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickwire::model::book::{BookChange, BookSide, Level};
use tickwire::model::decimal::Fixed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::pipeline::stats::Origin;
use tickwire::server::ServerHandle;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(h: &ServerHandle, path: &str) -> Ws {
    let url = format!("ws://{}{path}", h.binance_addr().unwrap());
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connects")
        .0
}

/// The next text message as JSON (pings are answered by the library).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

pub async fn request(ws: &mut Ws, req: Value) -> Value {
    ws.send(Message::Text(req.to_string().into()))
        .await
        .unwrap();
    next_json(ws).await
}

pub async fn send_raw(ws: &mut Ws, text: &str) -> Value {
    ws.send(Message::Text(text.into())).await.unwrap();
    next_json(ws).await
}

pub fn fx(s: &str) -> Fixed {
    s.parse().unwrap()
}

/// A payload's decimal string, checked to have Binance's 8 fraction digits.
pub fn dec(v: &Value) -> Fixed {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string: {v}"));
    assert!(
        s.split_once('.').is_some_and(|(_, f)| f.len() >= 8),
        "8 decimals: {s}"
    );
    fx(s)
}

pub async fn trade(h: &ServerHandle, sym: &str, px: &str, qty: &str, side: Side) {
    let t = NewTick {
        sym: sym.into(),
        ts: 1_582_329_600_123_456_789,
        event: Event::Trade {
            px: fx(px),
            qty: fx(qty),
            side,
        },
        book: None,
    };
    let a = h.ingest().admit(t).unwrap();
    h.ingest().publish(&[a]).await;
}

pub async fn book(h: &ServerHandle, sym: &str, change: BookChange) {
    let b = h.ingest().admit_book(sym, 1, change).unwrap();
    h.ingest()
        .publish_book(&b, Origin::Publisher)
        .await
        .unwrap();
}

pub fn level(side: BookSide, px: &str, sz: &str) -> Level {
    Level {
        side,
        px: fx(px),
        sz: fx(sz),
    }
}

pub async fn http_get(h: &ServerHandle, path: &str) -> (u16, Value) {
    http_get_with(h, path, "").await
}

/// [`http_get`] with more header lines (each ending in CRLF).
pub async fn http_get_with(h: &ServerHandle, path: &str, headers: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(h.binance_addr().unwrap()).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
