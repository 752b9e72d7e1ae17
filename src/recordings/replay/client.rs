//! `tickwire replay`: plays recordings into a server's `/v1/publish` over a
//! WebSocket, paced by `ts` deltas divided by the speed (or as fast as the
//! server accepts: TCP backpressure paces the sender, nothing is dropped).
//!
//! Ticks due at the same moment leave together as one JSON-array frame
//! (bounded in bytes). Each tick's pacing error, the time its frame was
//! written minus the time it was scheduled for, goes into an HdrHistogram.
//! At the end a `ping` is sent; the server answers `pong` only once every
//! tick sent before it has been ingested, so the count printed is the count
//! that landed.

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::MergedReader;
use crate::model::speed::Speed;
use crate::recordings::connect::{ClientTls, ConnectError, connect, ws_url};
use crate::recordings::format::{RecordingError, write_reference_json, write_tick_json};
use crate::recordings::selection::Selection;

/// Arguments of `tickwire replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Recordings to play; several are merged in `ts` order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The server's publish endpoint, e.g. ws://127.0.0.1:8080/v1/publish.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A factor (1 = recorded pace, 10 = ten times faster) or `max`.
    #[arg(long, default_value = "1", value_parser = Speed::parse)]
    pub speed: Speed,
    /// Play again from the start after the end, until interrupted.
    #[arg(long = "loop")]
    pub looping: bool,
    #[command(flatten)]
    pub selection: Selection,
    /// Largest frame sent, bytes (keep below the server's --max-message-bytes).
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_frame_bytes: usize,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// A recording went bad while playing (it changed or was cut after the
    /// check before the first send).
    #[error("{source}: stopped after {sent} ticks were sent")]
    RecordingWhilePlaying {
        sent: u64,
        #[source]
        source: RecordingError,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the server at {url} went away after {sent} ticks were sent: {message}")]
    ServerGone {
        url: String,
        sent: u64,
        message: String,
    },
    #[error(
        "nothing to play: no tick inside the window {window} (--start/--end/--symbols); the recordings hold {seen} ticks{span}"
    )]
    Empty {
        /// The window the selection resolved to.
        window: String,
        /// Ticks in the recordings.
        seen: u64,
        /// `, from T to T` when there were any.
        span: String,
    },
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    /// Ticks sent, and acknowledged by the final ping.
    pub sent: u64,
    /// From the first send to the final pong.
    pub duration: Duration,
    pub laps: u64,
    /// Pacing error per tick, ns; `None` at `--speed max` (nothing is scheduled).
    pub pacing: Option<Histogram<u64>>,
    /// `error` replies from the server (malformed ticks), and the first one.
    pub server_errors: u64,
    pub first_server_error: Option<String>,
}

/// How to replay (the library form of [`ReplayArgs`]).
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub files: Vec<PathBuf>,
    pub url: String,
    pub speed: Speed,
    pub looping: bool,
    pub selection: Selection,
    pub max_frame_bytes: usize,
    /// Draw a progress bar on stderr (only if it is a terminal).
    pub progress: bool,
    /// How a `wss://` server is verified.
    pub tls: ClientTls,
}

impl ReplayOptions {
    pub fn new(files: Vec<PathBuf>, url: impl Into<String>, speed: Speed) -> Self {
        ReplayOptions {
            files,
            url: url.into(),
            speed,
            looping: false,
            selection: Selection::default(),
            max_frame_bytes: 32 * 1024,
            progress: false,
            tls: ClientTls::default(),
        }
    }
}

/// What the connection's reading half reports.
enum Event {
    Pong(i64),
    ServerError(String),
    Gone(String),
}

/// Sleeps until `t`: on the runtime's timer for the bulk (so the reader
/// task runs), then the last stretch with the OS's ns-resolution sleep
/// (tokio's timer has 1 ms granularity). Returns false if stopped.
async fn sleep_until(t: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    let slack = Duration::from_millis(3);
    if t > Instant::now() + slack {
        tokio::select! {
            _ = tokio::time::sleep_until((t - slack).into()) => {}
            _ = stop.changed() => return false,
        }
    }
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
    !*stop.borrow()
}

/// When each tick of a lap is due: its recorded offset from the lap's first
/// tick (by the latest `ts` so far, see [`super::pacing_offsets`]) divided
/// by the speed, counted from the moment that first tick was read. The
/// origin is taken then, not when the replay started, so the time spent
/// reading past the ticks before `--start` (or reopening files for the
/// next lap) is not counted as every tick being late.
struct Schedule {
    speed: Speed,
    /// The lap's first tick: when it was read, and its `ts`.
    origin: Option<(Instant, u64)>,
    /// The highest `ts` of the lap so far.
    latest: u64,
}

impl Schedule {
    fn new(speed: Speed) -> Self {
        Schedule {
            speed,
            origin: None,
            latest: 0,
        }
    }

    /// When the tick with `ts`, read at `now`, is due; `None` at `max`.
    fn due(&mut self, ts: u64, now: Instant) -> Option<Instant> {
        let Speed::Factor(f) = self.speed else {
            return None;
        };
        let (origin, first) = *self.origin.get_or_insert((now, ts));
        self.latest = self.latest.max(ts);
        Some(origin + Duration::from_nanos(((self.latest - first) as f64 / f) as u64))
    }

    /// The next lap starts its own clock at its first tick.
    fn next_lap(&mut self) {
        self.origin = None;
        self.latest = 0;
    }
}

/// Reads every file to its end record before anything is sent, as `serve
/// --replay` does: a truncated or corrupt recording fails here, with the
/// reader's position, instead of after part of it has been played.
fn check_complete(files: &[PathBuf]) -> Result<(), RecordingError> {
    for path in files {
        let mut r = crate::recordings::format::RecordingReader::open(path)?;
        while r.next_tick()?.is_some() {}
    }
    Ok(())
}

/// Plays the recordings until they end (or, with `looping`, until `stop`).
pub async fn replay(
    opts: &ReplayOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<ReplayReport, ReplayError> {
    let url = ws_url(&opts.url, "/v1/publish")?;
    // Read the files first: a bad or cut file fails before anything is sent.
    check_complete(&opts.files)?;
    let mut reader = MergedReader::open(&opts.files, &opts.selection)?;
    let ws = connect(&url, &opts.tls).await?;
    let (mut sink, stream) = ws.split();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let reader_task = tokio::spawn(forward_server_events(stream, events_tx));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stopper = tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });

    let bar = progress_bar(opts.progress, reader.progress().1);
    let mut pacing = match opts.speed {
        Speed::Factor(_) => Some(
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid histogram bounds"),
        ),
        Speed::Max => None,
    };
    let mut server_errors = 0u64;
    let mut first_server_error = None;
    let mut frame: Vec<u8> = Vec::with_capacity(opts.max_frame_bytes + 512);
    let mut scheduled: Vec<Instant> = Vec::new();
    let mut sent = 0u64;
    let mut laps = 0u64;
    let start = Instant::now();
    let mut schedule = Schedule::new(opts.speed);
    let gone = |sent: u64, message: String| ReplayError::ServerGone {
        url: url.clone(),
        sent,
        message,
    };

    'laps: loop {
        while let Some(t) = reader
            .next_tick()
            .map_err(|source| ReplayError::RecordingWhilePlaying { sent, source })?
        {
            if *stop_rx.borrow() {
                break 'laps;
            }
            let due = schedule.due(t.ts, Instant::now());
            if let Some(due) = due
                && due > Instant::now()
            {
                // Send what is due before waiting for this one.
                if !frame.is_empty() {
                    send(&mut sink, &mut frame, &mut scheduled, &mut pacing)
                        .await
                        .map_err(|m| gone(sent, m))?;
                }
                if !sleep_until(due, &mut stop_rx).await {
                    break 'laps;
                }
            }
            // The recording's reference data goes to the server as `ref`
            // messages, ahead of the tick it came before.
            push_references(&mut frame, reader.take_references());
            frame.push(if frame.is_empty() { b'[' } else { b',' });
            write_tick_json(&mut frame, &t);
            scheduled.push(due.unwrap_or(start));
            sent += 1;
            if frame.len() >= opts.max_frame_bytes {
                send(&mut sink, &mut frame, &mut scheduled, &mut pacing)
                    .await
                    .map_err(|m| gone(sent, m))?;
                bar.set_position(reader.progress().0);
                bar.set_message(format!("{sent} ticks"));
            }
            while let Ok(ev) = events.try_recv() {
                match ev {
                    Event::ServerError(e) => {
                        server_errors += 1;
                        first_server_error.get_or_insert(e);
                    }
                    Event::Gone(m) => return Err(gone(sent, m)),
                    Event::Pong(_) => {}
                }
            }
        }
        push_references(&mut frame, reader.take_references());
        if !frame.is_empty() {
            send(&mut sink, &mut frame, &mut scheduled, &mut pacing)
                .await
                .map_err(|m| gone(sent, m))?;
        }
        if sent == 0 {
            let (seen, span) = reader.seen();
            let time = crate::recordings::selection::rfc3339;
            return Err(ReplayError::Empty {
                window: reader.window().to_string(),
                seen,
                span: span.map_or_else(String::new, |(lo, hi)| {
                    format!(", from {} to {}", time(lo), time(hi))
                }),
            });
        }
        laps += 1;
        if !opts.looping {
            break;
        }
        schedule.next_lap();
        reader = MergedReader::open(&opts.files, &opts.selection)?;
    }
    if !frame.is_empty() {
        send(&mut sink, &mut frame, &mut scheduled, &mut pacing)
            .await
            .map_err(|m| gone(sent, m))?;
    }
    // Wait until everything sent has been ingested.
    await_ingested(
        &mut sink,
        &mut events,
        &mut server_errors,
        &mut first_server_error,
    )
    .await
    .map_err(|m| gone(sent, m))?;
    let duration = start.elapsed();
    bar.finish_and_clear();
    let _ = sink.send(Message::Close(None)).await;
    stopper.abort();
    reader_task.abort();
    Ok(ReplayReport {
        sent,
        duration,
        laps,
        pacing,
        server_errors,
        first_server_error,
    })
}

/// Turns what the server sends back into [`Event`]s until the connection
/// ends: pongs, error replies, and the end itself.
async fn forward_server_events<S>(mut stream: S, events_tx: mpsc::UnboundedSender<Event>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let ev = match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) if v["type"] == "pong" => Event::Pong(v["id"].as_i64().unwrap_or(-1)),
                    Ok(v) if v["type"] == "error" => Event::ServerError(text.to_string()),
                    _ => continue,
                }
            }
            Some(Ok(Message::Close(frame))) => Event::Gone(match frame {
                Some(f) => format!("closed with {} {}", u16::from(f.code), f.reason),
                None => "closed".into(),
            }),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Event::Gone(e.to_string()),
            None => Event::Gone("connection closed".into()),
        };
        let gone = matches!(ev, Event::Gone(_));
        if events_tx.send(ev).is_err() || gone {
            return;
        }
    }
}

/// A `ping` after the last tick, answered once the server has ingested
/// everything before it (docs/PROTOCOL.md: `ping` is a barrier); counts the
/// error replies that arrive meanwhile.
async fn await_ingested<S>(
    sink: &mut S,
    events: &mut mpsc::UnboundedReceiver<Event>,
    server_errors: &mut u64,
    first_server_error: &mut Option<String>,
) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    const PING_ID: i64 = 1;
    sink.send(Message::text(format!(
        "{{\"op\":\"ping\",\"id\":{PING_ID}}}"
    )))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        match events.recv().await {
            Some(Event::Pong(id)) if id == PING_ID => return Ok(()),
            Some(Event::Pong(_)) => {}
            Some(Event::ServerError(e)) => {
                *server_errors += 1;
                first_server_error.get_or_insert(e);
            }
            Some(Event::Gone(m)) => return Err(m),
            None => return Err("connection closed".into()),
        }
    }
}

/// Adds reference records to a publish frame as `ref` elements.
fn push_references(frame: &mut Vec<u8>, refs: crate::recordings::format::References) {
    for (sym, inst) in refs {
        frame.push(if frame.is_empty() { b'[' } else { b',' });
        write_reference_json(frame, &sym, &inst);
    }
}

async fn send<S>(
    sink: &mut S,
    frame: &mut Vec<u8>,
    scheduled: &mut Vec<Instant>,
    pacing: &mut Option<Histogram<u64>>,
) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    frame.push(b']');
    // The frame is ASCII JSON built by write_tick_json.
    let text = String::from_utf8(std::mem::take(frame)).map_err(|e| e.to_string())?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    let done = Instant::now();
    if let Some(h) = pacing {
        for due in scheduled.iter() {
            let late = done.saturating_duration_since(*due).as_nanos();
            h.saturating_record(u64::try_from(late).unwrap_or(u64::MAX));
        }
    }
    scheduled.clear();
    Ok(())
}

fn progress_bar(wanted: bool, total_bytes: u64) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {percent}% of the recording, {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn micros(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// The closing summary, as printed by `tickwire replay`.
pub fn summary(report: &ReplayReport, url: &str) -> String {
    let secs = report.duration.as_secs_f64();
    let mut s = format!(
        "replayed {} ticks to {url} in {:.3} s ({:.0} ticks/s), {} lap(s); all acknowledged by the server\n",
        report.sent,
        secs,
        report.sent as f64 / secs.max(1e-9),
        report.laps
    );
    match &report.pacing {
        Some(h) => s.push_str(&format!(
            "pacing error (sent − scheduled) over {} ticks: p50 {}, p99 {}, max {}\n",
            h.len(),
            micros(h.value_at_quantile(0.5)),
            micros(h.value_at_quantile(0.99)),
            micros(h.max())
        )),
        None => s.push_str("pacing error: not measured at --speed max (no schedule)\n"),
    }
    if report.server_errors > 0 {
        s.push_str(&format!(
            "the server refused {} message(s); first: {}\n",
            report.server_errors,
            report.first_server_error.as_deref().unwrap_or("")
        ));
    }
    s
}

/// Runs `tickwire replay`.
pub fn run(args: ReplayArgs) -> ExitCode {
    let opts = ReplayOptions {
        files: args.files,
        url: args.to,
        speed: args.speed,
        looping: args.looping,
        selection: args.selection,
        max_frame_bytes: args.max_frame_bytes,
        progress: true,
        tls: args.tls,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickwire replay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(replay(&opts, interrupted())) {
        Ok(report) => {
            print!("{}", summary(&report, &opts.url));
            if report.server_errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tickwire replay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_starts_at_the_first_tick_read_not_at_the_replay_start() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Speed::Factor(2.0));
        // The first selected tick is read 5 s in (a long seek to --start):
        // it is due then, not 5 s late.
        let first = t0 + Duration::from_secs(5);
        assert_eq!(s.due(1_000_000_000, first), Some(first));
        // 4 s of recorded time at speed 2 later, whenever it is read.
        assert_eq!(
            s.due(5_000_000_000, first + Duration::from_millis(1)),
            Some(first + Duration::from_secs(2))
        );
        // A ts stepping back is due with the latest.
        assert_eq!(
            s.due(3_000_000_000, first),
            Some(first + Duration::from_secs(2))
        );
        // The next lap has its own origin.
        s.next_lap();
        let lap2 = first + Duration::from_secs(60);
        assert_eq!(s.due(1_000_000_000, lap2), Some(lap2));
        assert_eq!(Schedule::new(Speed::Max).due(1, t0), None);
    }
}
