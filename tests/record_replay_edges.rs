//! `record` against a scripted docs/PROTOCOL.md server that skips seqs, and
//! `replay --loop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use sha1::{Digest, Sha1};
use tickwire::model::decimal::Fixed;
use tickwire::model::speed::Speed;
use tickwire::model::tick::{Event, NewTick, Side};
use tickwire::pipeline::stats::Origin;
use tickwire::recordings::format::{RecordingWriter, read_all};
use tickwire::recordings::record::{Ending, RecordProgress, record};
use tickwire::recordings::replay::client::{ReplayOptions, replay};
use tickwire::server::config::{Config, FeedSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(text: &str) -> Vec<u8> {
    let mut f = vec![0x81];
    let n = text.len();
    if n < 126 {
        f.push(n as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(text.as_bytes());
    f
}

/// A minimal server speaking docs/PROTOCOL.md: handshake, hello, subscribed,
/// then the given ticks, then close 1000.
async fn scripted_server(ticks: Vec<String>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut tmp).await.unwrap();
            buf.extend_from_slice(&tmp[..n]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let key = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            })
            .unwrap()
            .trim()
            .to_string();
        let accept = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        ));
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        s.write_all(&frame(r#"{"type":"hello","server":"scripted","version":"0","protocol":"tickwire.json.v1","limits":{}}"#)).await.unwrap();
        // Wait for the subscribe (any client frame), then answer it.
        let _ = s.read(&mut tmp).await.unwrap();
        s.write_all(&frame(
            r#"{"type":"subscribed","id":1,"symbols":["*"],"channels":["trade","quote"],"ids":{}}"#,
        ))
        .await
        .unwrap();
        for t in ticks {
            s.write_all(&frame(&t)).await.unwrap();
        }
        s.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
        let _ = s.read(&mut tmp).await;
    });
    addr
}

#[tokio::test]
async fn record_counts_seq_gaps_from_any_server() {
    let trade = |sym: &str, seq: u64| {
        format!(
            r#"{{"type":"trade","sym":"{sym}","seq":{seq},"ts":{seq},"rx":{seq},"px":1.5,"qty":2,"side":"S"}}"#
        )
    };
    // A: 1 2 5 6 9 → 2 gaps, 4 missing; B: 1 2 → none.
    let script = vec![
        trade("A", 1),
        trade("A", 2),
        trade("B", 1),
        trade("A", 5),
        trade("A", 6),
        trade("B", 2),
        trade("A", 9),
    ];
    let addr = scripted_server(script).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gaps.jsonl");
    let progress = Arc::new(RecordProgress::default());
    let r = record(
        &format!("ws://{addr}"),
        &["*".into()],
        &out,
        std::future::pending(),
        progress,
    )
    .await
    .unwrap();
    assert_eq!((r.ticks, r.gaps, r.missing), (7, 2, 4));
    assert!(
        matches!(r.ending, Ending::ServerClosed(ref why) if why.contains("1000")),
        "{:?}",
        r.ending
    );
    let got = read_all(&out).unwrap();
    assert_eq!(got.len(), 7);
    assert_eq!(
        got[0].event,
        Event::Trade {
            px: Fixed(1_500_000_000),
            qty: Fixed(2_000_000_000),
            side: Side::Sell
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_loop_plays_the_file_again_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.twr");
    let mut w = RecordingWriter::create(&file).unwrap();
    for i in 0..10u64 {
        w.write(&NewTick {
            book: None,
            sym: "L".into(),
            ts: 1_000 + i,
            event: Event::Trade {
                px: Fixed(1),
                qty: Fixed(1),
                side: Side::Unknown,
            },
        })
        .unwrap();
    }
    w.finish().unwrap();
    let srv = tickwire::server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        feed: FeedSource::None,
        ..Config::default()
    })
    .unwrap();
    let mut opts = ReplayOptions::new(
        vec![file],
        format!("ws://{}/v1/publish", srv.addr()),
        Speed::Max,
    );
    opts.looping = true;
    let report = replay(&opts, tokio::time::sleep(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(report.laps >= 2, "looped: {} laps", report.laps);
    assert!(report.sent > 20, "sent {}", report.sent);
    // Every tick sent was acknowledged by the final ping, so ingested
    // (counted by origin: `ticks_in` also counts the bar updates the bar
    // clock publishes, once a second of wall time, so a slow run had more).
    let published = &srv.stats().ticks_in_by_origin[Origin::Publisher as usize];
    assert_eq!(published.load(Ordering::Relaxed), report.sent);
    srv.shutdown();
}
