//! `tickwire record`: subscribes to any server speaking docs/PROTOCOL.md and
//! writes the ticks it receives to a recording, in arrival order.
//!
//! Subscribes with `"snapshot":false`, so the recording holds live ticks
//! only, and with the `catchup` slow-consumer policy on both channels: when
//! the recorder falls behind, the server feeds it from its history instead
//! of conflating, so nothing is lost while it stays within the history's
//! window. Per (symbol, channel) it follows `seq` and counts gaps (ticks the
//! server could not give it); a recording with a gap exits non-zero. The file is flushed every 200 ms while
//! recording and completed (end record, rename) however the session ends:
//! `--duration` elapsed, Ctrl-C/SIGTERM, or the server going away.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::model::tick::Channel;
use crate::recordings::connect::{ClientTls, ConnectError, connect, ws_url};
use crate::recordings::format::{RecordingError, RecordingWriter};
use crate::wire::publish::{Published, parse_publish};

/// Arguments of `tickwire record`.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The server, e.g. ws://127.0.0.1:8080 (the path defaults to /v1/stream).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Symbols to record (comma-separated), or `*` for all.
    #[arg(long, value_name = "A,B|*", value_delimiter = ',', default_value = "*")]
    pub symbols: Vec<String>,
    /// Channels to record (comma-separated): trade, quote, and the bar
    /// channels bar_1s, bar_1m, bar_1h, bar_1d. Replaying recorded bars
    /// plays them instead of building those intervals again.
    #[arg(
        long,
        value_name = "CHANNELS",
        value_delimiter = ',',
        default_value = "trade,quote"
    )]
    pub channels: Vec<String>,
    /// Output recording: `.twr` binary or `.jsonl` JSON lines, `.zst` to compress.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Stop after this long (e.g. 30s, 5m); default: until interrupted or
    /// the server closes.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{url} refused the subscription: {message}")]
    Refused { url: String, message: String },
    #[error("{url}: a tick could not be read: {message}")]
    BadTick { url: String, message: String },
}

/// How a recording session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `--duration` elapsed or the caller's stop resolved.
    Stopped,
    /// The server closed the connection cleanly (close frame).
    ServerClosed(String),
    /// The connection broke without a close.
    ConnectionLost(String),
}

/// What a recording session did.
#[derive(Debug)]
pub struct RecordReport {
    pub ticks: u64,
    /// Jumps in `seq` seen, and the ticks they skipped.
    pub gaps: u64,
    pub missing: u64,
    /// Times the server said this recorder fell out of its history.
    pub out_of_history: u64,
    /// The feed epoch the recorded `seq`s belong to (from `subscribed`).
    pub epoch: Option<String>,
    pub ending: Ending,
    pub duration: Duration,
}

/// Live counters, readable while recording (tests, progress).
#[derive(Debug, Default)]
pub struct RecordProgress {
    pub ticks: AtomicU64,
    /// Set to 1 once the server confirmed the subscription.
    pub subscribed: AtomicU64,
}

/// The `seq` and `snap` of a received tick (the rest is parsed by
/// [`parse_publish`], which ignores them).
#[derive(serde::Deserialize)]
struct Sequenced<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: Option<u64>,
    #[serde(default)]
    snap: bool,
    #[serde(borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    epoch: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<std::borrow::Cow<'a, str>>,
}

/// Records until `stop` resolves or the server goes away. The file is
/// finished (and renamed to `out`) in every case but a failure to write it.
pub async fn record(
    url: &str,
    symbols: &[String],
    out: &std::path::Path,
    stop: impl Future<Output = ()>,
    progress: Arc<RecordProgress>,
) -> Result<RecordReport, RecordError> {
    record_via(url, &ClientTls::default(), symbols, out, stop, progress).await
}

/// [`record`], with `wss://` servers verified as `tls` says.
pub async fn record_via(
    url: &str,
    tls: &ClientTls,
    symbols: &[String],
    out: &std::path::Path,
    stop: impl Future<Output = ()>,
    progress: Arc<RecordProgress>,
) -> Result<RecordReport, RecordError> {
    let what = Subscription {
        symbols: symbols.to_vec(),
        channels: vec!["trade".into(), "quote".into()],
    };
    record_channels(url, tls, &what, out, stop, progress).await
}

/// What a recorder subscribes to.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Symbols, or `*`.
    pub symbols: Vec<String>,
    /// Channel names (docs/PROTOCOL.md); the server refuses unknown ones.
    pub channels: Vec<String>,
}

/// [`record_via`] on the channels `what` names, each with the `catchup`
/// policy.
pub async fn record_channels(
    url: &str,
    tls: &ClientTls,
    what: &Subscription,
    out: &std::path::Path,
    stop: impl Future<Output = ()>,
    progress: Arc<RecordProgress>,
) -> Result<RecordReport, RecordError> {
    let full = ws_url(url, "/v1/stream")?;
    let mut ws = connect(&full, tls).await?;
    let policy: serde_json::Map<String, serde_json::Value> = what
        .channels
        .iter()
        .map(|c| (c.clone(), "catchup".into()))
        .collect();
    let sub = serde_json::json!({
        "op": "subscribe",
        "id": 1,
        "symbols": what.symbols,
        "channels": what.channels,
        "snapshot": false,
        "policy": policy,
    });
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| ConnectError::Connect {
            url: full.clone(),
            message: e.to_string(),
        })?;
    let mut writer = RecordingWriter::create(out)?;
    let started = Instant::now();
    let mut last_seq: HashMap<(Arc<str>, Channel), u64> = HashMap::new();
    let (mut gaps, mut missing, mut out_of_history) = (0u64, 0u64, 0u64);
    let mut epoch = None;
    let mut flush = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(stop);
    let ending = loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = &mut stop => break Ending::Stopped,
            _ = flush.tick() => {
                writer.flush()?;
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                break Ending::ServerClosed(match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close".into(),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Ending::ConnectionLost(e.to_string()),
            None => break Ending::ConnectionLost("the connection ended without a close".into()),
        };
        let head: Sequenced = serde_json::from_str(&text).map_err(|e| RecordError::BadTick {
            url: full.clone(),
            message: format!("{e} in {}", text.chars().take(120).collect::<String>()),
        })?;
        match head.kind {
            "trade" | "quote" | "bar" => {}
            "subscribed" => {
                epoch = head.epoch.map(|e| e.into_owned());
                progress.subscribed.store(1, Ordering::Release);
                continue;
            }
            "error" => {
                return Err(RecordError::Refused {
                    url: full,
                    message: head.message.unwrap_or_default().into_owned(),
                });
            }
            "lagging" => {
                if head.reason.as_deref() == Some("out_of_history") {
                    out_of_history += 1;
                }
                tracing::warn!(message = %text, "the server says this recorder is behind");
                continue;
            }
            _ => continue,
        }
        if head.snap {
            continue;
        }
        let tick = match parse_publish(text.as_bytes()).pop() {
            Some(Ok(Published::Tick(t))) => t,
            Some(Err(e)) => {
                return Err(RecordError::BadTick {
                    url: full,
                    message: e.to_string(),
                });
            }
            _ => continue,
        };
        if let Some(seq) = head.seq {
            let key = (tick.sym.clone(), tick.event.channel());
            if let Some(prev) = last_seq.insert(key, seq)
                && seq > prev + 1
            {
                gaps += 1;
                missing += seq - prev - 1;
            }
        }
        writer.write(&tick)?;
        progress.ticks.fetch_add(1, Ordering::Relaxed);
    };
    let _ = ws.close(None).await;
    let ticks = writer.finish()?;
    Ok(RecordReport {
        ticks,
        gaps,
        missing,
        out_of_history,
        epoch,
        ending,
        duration: started.elapsed(),
    })
}

/// Runs `tickwire record`.
pub fn run(args: RecordArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickwire record: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let duration = args.duration;
    let stop = async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = crate::recordings::replay::client::interrupted() => {}
                }
            }
            None => crate::recordings::replay::client::interrupted().await,
        }
    };
    let progress = Arc::new(RecordProgress::default());
    let what = Subscription {
        symbols: args.symbols.clone(),
        channels: args.channels.clone(),
    };
    match rt.block_on(record_channels(
        &args.url, &args.tls, &what, &args.out, stop, progress,
    )) {
        Ok(r) => {
            let secs = r.duration.as_secs_f64();
            println!(
                "recorded {} ticks to {} in {:.1} s; epoch {}; {} seq gaps ({} ticks dropped by the server)",
                r.ticks,
                args.out.display(),
                secs,
                r.epoch.as_deref().unwrap_or("unknown"),
                r.gaps,
                r.missing
            );
            if r.gaps > 0 || r.out_of_history > 0 {
                eprintln!(
                    "tickwire record: the recording has gaps ({} seq jumps, {} ticks missing, fell out of the server's history {} times)",
                    r.gaps, r.missing, r.out_of_history
                );
                return ExitCode::FAILURE;
            }
            match r.ending {
                Ending::Stopped => ExitCode::SUCCESS,
                Ending::ServerClosed(why) => {
                    eprintln!(
                        "tickwire record: the server closed the connection ({why}); everything received is in {}",
                        args.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Ending::ConnectionLost(why) => {
                    eprintln!(
                        "tickwire record: the server went away ({why}); everything received is in {}",
                        args.out.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("tickwire record: {e}");
            ExitCode::FAILURE
        }
    }
}
