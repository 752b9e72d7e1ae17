//! Draining a client's write buffer into its socket: filling the buffer
//! from its pending slots once it has drained, the non-blocking writes,
//! and the state a full socket leaves (blocked since when, evict when).

use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::net::transport::Transport;
use crate::pipeline::stats::Stats;

use super::{Client, Flushed};

impl Client {
    /// Once the write buffer has drained: moves queued control frames into
    /// it, then one tick per pending key, up to the byte cap.
    fn fill(&mut self) {
        debug_assert_eq!(self.sent, self.wbuf.len());
        self.wbuf.clear();
        self.frame_ends.clear();
        self.open_bin = None;
        self.sent = 0;
        while let Some(f) = self.control.pop_front() {
            self.append_frame(&f);
        }
        if self.closing {
            return;
        }
        let mut taken = 0;
        while self.wbuf.len() < self.cap {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if self.fill_book(key) {
                continue;
            }
            let Some((item, snap)) = self.keys.get_mut(&key).and_then(|s| s.pending.take()) else {
                continue; // stale entry: unsubscribed or already taken
            };
            self.append_tick(&item, snap);
            taken += 1;
        }
        self.frames_sent += taken;
        Stats::gauge(&self.stats.pending_ticks, -(taken as i64));
        self.catch_up();
    }

    /// Writes as much as the socket takes, in as few writes as possible.
    pub(crate) fn flush(&mut self) -> io::Result<Flushed> {
        let Some(write) = self.write.clone() else {
            return Ok(Flushed::Closed);
        };
        // TLS: the rest of the last batch's ciphertext goes first.
        if !write.try_flush()? {
            self.mark_blocked();
            return Ok(Flushed::Blocked);
        }
        // Whether this call has already refilled the buffer from the
        // history: one catch-up slice per flush.
        let mut sliced = false;
        loop {
            if self.sent == self.wbuf.len() {
                if sliced && self.catchup.is_catching_up() && !self.closing {
                    self.mark_blocked();
                    Stats::add(&self.stats.catchup_pauses, 1);
                    return Ok(Flushed::Paused);
                }
                sliced = self.catchup.is_catching_up();
                if self.closing && self.control.is_empty() {
                    // The Close frame is out: shut our side down, once.
                    write.finish();
                    self.write = None;
                    self.blocked = false;
                    return Ok(Flushed::Closed);
                }
                self.fill();
                if self.wbuf.is_empty() && self.closing {
                    continue; // an empty close (SSE): shut down above
                }
                if self.wbuf.is_empty() {
                    self.behind_since = None;
                    self.blocked = false;
                    if self.wbuf.capacity() > 64 * 1024 {
                        // Give back what a burst grew.
                        self.wbuf = Vec::new();
                        self.frame_ends = Vec::new();
                    }
                    return Ok(Flushed::Drained);
                }
            }
            match write.try_write(&self.wbuf[self.sent..]) {
                Ok(n) => {
                    if let Some(rx) = self.oldest_rx.take() {
                        self.stats
                            .encode_to_write
                            .observe_ns(crate::model::tick::wall_clock_ns().saturating_sub(rx));
                    }
                    Stats::add(&self.stats.writes, 1);
                    self.count_tick_write();
                    Stats::add(&self.stats.bytes_out[self.encoding as usize], n as u64);
                    Stats::gauge(&self.stats.queued_bytes, -(n as i64));
                    self.sent += n;
                    // (TLS: ciphertext left in rustls is behind too.)
                    if self.sent < self.wbuf.len() || !write.is_flushed() {
                        self.mark_blocked();
                        return Ok(Flushed::Blocked);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.mark_blocked();
                    return Ok(Flushed::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts a write that carried the live ticks queued since the last one.
    fn count_tick_write(&mut self) {
        if self.unwritten_live > 0 {
            Stats::add(&self.stats.tick_writes, 1);
            Stats::add(
                &self.stats.tick_deliveries,
                std::mem::take(&mut self.unwritten_live),
            );
        }
    }

    fn mark_blocked(&mut self) {
        self.blocked = true;
        self.behind_since.get_or_insert_with(Instant::now);
    }

    /// When the writer task must act even if the socket stays full.
    pub(crate) fn deadline(&self, evict_after: Duration) -> Option<Instant> {
        if self.closing {
            self.close_deadline
        } else if self.catchup.is_catching_up() {
            // Behind, but reading the history: it loses nothing while it
            // stays within it, and falling out is handled there.
            None
        } else {
            self.behind_since.map(|t| t + evict_after)
        }
    }

    pub(crate) fn write_half(&self) -> Option<Rc<Transport>> {
        self.write.clone()
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    pub(crate) fn behind_for(&self) -> Option<Duration> {
        self.behind_since.map(|t| t.elapsed())
    }

    /// Our Close is out and our side shut down: the session's reader waits
    /// for the peer's Close or EOF, for at most the close grace.
    pub(in crate::pipeline::fanout) fn closed_wait(&self) {
        let kill = self.kill.clone();
        let grace = self
            .close_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        tokio::task::spawn_local(async move {
            tokio::time::sleep(grace).await;
            kill.notify_one();
        });
    }

    /// Takes the bytes an in-memory client would have written, as if its
    /// socket had taken them all; returns how many there were.
    pub fn take_output(&mut self) -> usize {
        let n = self.unsent();
        Stats::gauge(&self.stats.queued_bytes, -(n as i64));
        self.count_tick_write();
        self.wbuf.clear();
        self.frame_ends.clear();
        self.open_bin = None;
        self.oldest_rx = None;
        self.sent = 0;
        n
    }

    /// The bytes queued and not yet written (tests of the framing).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> &[u8] {
        &self.wbuf[self.sent..]
    }

    /// Drops the socket's write side at once (peer gone or unresponsive).
    pub(crate) fn abandon(&mut self) {
        self.end_reason
            .get_or_insert("connection lost or unresponsive");
        self.write = None;
        self.closing = true;
        self.discard_pending();
        self.control.clear();
        self.kill.notify_one();
    }
}
