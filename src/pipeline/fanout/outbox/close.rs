//! Closing a client: a Close frame (or, on SSE, the end of the stream)
//! goes out promptly after the frame in flight; nothing still pending is
//! sent after it.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Client;
use crate::pipeline::stats::Stats;
use crate::wire::encode::Encoding;

impl Client {
    /// Queues a Close frame; everything not yet in the write buffer is
    /// discarded, and a partially written batch is cut after the frame in
    /// flight so the Close goes out promptly.
    /// An SSE stream has no Close frame: it just ends (FIN) after what is
    /// in the write buffer, and `code`/`reason` are only logged by callers.
    pub(crate) fn close(&mut self, code: u16, reason: &str, grace: Duration) {
        let frame = if self.encoding == Encoding::Sse {
            Bytes::new()
        } else {
            crate::wire::frame::close_frame(code, reason)
        };
        self.close_with_frame(frame, grace);
    }

    /// [`Client::close`] with a ready Close frame (an echo of the peer's).
    pub(crate) fn close_with_frame(&mut self, close: Bytes, grace: Duration) {
        if self.closing {
            return;
        }
        self.discard_pending();
        if let Some(&end) = self.frame_ends.iter().find(|&&e| e > self.sent) {
            Stats::gauge(
                &self.stats.queued_bytes,
                end as i64 - self.wbuf.len() as i64,
            );
            self.wbuf.truncate(end);
            self.frame_ends.retain(|&e| e <= end);
            self.open_bin = None;
        }
        self.control.clear();
        self.control.push_back(close);
        self.closing = true;
        self.close_deadline = Some(Instant::now() + grace);
    }

    /// Like [`Client::close`], but a final message goes out before the Close.
    pub(crate) fn close_with_message(
        &mut self,
        msg: Bytes,
        code: u16,
        reason: &str,
        grace: Duration,
    ) {
        if self.closing {
            return;
        }
        self.close(code, reason, grace);
        self.control.push_front(msg);
    }

    /// Drops every pending tick and book change, with their gauge.
    pub(super) fn discard_pending(&mut self) {
        let mut n = 0;
        for slot in self.keys.values_mut() {
            n += i64::from(slot.pending.take().is_some());
        }
        n += self.discard_book_pending();
        Stats::gauge(&self.stats.pending_ticks, -n);
        self.order.clear();
    }
}
