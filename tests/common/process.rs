//! A `tickwire serve` child process (for tests that kill -9 and restart a
//! server), the subscribe-and-collect step and an SSE reader, shared by
//! tests/journal.rs, tests/journal_resume.rs and tests/resume.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{RawWs, WAIT};

/// A `tickwire serve` process, killed (SIGKILL) when dropped.
pub struct Served(pub std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tickwire serve --no-feed --workers 1` on 127.0.0.1:`port` (0: any)
/// with `extra` flags, its log in `dir/log-N` for a failure's post-mortem;
/// returns once it has bound.
pub fn serve_process(dir: &Path, port: u16, extra: &[&str]) -> (Served, SocketAddr) {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let addr_file = dir.join(format!("addr-{n}"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--no-feed", "--workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--addr-file")
        .arg(&addr_file)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("log-{n}"))).unwrap())
        .spawn()
        .map(Served)
        .expect("start tickwire serve");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file)
            && let Ok(a) = s.trim().parse()
        {
            return (child, a);
        }
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a subscribe and returns its `subscribed` (or `error`) reply and
/// the ticks that came before the next pong.
pub async fn ask(ws: &mut RawWs, req: Value) -> (Value, Vec<Value>) {
    ws.send_json(req).await;
    ws.send_text(r#"{"op":"ping","id":999}"#).await;
    let (_, mut before) = ws.recv_until("pong").await;
    let pos = before
        .iter()
        .position(|v| v["type"] == "subscribed" || v["type"] == "error")
        .expect("a reply");
    let reply = before.remove(pos);
    (reply, before)
}

/// A client subscribed to R1 and R2 (no snapshot), with the epoch its
/// reply named.
pub async fn subscribed_to_r1_r2(addr: SocketAddr) -> (RawWs, String) {
    let mut ws = super::subscriber(addr).await;
    let req = serde_json::json!({"op":"subscribe","id":1,"symbols":["R1","R2"],"snapshot":false});
    let (reply, _) = ask(&mut ws, req).await;
    let epoch = reply["epoch"].as_str().unwrap().to_string();
    (ws, epoch)
}

/// A raw `/v1/sse` client.
pub struct SseStream {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One SSE event: its name, data and id.
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

impl SseStream {
    pub async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> SseStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let last = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{last}\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut s = SseStream {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(p) = s.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            s.fill().await;
        };
        let head = String::from_utf8_lossy(&s.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.buf.drain(..end);
        s
    }

    /// The TCP stream, to end the connection a chosen way.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    async fn fill(&mut self) {
        let mut tmp = [0u8; 16384];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut tmp))
            .await
            .expect("data in time")
            .unwrap();
        assert!(n > 0, "the stream ended");
        self.buf.extend_from_slice(&tmp[..n]);
    }

    /// The next event (comments skipped).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buf[..p].to_vec()).unwrap();
                self.buf.drain(..p + 2);
                let (mut event, mut data, mut id) = (None, String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    }
                }
                if let Some(event) = event {
                    return SseEvent { event, data, id };
                }
                continue;
            }
            self.fill().await;
        }
    }
}
