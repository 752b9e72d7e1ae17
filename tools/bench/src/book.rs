//! `tickwire bench --book`: the order-book scenario of issue 13.
//!
//! One server (started by the runner, or `--url`), `--symbols` books of 40
//! levels (20 per side), `--clients` subscribers each on `--per-client`
//! books at `--book-depth` (default 10; `full` receives every update that
//! changes the book, the fan-out a trade has) and the same symbols'
//! trades, `--slow` more stalled
//! (a 4 KiB receive buffer, never read). Two measured phases on the same
//! connections, one after the other:
//!
//! 1. **book**: `--rate` one-level book diffs per second (absolute sizes
//!    in the top `--book-levels` levels, default 12, a fifth of them
//!    removals);
//! 2. **trades**: `--rate` trades per second on the same symbols.
//!
//! With `--rounds N` the pair runs N times, in alternating order (book
//! then trades, then trades then book, …), so that neither kind always
//! runs first on a fresh server (whose history and heap are still growing)
//! or always second; each phase's figures are summed over its rounds, and
//! the book / trades ratio of each round is printed with their median.
//!
//! For each: latency from the server's `rx` to the client's read (p50,
//! p99, max), deliveries, and the server's CPU per delivered message (CPU
//! seconds used in the phase over messages the clients received in it);
//! and, from the server's `/metrics`, what that figure depends on besides
//! the code: bytes per delivery, deliveries per write, deliveries per
//! sequenced tick (a diff outside every subscriber's depth reaches nobody)
//! and CPU per sequenced tick, with the cores other processes kept busy.
//! For the stalled clients, at the end of the book phase and at its
//! highest: `tickwire_queued_bytes` and `tickwire_pending_book_levels`,
//! checked against the bound of one entry per price level (stalled clients
//! × books each × 40 levels).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::BenchError;
use super::args::BenchArgs;
use super::procstat;
use super::target::{self, Target};
use super::ws::{self, Endpoint, OPCODE_TEXT};

mod phase;
use phase::{PhaseResult, Sample};

/// Levels per side of each book; price levels a book can have in all.
const LEVELS_PER_SIDE: i64 = 20;
const LEVELS_PER_BOOK: u64 = 2 * LEVELS_PER_SIDE as u64;

/// What phase the run is in (clients time messages only while measuring).
const WARMUP: u8 = 0;
const BOOK: u8 = 1;
const TRADES: u8 = 3;

/// What fast clients count and time, shared across their tasks (one
/// thread: the locks are never contended).
struct Counters {
    /// The current phase.
    phase: AtomicU8,
    /// Messages received in the measured book and trades phases.
    delivered: [AtomicU64; 2],
    /// Their latencies (ns), per phase.
    latency: Mutex<[Histogram<u64>; 2]>,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid bounds")
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Connects and upgrades; `rcvbuf` shrinks the receive buffer (stalled).
async fn connect(
    ep: &Endpoint,
    path: &str,
    rcvbuf: Option<u32>,
    nonce: u64,
) -> Result<(TcpStream, Vec<u8>), String> {
    let socket = if ep.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n).map_err(|e| e.to_string())?;
    }
    let mut s = socket
        .connect(ep.addr)
        .await
        .map_err(|e| format!("{}: {e}", ep.addr))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (req, accept) = ws::upgrade_request(ep, path, nonce);
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if let Some(n) =
            ws::parse_upgrade_response(&buf, &accept, ep, path).map_err(|e| e.to_string())?
        {
            return Ok((s, buf.split_off(n)));
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{}: closed during the handshake", ep.addr));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn send_text<W: AsyncWriteExt + Unpin>(
    s: &mut W,
    text: &str,
    mask: u32,
) -> Result<(), String> {
    let mut frame = Vec::with_capacity(text.len() + 14);
    ws::client_frame(&mut frame, OPCODE_TEXT, text.as_bytes(), mask.to_le_bytes());
    s.write_all(&frame).await.map_err(|e| e.to_string())
}

/// The number after `"rx":` in a message (a number or a string), if any.
fn rx_of(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(5).position(|w| w == b"\"rx\":")? + 5;
    let mut digits = payload[at..]
        .iter()
        .skip_while(|b| **b == b'"')
        .take_while(|b| b.is_ascii_digit())
        .peekable();
    digits.peek()?;
    digits.try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A fast client: reads every frame; while a phase is measured, times and
/// counts that phase's messages.
async fn fast_client(mut s: TcpStream, mut buf: Vec<u8>, c: Arc<Counters>) {
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        while let Ok(Some(head)) = ws::parse_head(&buf) {
            if buf.len() < head.total() {
                break;
            }
            let payload = &buf[head.header_len..head.total()];
            let phase = c.phase.load(Ordering::Relaxed);
            let kind = if payload.starts_with(b"{\"type\":\"book\"") {
                Some(BOOK)
            } else if payload.starts_with(b"{\"type\":\"trade\"") {
                Some(TRADES)
            } else {
                None
            };
            if kind == Some(phase) {
                let i = usize::from(phase == TRADES);
                c.delivered[i].fetch_add(1, Ordering::Relaxed);
                if let Some(rx) = rx_of(payload) {
                    let ns = now_ns().saturating_sub(rx).max(1_000);
                    c.latency.lock().expect("not poisoned")[i].saturating_record(ns);
                }
            }
            if head.opcode == ws::OPCODE_CLOSE {
                return;
            }
            buf.drain(..head.total());
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn price(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every book's opening snapshot: bids 99.99 down, asks 100.01 up.
fn snapshots(symbols: &[String]) -> Vec<String> {
    symbols
        .iter()
        .map(|s| {
            let side = |base: i64, dir: i64| -> String {
                (0..LEVELS_PER_SIDE)
                    .map(|i| format!("[\"{}\",\"{}\"]", price(base + dir * i), 10 + i))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{{\"type\":\"book\",\"sym\":\"{s}\",\"ts\":{},\"snap\":true,\"bids\":[{}],\"asks\":[{}]}}",
                now_ns(),
                side(9999, -1),
                side(10001, 1)
            )
        })
        .collect()
}

/// One message of the phase: a one-level book diff in the top `levels`
/// levels (a fifth of them removals), or a trade.
fn message(rng: &mut Rng, symbols: &[String], phase: u8, levels: u64) -> String {
    let sym = &symbols[rng.below(symbols.len() as u64) as usize];
    let ts = now_ns();
    if phase == TRADES {
        let px = price(9990 + rng.below(20) as i64);
        return format!(
            "{{\"type\":\"trade\",\"sym\":\"{sym}\",\"ts\":{ts},\"px\":{px},\"qty\":1,\"side\":\"B\"}}"
        );
    }
    let i = rng.below(levels) as i64;
    let size = if rng.below(5) == 0 {
        0
    } else {
        1 + rng.below(99)
    };
    let (key, other, px) = if rng.below(2) == 0 {
        ("bids", "asks", 9999 - i)
    } else {
        ("asks", "bids", 10001 + i)
    };
    format!(
        "{{\"type\":\"book\",\"sym\":\"{sym}\",\"ts\":{ts},\"{key}\":[[\"{}\",\"{size}\"]],\"{other}\":[]}}",
        price(px)
    )
}

/// Publishes `rate` messages/s of `phase` until `until`, in batches every
/// 2 ms; returns how many it sent.
async fn publish<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    rng: &mut Rng,
    symbols: &[String],
    phase: u8,
    levels: u64,
    rate: f64,
    until: Instant,
) -> Result<u64, String> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while Instant::now() < until {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due <= sent {
            continue;
        }
        // At most 200 per frame: a publish frame has a size cap, and a
        // runner that fell behind sends what is due in several.
        while sent < due {
            let n = (due - sent).min(200);
            let batch: Vec<String> = (0..n)
                .map(|_| message(rng, symbols, phase, levels))
                .collect();
            send_text(w, &format!("[{}]", batch.join(",")), (sent + n) as u32)
                .await
                .map_err(|e| format!("publisher: {e}"))?;
            sent += n;
        }
    }
    Ok(sent)
}

/// The stalled clients' memory, from `/metrics`: (queued bytes, levels).
fn held(addr: std::net::SocketAddr) -> (f64, f64) {
    let m = target::fetch_metrics(addr, Duration::from_secs(2)).unwrap_or_default();
    let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
    (
        g("tickwire_queued_bytes"),
        g("tickwire_pending_book_levels"),
    )
}

fn server_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| procstat::process_cpu(p)).sum()
}

/// Runs the scenario: see the module documentation.
pub(crate) fn run(args: &BenchArgs) -> Result<bool, BenchError> {
    if args.compare.is_some() || args.sweep.is_some() || args.replay.is_some() {
        return Err(BenchError::Usage(
            "--book measures one target with its own load: not with --compare, --sweep or --replay"
                .into(),
        ));
    }
    let mut targets = super::targets(args)?;
    let connections = args.clients + args.slow + 64;
    if let Some(note) = procstat::raise_fd_limit(connections)? {
        eprintln!("tickwire bench: {note}");
    }
    let target = match targets.remove(0) {
        // Stalled clients stay connected for the whole book phase.
        Target::Spawn { mut extra, own } => {
            if !extra.iter().any(|a| a.starts_with("--evict-after")) {
                extra.extend(["--evict-after".into(), "1h".into()]);
            }
            Target::Spawn { extra, own }
        }
        t => t,
    }
    .with_connection_limits(connections);
    let mut running = target::start(&target, &args.server_pid, args.server_bin.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Thread)?;
    let pids: Vec<u32> = running.procs.iter().map(|p| p.pid).collect();
    let publish_ep = running.publish.clone();
    let sub_ep = running.subscribe[0].clone();
    let result = rt.block_on(scenario(args, &publish_ep, &sub_ep, &pids));
    if let Some(note) = running.stop() {
        eprintln!("tickwire bench: {note}");
    }
    let out = result.map_err(BenchError::Usage)?;
    report(args, &out);
    Ok(out.publish_errors == 0)
}

/// Everything the scenario measured.
struct Outcome {
    /// The book phases, then the trades phases (summed over the rounds).
    phases: [PhaseResult; 2],
    /// Each round's CPU per delivery, book / trades.
    round_ratios: Vec<f64>,
    /// Stalled clients' (queued bytes, pending book levels) at the end of
    /// the book phase.
    held_end: (f64, f64),
    /// Their highest values sampled during it.
    held_max: (f64, f64),
    /// `error` replies to the publisher (0 unless the load is wrong).
    publish_errors: u64,
}

/// Connects every client, each on its books and the same symbols' trades;
/// returns the stalled ones' sockets (kept open, never read).
async fn connect_clients(
    args: &BenchArgs,
    ep: &Endpoint,
    symbols: &[String],
    counters: &Arc<Counters>,
) -> Result<Vec<TcpStream>, String> {
    let mut stalled = Vec::with_capacity(args.slow);
    for i in 0..args.clients + args.slow {
        let is_stalled = i >= args.clients;
        let (mut s, rest) =
            connect(ep, "/v1/stream", is_stalled.then_some(4096), 100 + i as u64).await?;
        let list = (0..args.per_client)
            .map(|k| format!("\"{}\"", symbols[(i * args.per_client + k) % symbols.len()]))
            .collect::<Vec<_>>()
            .join(",");
        send_text(
            &mut s,
            &format!("{{\"op\":\"subscribe\",\"id\":1,\"symbols\":[{list}],\"channels\":[\"book\"],\"depth\":{}}}", args.book_depth.json()),
            i as u32,
        )
        .await?;
        send_text(
            &mut s,
            &format!(
                "{{\"op\":\"subscribe\",\"id\":2,\"symbols\":[{list}],\"channels\":[\"trade\"]}}"
            ),
            i as u32,
        )
        .await?;
        if is_stalled {
            stalled.push(s);
        } else {
            tokio::spawn(fast_client(s, rest, counters.clone()));
        }
    }
    Ok(stalled)
}

async fn scenario(
    args: &BenchArgs,
    publish_ep: &Endpoint,
    sub_ep: &Endpoint,
    pids: &[u32],
) -> Result<Outcome, String> {
    let symbols: Vec<String> = (0..args.symbols).map(|i| format!("B{i:04}")).collect();
    let (publ, _) = connect(publish_ep, "/v1/publish", None, 1).await?;
    let (mut publ_rd, mut publ_wr) = publ.into_split();
    // A few books per frame: a publish frame has a size cap.
    for chunk in snapshots(&symbols).chunks(8) {
        send_text(&mut publ_wr, &format!("[{}]", chunk.join(",")), 7).await?;
    }
    // The publisher's replies are read (so its socket never fills) and
    // `error`s counted: any would mean the load is not what it says.
    let errors = Arc::new(AtomicU64::new(0));
    let errs = errors.clone();
    tokio::spawn(async move {
        let mut tmp = vec![0u8; 16 * 1024];
        while let Ok(n) = publ_rd.read(&mut tmp).await {
            if n == 0 {
                break;
            }
            let hits = tmp[..n]
                .windows(16)
                .filter(|w| w == b"{\"type\":\"error\"")
                .count();
            errs.fetch_add(hits as u64, Ordering::Relaxed);
        }
    });
    let counters = Arc::new(Counters {
        phase: AtomicU8::new(WARMUP),
        delivered: [AtomicU64::new(0), AtomicU64::new(0)],
        latency: Mutex::new([histogram(), histogram()]),
    });
    let stalled = connect_clients(args, sub_ep, &symbols, &counters).await?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ args.seed.max(1));
    let secs = Duration::from_secs_f64(args.seconds);
    let warm = Duration::from_secs_f64(args.warmup.unwrap_or(1.0));
    let mut totals = [PhaseResult::empty(), PhaseResult::empty()];
    let mut round_ratios = Vec::new();
    let (mut held_end, mut held_max) = ((0.0, 0.0), (0.0f64, 0.0f64));
    for round in 0..args.rounds.unwrap_or(1) {
        let order = if round % 2 == 0 {
            [BOOK, TRADES]
        } else {
            [TRADES, BOOK]
        };
        let mut per = [0.0; 2];
        for phase in order {
            let i = usize::from(phase == TRADES);
            counters.phase.store(WARMUP, Ordering::Relaxed);
            publish(
                &mut publ_wr,
                &mut rng,
                &symbols,
                phase,
                args.book_levels,
                args.rate,
                Instant::now() + warm,
            )
            .await?;
            let before = Sample::take(sub_ep.addr, server_cpu(pids));
            let n0 = counters.delivered[i].load(Ordering::Relaxed);
            counters.phase.store(phase, Ordering::Relaxed);
            let end = Instant::now() + secs;
            let mut published = 0;
            while Instant::now() < end {
                let step = (Instant::now() + Duration::from_millis(500)).min(end);
                published += publish(
                    &mut publ_wr,
                    &mut rng,
                    &symbols,
                    phase,
                    args.book_levels,
                    args.rate,
                    step,
                )
                .await?;
                if phase == BOOK {
                    let h = held(sub_ep.addr);
                    held_max = (held_max.0.max(h.0), held_max.1.max(h.1));
                }
            }
            // What was published in the window is still arriving: the window
            // closes once it has drained (bounded).
            tokio::time::sleep(Duration::from_millis(300)).await;
            counters.phase.store(WARMUP, Ordering::Relaxed);
            let after = Sample::take(sub_ep.addr, server_cpu(pids));
            let cpu = after.server_cpu() - before.server_cpu();
            if phase == BOOK {
                held_end = held(sub_ep.addr);
            }
            let latency = std::mem::replace(
                &mut counters.latency.lock().expect("not poisoned")[i],
                histogram(),
            );
            let delivered = counters.delivered[i].load(Ordering::Relaxed) - n0;
            per[i] = cpu / delivered.max(1) as f64;
            let t = &mut totals[i];
            t.delivered += delivered;
            t.cpu += cpu;
            t.published += published;
            t.latency.add(&latency).map_err(|e| e.to_string())?;
            t.add_sample(&before, &after);
        }
        round_ratios.push(per[0] / per[1].max(1e-15));
    }
    drop(stalled);
    Ok(Outcome {
        phases: totals,
        round_ratios,
        held_end,
        held_max,
        publish_errors: errors.load(Ordering::Relaxed),
    })
}

fn report(args: &BenchArgs, out: &Outcome) {
    println!(
        "book scenario: {} symbols ({} levels each, diffs in the top {} per side), {} clients x {} books at depth {} (+ the same symbols' trades), {} stalled; {:.0} msg/s, {:.1} s per phase, {} round(s)",
        args.symbols,
        LEVELS_PER_BOOK,
        args.book_levels,
        args.clients,
        args.per_client,
        args.book_depth.name(),
        args.slow,
        args.rate,
        args.seconds,
        args.rounds.unwrap_or(1)
    );
    println!(
        "{:<8} {:>10} {:>11} {:>9} {:>9} {:>9} {:>12} {:>14}",
        "phase",
        "published",
        "delivered",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU s",
        "CPU µs/deliv."
    );
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let mut per = [0.0; 2];
    for (i, (name, p)) in ["book", "trades"].iter().zip(&out.phases).enumerate() {
        per[i] = p.cpu * 1e6 / p.delivered.max(1) as f64;
        println!(
            "{:<8} {:>10} {:>11} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>14.3}",
            name,
            p.published,
            p.delivered,
            ms(&p.latency, 0.5),
            ms(&p.latency, 0.99),
            p.latency.max() as f64 / 1e6,
            p.cpu,
            per[i]
        );
    }
    println!(
        "{:<8} {:>14} {:>14} {:>16} {:>16} {:>15} {:>12}",
        "phase",
        "bytes/deliv.",
        "deliv./write",
        "deliv./tick in",
        "CPU µs/tick in",
        "others (cores)",
        "unchanged"
    );
    for (name, p) in ["book", "trades"].iter().zip(&out.phases) {
        let (bytes, per_write, per_in) = p.counters.ratios();
        println!(
            "{:<8} {:>14.1} {:>14.2} {:>16.2} {:>16.2} {:>15.2} {:>12.0}",
            name,
            bytes,
            per_write,
            per_in,
            p.cpu * 1e6 / p.counters.ticks_in.max(1.0),
            p.others_cpu / p.wall.max(1e-9),
            p.counters.book_unchanged
        );
    }
    println!(
        "  (tick in: ticks the server sequenced, derived quotes included; unchanged: book diffs it accepted without sequencing, as they changed nothing, from tickwire_book_unchanged_total: 0 on a server without that counter)"
    );
    println!(
        "CPU per delivered update, book / trades: {:.2} (target: at most 1)",
        per[0] / per[1].max(1e-12)
    );
    if out.round_ratios.len() > 1 {
        let mut sorted = out.round_ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let each: Vec<String> = out.round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  per round (book first in odd rounds, trades first in even): {}; median {:.2}",
            each.join(", "),
            sorted[sorted.len() / 2]
        );
    }
    let bound = (args.slow * args.per_client) as f64 * LEVELS_PER_BOOK as f64;
    println!(
        "stalled clients: {:.0} book levels held at the end ({:.0} at most; bound one per price level: {bound:.0}), queued bytes {:.0} ({:.0} at most){}",
        out.held_end.1,
        out.held_max.1,
        out.held_end.0,
        out.held_max.0,
        if out.held_max.1 <= bound {
            ""
        } else {
            "  ** OVER THE BOUND **"
        }
    );
    if out.publish_errors > 0 {
        println!(
            "PROBLEM: the server refused {} published messages",
            out.publish_errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_is_read_as_a_number_or_a_string() {
        assert_eq!(
            rx_of(br#"{"type":"book","rx":1700000000000000123,"depth":10}"#),
            Some(1_700_000_000_000_000_123)
        );
        assert_eq!(rx_of(br#"{"type":"trade","rx":"42","px":1}"#), Some(42));
        assert_eq!(rx_of(br#"{"type":"trade","px":1}"#), None);
        assert_eq!(rx_of(br#"{"rx":""}"#), None);
    }

    #[test]
    fn book_diffs_stay_on_their_side_of_the_spread() {
        let symbols = vec!["B0000".to_owned()];
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let m: serde_json::Value =
                serde_json::from_str(&message(&mut rng, &symbols, BOOK, 12)).unwrap();
            for (key, ok) in [("bids", 99.87..=99.99), ("asks", 100.01..=100.12)] {
                for l in m[key].as_array().unwrap() {
                    let px: f64 = l[0].as_str().unwrap().parse().unwrap();
                    assert!(ok.contains(&px), "{m}");
                }
            }
        }
    }
}
