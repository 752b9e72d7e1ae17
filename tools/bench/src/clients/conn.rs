//! One subscriber connection while it runs: it reads what its socket
//! holds, walks the frames in place, answers pings and closes, stalls when
//! it is a slow client, and checks and times every tick.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::handshake::open;
use super::reconnect::{Position, Reconnector};
use super::{Acc, ClientError, Phase, READ_BUFFER, ThreadCtx, note};
use crate::binance::{self, Protocol};
use crate::plan::ClientSpec;
use crate::scan::{Msg, ScanError, scan};
use crate::tickwire_lib::wall_clock_ns;
use crate::tls::Stream;
use crate::ws;

/// One connection's state while it runs.
struct Conn {
    spec: ClientSpec,
    /// (plan symbol index, last seq of [trade, quote]); sorted by symbol.
    keys: Vec<(u32, [u64; 2])>,
    fragment: Option<Vec<u8>>,
    mask: u64,
    /// Set for the share of clients that reconnect (`--reconnect-every`).
    reconnector: Option<Reconnector>,
}

impl Conn {
    fn mask(&mut self) -> [u8; 4] {
        self.mask = self
            .mask
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let b = (self.mask >> 32).to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}

pub(super) async fn client(spec: ClientSpec, ctx: Rc<ThreadCtx>, phase: watch::Receiver<Phase>) {
    let permit = ctx.sem.acquire().await;
    let limit = ctx.cfg.connect_timeout;
    let opened = tokio::time::timeout(limit, open(&spec, &ctx, None)).await;
    drop(permit);
    let (mut stream, mut buf, reply) = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            note(&ctx.live.first_error, || format!("client {}: {e}", spec.id));
            return;
        }
        Err(_) => {
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            note(&ctx.live.first_error, || {
                format!("client {}: {}", spec.id, ClientError::Timeout(limit))
            });
            return;
        }
    };
    ctx.live.connected.fetch_add(1, Ordering::Relaxed);
    let keys = spec.symbols.iter().map(|&s| (s, [0u64; 2])).collect();
    let position = Position::of(&reply);
    let reconnector = Reconnector::new(&ctx.cfg.resume, spec.id, spec.slow, position.clone());
    if position.is_none() && ctx.cfg.resume.reconnects(spec.id, spec.slow) {
        // A server without resume: this client cannot reconnect safely.
        let why = "the server's `subscribed` has no epoch and offset to resume from";
        ctx.acc
            .borrow_mut()
            .reconnect
            .note_resumed(&serde_json::json!({"recovered": false, "reason": why}));
    }
    let mut conn = Conn {
        mask: spec.id as u64 ^ 0x2545_F491_4F6C_DD1D,
        spec,
        keys,
        fragment: None,
        reconnector,
    };
    loop {
        let end = match run(&mut conn, stream, buf, &ctx, phase.clone()).await {
            RunEnd::Stopped => return,
            RunEnd::Ended(end) => end,
            RunEnd::Reconnect(s) => match reconnect(&mut conn, s, &ctx).await {
                Ok((s, b)) => {
                    (stream, buf) = (s, b);
                    continue;
                }
                Err(e) => {
                    ctx.acc.borrow_mut().reconnect.failed += 1;
                    format!("error: reconnecting: {e}")
                }
            },
        };
        ended_early(&conn, &ctx, end);
        return;
    }
}

/// Counts a connection that ended before the run told it to.
fn ended_early(conn: &Conn, ctx: &ThreadCtx, end: String) {
    ctx.live.lost.fetch_add(1, Ordering::Relaxed);
    note(&ctx.live.first_loss, || {
        format!("client {}: {end}", conn.spec.id)
    });
    let mut acc = ctx.acc.borrow_mut();
    let ends = if conn.spec.slow {
        &mut acc.slow_ends
    } else {
        &mut acc.ends
    };
    let key = if let Some(rest) = end.strip_prefix("close ") {
        rest.split_whitespace().next().unwrap_or("?").to_owned()
    } else if end.starts_with("eof") {
        "eof".to_owned()
    } else {
        "error".to_owned()
    };
    *ends.entry(key).or_default() += 1;
}

/// Drops the connection and opens a new one that resumes from the
/// client's position; the resume latency is timed from here.
async fn reconnect(
    conn: &mut Conn,
    s: Stream,
    ctx: &ThreadCtx,
) -> Result<(Stream, BytesMut), String> {
    let mask = conn.mask();
    let r = conn
        .reconnector
        .as_mut()
        .ok_or("only reconnecting clients reconnect")?;
    let t0 = wall_clock_ns();
    let method = r.disconnect(s, mask).await;
    let resume = r.resume(&conn.keys, &ctx.cfg.plan);
    {
        let mut acc = ctx.acc.borrow_mut();
        acc.reconnect.by_method[method] += 1;
        if r.first_reconnect() {
            acc.reconnect.clients += 1;
        }
    }
    let limit = ctx.cfg.connect_timeout;
    match tokio::time::timeout(limit, open(&conn.spec, ctx, Some(resume))).await {
        Ok(Ok((s, buf, reply))) => {
            ctx.acc
                .borrow_mut()
                .reconnect
                .note_resumed(&reply["resumed"]);
            r.pending = Some((t0, wall_clock_ns()));
            Ok((s, buf))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(ClientError::Timeout(limit).to_string()),
    }
}

/// Why [`run`] returned.
enum RunEnd {
    /// The run told the connection to stop.
    Stopped,
    /// The connection ended early; why.
    Ended(String),
    /// Time to reconnect: the connection to drop.
    Reconnect(Stream),
}

/// Reads until told to stop or to reconnect.
async fn run(
    conn: &mut Conn,
    mut s: Stream,
    mut buf: BytesMut,
    ctx: &ThreadCtx,
    mut phase: watch::Receiver<Phase>,
) -> RunEnd {
    let mut out = Vec::new();
    // Bytes already read with `subscribed` (snapshots) come first.
    if let Err(e) = process(conn, &mut buf, wall_clock_ns(), ctx, &mut out) {
        return RunEnd::Ended(e);
    }
    let mut stalled = false;
    loop {
        let reconnect_at = match *phase.borrow_and_update() {
            Phase::Stop => {
                let mut close = Vec::new();
                let m = conn.mask();
                ws::client_frame(&mut close, ws::OPCODE_CLOSE, &1000u16.to_be_bytes(), m);
                let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&close)).await;
                return RunEnd::Stopped;
            }
            Phase::Publishing { start_wall_ns } => conn
                .reconnector
                .as_ref()
                .and_then(|r| r.next_at(start_wall_ns, ctx.cfg.resume.publish_seconds)),
            Phase::Connecting => None,
        };
        let (stall_from, stall_to) = ctx.stall.get();
        let now = wall_clock_ns();
        let reconnect_in = Duration::from_nanos(reconnect_at.unwrap_or(0).saturating_sub(now));
        let stall_pending = conn.spec.slow
            && !ctx.cfg.stall_control
            && !stalled
            && stall_from != 0
            && now < stall_to;
        let stall_in = Duration::from_nanos(stall_from.saturating_sub(now));
        // The watch and the timers live across reads: a read costs no
        // waiter registration or timer set-up (they were ~2% of a client
        // thread at S1). Any of them firing ends this inner loop, and the
        // state above is read again.
        let changed = phase.changed();
        let reconnect = tokio::time::sleep(reconnect_in);
        let stall = tokio::time::sleep(stall_in);
        tokio::pin!(changed, reconnect, stall);
        loop {
            tokio::select! {
                r = &mut changed => {
                    if r.is_err() {
                        return RunEnd::Stopped;
                    }
                    break;
                }
                _ = &mut reconnect, if reconnect_at.is_some() => return RunEnd::Reconnect(s),
                _ = &mut stall, if stall_pending => {
                    // Stop reading: the socket fills, the server must cope.
                    stalled = true;
                    let left = Duration::from_nanos(stall_to.saturating_sub(wall_clock_ns()));
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        r = &mut changed => if r.is_err() { return RunEnd::Stopped },
                    }
                    break;
                }
                r = s.read_buf(&mut buf) => match r {
                    Ok(0) => return RunEnd::Ended("eof: the server closed the TCP connection without a close frame".into()),
                    Ok(_) => {
                        let now = wall_clock_ns();
                        if let Err(e) = process(conn, &mut buf, now, ctx, &mut out) {
                            if !out.is_empty() {
                                let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&out)).await;
                            }
                            return RunEnd::Ended(e);
                        }
                        if !out.is_empty() {
                            if let Err(e) = s.write_all(&out).await {
                                return RunEnd::Ended(format!("error: writing to the server: {e}"));
                            }
                            out.clear();
                        }
                        if buf.capacity() - buf.len() < 1024 {
                            buf.reserve(READ_BUFFER);
                        }
                    }
                    Err(e) => return RunEnd::Ended(format!("error: reading: {e}")),
                },
            }
        }
    }
}

/// Walks the complete frames in `buf`. Frames we must answer (pong, close
/// echo) are appended to `out`. `Err` says why the connection is over.
fn process(
    conn: &mut Conn,
    buf: &mut BytesMut,
    now: u64,
    ctx: &ThreadCtx,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut acc = ctx.acc.borrow_mut();
    let before = (
        acc.fast.delivered,
        acc.slow.delivered,
        acc.fast.gap_events + acc.slow.gap_events,
    );
    let (reorders0, parse0) = (acc.fast.reorders + acc.slow.reorders, acc.parse_errors);
    let mut pos = 0;
    let mut result = Ok(());
    loop {
        let h = match ws::parse_head(&buf[pos..]) {
            Ok(Some(h)) if buf.len() - pos >= h.total() => h,
            Ok(_) => break,
            Err(e) => {
                result = Err(format!("error: {e}"));
                break;
            }
        };
        let payload = &buf[pos + h.header_len..pos + h.total()];
        match h.opcode {
            ws::OPCODE_TEXT if h.fin && conn.fragment.is_none() => {
                on_message(conn, payload, now, ctx, &mut acc)
            }
            ws::OPCODE_TEXT if conn.fragment.is_none() => conn.fragment = Some(payload.to_vec()),
            ws::OPCODE_CONTINUATION if conn.fragment.is_some() => {
                let f = conn.fragment.as_mut().expect("guarded");
                f.extend_from_slice(payload);
                if f.len() > ws::MAX_FRAME {
                    result =
                        Err("error: a fragmented message larger than the runner accepts".into());
                    break;
                }
                if h.fin {
                    let m = conn.fragment.take().expect("guarded");
                    on_message(conn, &m, now, ctx, &mut acc);
                }
            }
            ws::OPCODE_TEXT | ws::OPCODE_CONTINUATION => {
                result = Err("error: the server interleaved or misused fragments".into());
                break;
            }
            ws::OPCODE_BINARY => {
                acc.parse_errors += 1;
                acc.sample("a binary frame (the runner asked for JSON)".into());
            }
            ws::OPCODE_CLOSE => {
                let code = ws::close_code(payload);
                let mask = conn.mask();
                ws::client_frame(
                    out,
                    ws::OPCODE_CLOSE,
                    &payload[..payload.len().min(2)],
                    mask,
                );
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                result = Err(match code {
                    Some(c) => format!("close {c} {reason}"),
                    None => "close none".into(),
                });
                break;
            }
            ws::OPCODE_PING => {
                let mask = conn.mask();
                ws::client_frame(out, ws::OPCODE_PONG, payload, mask);
            }
            _ => {}
        }
        pos += h.total();
    }
    buf.advance(pos);
    let live = &ctx.live;
    let d_fast = acc.fast.delivered - before.0;
    let d_slow = acc.slow.delivered - before.1;
    if d_fast > 0 {
        live.delivered_fast.fetch_add(d_fast, Ordering::Relaxed);
    }
    if d_slow > 0 {
        live.delivered_slow.fetch_add(d_slow, Ordering::Relaxed);
    }
    let gaps = acc.fast.gap_events + acc.slow.gap_events - before.2;
    if gaps > 0 {
        live.gap_events.fetch_add(gaps, Ordering::Relaxed);
    }
    let reorders = acc.fast.reorders + acc.slow.reorders - reorders0;
    if reorders > 0 {
        live.reorders.fetch_add(reorders, Ordering::Relaxed);
    }
    if acc.parse_errors > parse0 {
        live.parse_errors
            .fetch_add(acc.parse_errors - parse0, Ordering::Relaxed);
    }
    result
}

fn on_message(conn: &mut Conn, payload: &[u8], now: u64, ctx: &ThreadCtx, acc: &mut Acc) {
    let scanned = match ctx.cfg.protocol {
        Protocol::Tickwire => scan(payload),
        Protocol::Binance => binance::scan(payload),
    };
    let t = match scanned {
        Ok(Msg::Tick(t)) => t,
        Ok(Msg::Control(b"lagging")) => {
            acc.lagging += 1;
            return;
        }
        Ok(Msg::Control(b"error")) => {
            acc.server_errors += 1;
            acc.sample(format!(
                "server error: {}",
                String::from_utf8_lossy(payload)
            ));
            return;
        }
        Ok(Msg::Control(_)) => return,
        Err(e) => {
            acc.parse_errors += 1;
            let e: ScanError = e;
            acc.sample(format!(
                "{e}: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ));
            return;
        }
    };
    let slot = ctx
        .cfg
        .plan
        .index
        .get(t.sym)
        .and_then(|sym| conn.keys.binary_search_by_key(sym, |k| k.0).ok());
    let Some(slot) = slot else {
        // A `*` subscriber gets snapshots of every symbol the server has
        // seen, including other runs' symbols: that is not a fault.
        if t.snap {
            let counts = if conn.spec.slow {
                &mut acc.slow
            } else {
                &mut acc.fast
            };
            counts.snapshots += 1;
        } else {
            acc.unexpected += 1;
        }
        return;
    };
    let last = &mut conn.keys[slot].1[t.channel];
    let counts = if conn.spec.slow {
        &mut acc.slow
    } else {
        &mut acc.fast
    };
    if t.snap {
        counts.snapshots += 1;
        *last = (*last).max(t.seq);
        return;
    }
    counts.delivered += 1;
    if let Some(r) = conn.reconnector.as_mut()
        && let Some((t0, t_sub)) = r.pending
        && t.rx >= t_sub
    {
        // The server stamped this tick after it answered the resume, so
        // every missed tick came before it: caught up.
        acc.reconnect
            .latency
            .saturating_record(now.saturating_sub(t0).max(1));
        r.pending = None;
    }
    if *last != 0 {
        if t.seq > *last + 1 {
            counts.gap_events += 1;
            counts.gap_ticks += t.seq - *last - 1;
        } else if t.seq <= *last {
            counts.reorders += 1;
        }
    }
    *last = (*last).max(t.seq);
    let from = ctx.record_from.get();
    if from == 0 || t.ts < from {
        return;
    }
    if now < t.rx {
        acc.clock_skew += 1;
    }
    let lat = now.saturating_sub(t.rx).max(1);
    if conn.spec.slow {
        acc.slow_rx.saturating_record(lat);
        return;
    }
    let lat_intended = now.saturating_sub(t.ts).max(1);
    // The run's totals get these at the end of the second (`take_interval`).
    acc.interval_rx.saturating_record(lat);
    acc.interval_intended.saturating_record(lat_intended);
    let (s0, s1) = ctx.stall.get();
    if s0 != 0 {
        let p = if now < s0 {
            0
        } else if now < s1 {
            1
        } else {
            2
        };
        acc.phases[p].saturating_record(lat);
    }
}
