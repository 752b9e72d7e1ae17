//! One subscriber connection while it runs: it reads what its socket
//! holds, walks the frames in place, answers pings and closes, stalls when
//! it is a slow client, and checks and times every tick.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::handshake::open;
use super::{Acc, ClientError, Phase, READ_BUFFER, ThreadCtx, note};
use crate::plan::ClientSpec;
use crate::scan::{Msg, ScanError, scan};
use crate::tickwire_lib::wall_clock_ns;
use crate::ws;

/// One connection's state while it runs.
struct Conn {
    spec: ClientSpec,
    /// (plan symbol index, last seq of [trade, quote]); sorted by symbol.
    keys: Vec<(u32, [u64; 2])>,
    fragment: Option<Vec<u8>>,
    mask: u64,
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
    let opened = tokio::time::timeout(limit, open(&spec, &ctx)).await;
    drop(permit);
    let (stream, buf) = match opened {
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
    let mut conn = Conn {
        mask: spec.id as u64 ^ 0x2545_F491_4F6C_DD1D,
        spec,
        keys,
        fragment: None,
    };
    let end = run(&mut conn, stream, buf, &ctx, phase).await;
    if let Some(end) = end {
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
}

/// Reads until told to stop. Returns why the connection ended early, if it did.
async fn run(
    conn: &mut Conn,
    mut s: TcpStream,
    mut buf: BytesMut,
    ctx: &ThreadCtx,
    mut phase: watch::Receiver<Phase>,
) -> Option<String> {
    let mut out = Vec::new();
    // Bytes already read with `subscribed` (snapshots) come first.
    if let Err(e) = process(conn, &mut buf, wall_clock_ns(), ctx, &mut out) {
        return Some(e);
    }
    let mut stalled = false;
    loop {
        if matches!(*phase.borrow_and_update(), Phase::Stop) {
            let mut close = Vec::new();
            let m = conn.mask();
            ws::client_frame(&mut close, ws::OPCODE_CLOSE, &1000u16.to_be_bytes(), m);
            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&close)).await;
            return None;
        }
        let (stall_from, stall_to) = ctx.stall.get();
        let now = wall_clock_ns();
        let stall_pending = conn.spec.slow && !stalled && stall_from != 0 && now < stall_to;
        let stall_in = Duration::from_nanos(stall_from.saturating_sub(now));
        tokio::select! {
            r = phase.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep(stall_in), if stall_pending => {
                // Stop reading: the socket fills, the server must cope.
                stalled = true;
                let left = Duration::from_nanos(stall_to.saturating_sub(wall_clock_ns()));
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    r = phase.changed() => if r.is_err() { return None },
                }
            }
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => return Some("eof: the server closed the TCP connection without a close frame".into()),
                Ok(_) => {
                    let now = wall_clock_ns();
                    if let Err(e) = process(conn, &mut buf, now, ctx, &mut out) {
                        if !out.is_empty() {
                            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&out)).await;
                        }
                        return Some(e);
                    }
                    if !out.is_empty() {
                        if let Err(e) = s.write_all(&out).await {
                            return Some(format!("error: writing to the server: {e}"));
                        }
                        out.clear();
                    }
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(READ_BUFFER);
                    }
                }
                Err(e) => return Some(format!("error: reading: {e}")),
            },
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
    let t = match scan(payload) {
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
    acc.rx.saturating_record(lat);
    acc.intended.saturating_record(lat_intended);
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
