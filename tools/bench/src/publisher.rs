//! The publisher: one `/v1/publish` connection on its own OS thread, sending
//! ticks on a fixed schedule (or a recording's), each stamped with its
//! intended send time in `ts`.
//!
//! Stamping the intended time, not the actual one, is what corrects for
//! coordinated omission: when the server pushes back (TCP backpressure) or
//! the publisher wakes late, the ticks it could not send on time carry the
//! delay into the latency measured from `ts`. A blocking thread with a 1 µs
//! timer slack, absolute sleeps, a short spin and a raised priority
//! ([`crate::pacing`]) wakes within microseconds of its schedule even with
//! busy client threads on its CPU; tokio's timer wheel has 1 ms
//! granularity, which would add up to 1 ms to every tick.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::plan::{Plan, SplitMix64};
use super::ws::{self, Endpoint, WsError};
use crate::pacing::{self, PacingReport, PublisherPriority};
use crate::tickwire_lib::{Event, Fixed, NewTick, Side, Speed, event_json_fields, wall_clock_ns};

/// Ticks per publish frame at most (sent as a JSON array when > 1).
const MAX_BATCH: usize = 256;

/// Where the ticks come from.
#[derive(Clone)]
pub enum Source {
    /// Random symbols of the plan at a fixed rate (ticks/s).
    Synthetic { rate: f64 },
    /// A recording, replayed in a loop; `symbols[i]` is the plan index of
    /// `ticks[i]`'s symbol.
    Replay {
        ticks: Arc<Vec<NewTick>>,
        symbols: Arc<Vec<u32>>,
        speed: Speed,
    },
}

impl Source {
    /// Whether ticks are due at set times (everything but a recording at
    /// max speed, which is sent as fast as the server takes it).
    fn has_schedule(&self) -> bool {
        !matches!(
            self,
            Source::Replay {
                speed: Speed::Max,
                ..
            }
        )
    }
}

pub struct PublisherConfig {
    pub endpoint: Endpoint,
    pub plan: Arc<Plan>,
    pub source: Source,
    pub duration: Duration,
    pub seed: u64,
    /// `--publisher-priority`: the scheduling the thread asks for.
    pub priority: PublisherPriority,
    /// `--publisher-spin-us`, in ns: the spin that ends each sleep.
    pub spin_ns: u64,
}

/// Live figures the progress line and the drain wait read.
#[derive(Default, Debug)]
pub struct PublishCounters {
    pub published: AtomicU64,
    pub expected_fast: AtomicU64,
    pub expected_slow: AtomicU64,
    pub server_errors: AtomicU64,
    /// Publishing is over (normally or not).
    pub done: AtomicBool,
}

/// What happened, once the publisher thread has ended.
pub struct PublishOutcome {
    pub published: u64,
    pub expected_fast: u64,
    pub expected_slow: u64,
    /// Wall clock (ns) of the schedule's start.
    pub start_wall_ns: u64,
    /// Time spent publishing.
    pub seconds: f64,
    /// How late each batch left against its schedule, ns.
    pub lateness: Histogram<u64>,
    /// How long each frame's write took, ns.
    pub writes: Histogram<u64>,
    /// The scheduling the thread got and its spin.
    pub pacing: PacingReport,
    /// Why publishing stopped early, if it did.
    pub failure: Option<String>,
    pub server_error_samples: Vec<String>,
}

impl PublishOutcome {
    /// Counts `n` ticks sent, and the deliveries they are expected to make.
    fn count(&mut self, n: u64, fast: u64, slow: u64, counters: &PublishCounters) {
        self.published += n;
        self.expected_fast += fast;
        self.expected_slow += slow;
        counters.published.fetch_add(n, Ordering::Relaxed);
        counters.expected_fast.fetch_add(fast, Ordering::Relaxed);
        counters.expected_slow.fetch_add(slow, Ordering::Relaxed);
    }
}

/// Connects to `/v1/publish` with a blocking socket.
fn connect(ep: &Endpoint, timeout: Duration) -> Result<(TcpStream, Vec<u8>), WsError> {
    // wss://: the blocking socket talks to a loopback relay that does TLS.
    let addr = if ep.tls {
        crate::tls::publish_relay(ep)?
    } else {
        ep.addr
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|source| WsError::Connect {
        addr: ep.addr,
        source,
    })?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    let path = "/v1/publish";
    let (req, accept) = ws::upgrade_request(ep, path, wall_clock_ns());
    s.write_all(&req)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) => return Err(WsError::Closed("during the publish handshake")),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(WsError::HandshakeTimeout {
                    addr: ep.addr,
                    path: path.into(),
                    secs: timeout.as_secs(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = ws::parse_upgrade_response(&buf, &accept, ep, path)? {
            s.set_read_timeout(None)?;
            return Ok((s, buf.split_off(head)));
        }
    }
}

/// Reads what the server says on the publish connection: `error` replies
/// are counted (a tick the server refused never reaches anyone).
fn read_replies(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    counters: Arc<PublishCounters>,
    samples: Arc<Mutex<Vec<String>>>,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut pos = 0;
        while let Ok(Some(h)) = ws::parse_head(&buf[pos..]) {
            if buf.len() - pos < h.total() {
                break;
            }
            let payload = &buf[pos + h.header_len..pos + h.total()];
            if h.opcode == ws::OPCODE_TEXT
                && payload.windows(15).any(|w| w == b"\"type\":\"error\"")
            {
                counters.server_errors.fetch_add(1, Ordering::Relaxed);
                let mut v = samples.lock().unwrap_or_else(|p| p.into_inner());
                if v.len() < 5 {
                    v.push(String::from_utf8_lossy(payload).chars().take(300).collect());
                }
            }
            if h.opcode == ws::OPCODE_CLOSE {
                return;
            }
            pos += h.total();
        }
        buf.drain(..pos);
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes one tick as publish JSON, `ts` replaced by `ts`.
fn write_tick(out: &mut Vec<u8>, sym: &str, ts: u64, event: &Event) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event.channel().as_str().as_bytes());
    out.extend_from_slice(b"\",\"sym\":\"");
    // Symbols are validated (plain ASCII, no quotes) before they get here.
    out.extend_from_slice(sym.as_bytes());
    out.extend_from_slice(b"\",\"ts\":");
    out.extend_from_slice(b.format(ts).as_bytes());
    event_json_fields(out, event);
    out.push(b'}');
}

/// A synthetic tick: prices wander in cents around 100, all exact decimals.
fn synthetic_event(rng: &mut SplitMix64, channels: u8) -> Event {
    let quote = match channels {
        1 => false,
        2 => true,
        _ => rng.next_u64() & 1 == 1,
    };
    let cents = 10_000 + rng.below(2_000) as i64;
    let px = Fixed(cents * 10_000_000);
    let size = Fixed((1 + rng.below(50) as i64) * 100 * 1_000_000_000);
    if quote {
        Event::Quote {
            bid: px,
            bsz: size,
            ask: Fixed(px.0 + 10_000_000),
            asz: size,
        }
    } else {
        Event::Trade {
            px,
            qty: size,
            side: [Side::Buy, Side::Sell, Side::Unknown][rng.below(3) as usize],
        }
    }
}

/// Starts the publisher thread. It publishes for `duration` (or until
/// `stop`), then keeps the connection open until `stop` so that late
/// `error` replies are still counted.
pub fn spawn(
    cfg: PublisherConfig,
    counters: Arc<PublishCounters>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<PublishOutcome>> {
    std::thread::Builder::new()
        .name("bench-publisher".into())
        .spawn(move || {
            let out = run(&cfg, &counters, &stop);
            counters.done.store(true, Ordering::Release);
            out
        })
}

/// When each tick is due.
struct Schedule<'a> {
    source: &'a Source,
    /// Synthetic: ns between two ticks.
    interval: f64,
    /// A recording at a factor: ns one loop of it lasts.
    replay_span: f64,
}

impl<'a> Schedule<'a> {
    fn new(source: &'a Source) -> Schedule<'a> {
        let (interval, replay_span) = match source {
            Source::Synthetic { rate } => (1e9 / rate.max(1e-9), 0.0),
            Source::Replay { ticks, speed, .. } => {
                let first = ticks.first().map_or(0, |t| t.ts);
                let last = ticks.last().map_or(0, |t| t.ts);
                // One loop lasts the recording plus 1 ms, at the chosen speed.
                let f = match speed {
                    Speed::Factor(f) => *f,
                    Speed::Max => 1.0,
                };
                (0.0, (last - first) as f64 / f + 1e6)
            }
        };
        Schedule {
            source,
            interval,
            replay_span,
        }
    }

    /// Intended offset (ns after the start) of tick `i`; `None` = as soon as
    /// possible (replay at max speed).
    fn offset(&self, i: u64) -> Option<u64> {
        match self.source {
            Source::Synthetic { .. } => Some((i as f64 * self.interval) as u64),
            Source::Replay {
                speed: Speed::Max, ..
            } => None,
            Source::Replay {
                ticks,
                speed: Speed::Factor(f),
                ..
            } => {
                let n = ticks.len() as u64;
                let t = &ticks[(i % n) as usize];
                let lap = (i / n) as f64 * self.replay_span;
                Some((lap + (t.ts - ticks[0].ts) as f64 / f) as u64)
            }
        }
    }
}

/// The publisher thread: connects, then sends ticks in batches as they fall
/// due, counting what each costs the subscribers, until `--seconds` are up.
/// One function (about 150 lines) because batching, pacing and accounting
/// share the hot loop's state.
fn run(
    cfg: &PublisherConfig,
    counters: &Arc<PublishCounters>,
    stop: &AtomicBool,
) -> PublishOutcome {
    // Wake-ups within ~1 µs of the deadline instead of the default 50 µs.
    let _ = crate::tickwire_lib::sys::set_timer_slack(1000);
    let mut out = PublishOutcome {
        published: 0,
        expected_fast: 0,
        expected_slow: 0,
        start_wall_ns: wall_clock_ns(),
        seconds: 0.0,
        lateness: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        writes: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        pacing: PacingReport::default(),
        failure: None,
        server_error_samples: Vec::new(),
    };
    let (mut stream, leftover) = match connect(&cfg.endpoint, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            out.failure = Some(format!("publisher: {e}"));
            return out;
        }
    };
    // A server that stops reading must not hang the run.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let reader = stream.try_clone().ok().map(|s| {
        let (c, sm) = (counters.clone(), samples.clone());
        std::thread::spawn(move || read_replies(s, leftover, c, sm))
    });
    // Raised after the reader thread started, which must not inherit it.
    let (scheduling, fallback) = pacing::raise(cfg.priority, cfg.source.has_schedule());
    out.pacing = PacingReport {
        scheduling,
        fallback,
        spin_us: cfg.spin_ns / 1000,
        ..PacingReport::default()
    };
    let waited0 = pacing::run_queue_wait_ns();

    let plan = &cfg.plan;
    let mut rng = SplitMix64::new(cfg.seed ^ 0x005E_ED0F_7B11);
    let mut mask_rng = SplitMix64::new(cfg.seed.rotate_left(17));
    let dur_ns = cfg.duration.as_nanos() as u64;
    let schedule = Schedule::new(&cfg.source);
    let offset = |i: u64| schedule.offset(i);

    // The schedule on CLOCK_MONOTONIC, the clock the sleeps wait on.
    let start = crate::tickwire_lib::sys::monotonic_ns();
    let elapsed = || crate::tickwire_lib::sys::monotonic_ns().saturating_sub(start);
    let start_wall = wall_clock_ns();
    out.start_wall_ns = start_wall;
    let mut payload = Vec::with_capacity(MAX_BATCH * 128);
    let mut frame = Vec::with_capacity(MAX_BATCH * 128 + 16);
    let mut i: u64 = 0;
    let mut finished = false;
    while !finished && !stop.load(Ordering::Relaxed) {
        let now_off = elapsed();
        if now_off >= dur_ns {
            break;
        }
        payload.clear();
        let mut n = 0usize;
        let (mut fast, mut slow) = (0u64, 0u64);
        let mut first_intended = None;
        while n < MAX_BATCH {
            let ts_off = match offset(i) {
                Some(off) if off >= dur_ns => {
                    finished = n == 0;
                    break;
                }
                Some(off) if off > now_off => break,
                Some(off) => off,
                None => now_off,
            };
            first_intended.get_or_insert(ts_off);
            payload.push(if n == 0 { b'[' } else { b',' });
            let ts = start_wall + ts_off;
            let sym_idx = match &cfg.source {
                Source::Synthetic { .. } => {
                    let s = rng.below(plan.symbols.len() as u64) as usize;
                    let ev = synthetic_event(&mut rng, plan.channels);
                    write_tick(&mut payload, &plan.symbols[s], ts, &ev);
                    s
                }
                Source::Replay { ticks, symbols, .. } => {
                    let k = (i % ticks.len() as u64) as usize;
                    write_tick(&mut payload, &ticks[k].sym, ts, &ticks[k].event);
                    symbols[k] as usize
                }
            };
            fast += plan.fast_subscribers[sym_idx] as u64;
            slow += plan.slow_subscribers[sym_idx] as u64;
            n += 1;
            i += 1;
        }
        if n > 0 {
            payload.push(b']');
            // A single tick goes as one object, as most publishers send.
            let body: &[u8] = if n == 1 {
                &payload[1..payload.len() - 1]
            } else {
                &payload
            };
            frame.clear();
            let m = mask_rng.next_u64().to_le_bytes();
            ws::client_frame(&mut frame, ws::OPCODE_TEXT, body, [m[0], m[1], m[2], m[3]]);
            let before = elapsed();
            if let Err(e) = stream.write_all(&frame) {
                out.failure = Some(format!(
                    "publisher: writing to the server failed after {} ticks: {e}",
                    out.published
                ));
                break;
            }
            out.writes.saturating_record((elapsed() - before).max(1));
            out.count(n as u64, fast, slow, counters);
            if let Some(first) = first_intended {
                out.lateness
                    .saturating_record(now_off.saturating_sub(first).max(1));
            }
            if n == MAX_BATCH {
                continue;
            }
        }
        if let Some(next) = offset(i) {
            let now = elapsed();
            let wake = next.min(dur_ns);
            if wake > now {
                // Sleep in slices so that `stop` is noticed within 100 ms.
                let wake = wake.min(now + 100_000_000);
                pacing::wait_until(start + wake, cfg.spin_ns);
            }
        }
    }
    out.seconds = (elapsed() as f64 / 1e9).min(cfg.duration.as_secs_f64());
    out.pacing.run_queue_wait_ms = waited0
        .zip(pacing::run_queue_wait_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e6);
    out.pacing.write_p99_ns = out.writes.value_at_quantile(0.99);
    out.pacing.write_max_ns = out.writes.max();
    counters.done.store(true, Ordering::Release);
    out.server_error_samples = close_when_stopped(stream, reader, &samples, stop);
    out
}

/// After publishing: keeps the connection open until `stop` (late `error`
/// replies still count), then closes it, waits for the reply reader and
/// returns the `error` replies it kept.
fn close_when_stopped(
    mut stream: TcpStream,
    reader: Option<std::thread::JoinHandle<()>>,
    samples: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> Vec<String> {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut close = Vec::new();
    ws::client_frame(
        &mut close,
        ws::OPCODE_CLOSE,
        &1000u16.to_be_bytes(),
        [7, 7, 7, 7],
    );
    let _ = stream.write_all(&close);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Some(r) = reader {
        let _ = r.join();
    }
    std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_publish_json() {
        let mut out = Vec::new();
        write_tick(
            &mut out,
            "S0001",
            17,
            &Event::Trade {
                px: Fixed(100_250_000_000),
                qty: Fixed(100_000_000_000),
                side: Side::Buy,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"trade","sym":"S0001","ts":17,"px":100.25,"qty":100,"side":"B"}"#
        );
        let mut rng = SplitMix64::new(1);
        for _ in 0..100 {
            let mut out = Vec::new();
            let ev = synthetic_event(&mut rng, 3);
            write_tick(&mut out, "A", 1, &ev);
            let parsed = crate::tickwire_lib::parse_publish(&out);
            assert!(
                matches!(parsed[0], Ok(crate::tickwire_lib::Published::Tick(_))),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(matches!(synthetic_event(&mut rng, 1), Event::Trade { .. }));
        assert!(matches!(synthetic_event(&mut rng, 2), Event::Quote { .. }));
    }
}
