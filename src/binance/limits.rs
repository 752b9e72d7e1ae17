//! Binance's per-connection limits: incoming messages per second (text,
//! ping and pong frames all count) and streams per connection, with the
//! ping/pong keepalive. Defaults are Binance's: 5 messages/s, 1,024
//! streams, a ping every 20 s and a pong expected within a minute.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The limits one endpoint applies (`--binance-*` options).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Incoming messages allowed in any one second; one more disconnects.
    pub messages_per_sec: u32,
    /// Streams one connection may listen to.
    pub max_streams: usize,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A connection that sends no pong this long after a ping is closed.
    pub pong_timeout: Duration,
    /// Stream events queued for one connection; a connection whose queue
    /// is full cannot keep up and is disconnected.
    pub queue_len: usize,
    /// Closed klines kept per symbol and interval for `/api/v3/klines`
    /// (`--binance-kline-rows`; 112 bytes each).
    pub kline_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            messages_per_sec: 5,
            max_streams: 1024,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            queue_len: 8192,
            kline_rows: crate::binance::klines::DEFAULT_ROWS,
        }
    }
}

/// A sliding one-second window of a connection's incoming messages.
#[derive(Debug)]
pub struct MessageRate {
    /// Allowed per second.
    limit: u32,
    /// Arrival times of the messages in the last second.
    recent: VecDeque<Instant>,
}

impl MessageRate {
    pub fn new(limit: u32) -> MessageRate {
        MessageRate {
            limit,
            recent: VecDeque::new(),
        }
    }

    /// Counts a message arriving `now`; false when it is one too many.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_message_in_a_second_is_refused() {
        let mut r = MessageRate::new(5);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(r.allow(t0 + Duration::from_millis(i * 100)));
        }
        assert!(!r.allow(t0 + Duration::from_millis(900)));
        // A second after the first, there is room again.
        assert!(r.allow(t0 + Duration::from_millis(1000)));
    }
}
