//! The control-message rate limit: a token bucket per connection.
//!
//! A WebSocket connection may send `control_burst` control messages at once
//! and `control_rate_per_sec` a second after that. A message over the limit
//! is refused (and ignored); a client that keeps sending while refused is a
//! flood, and its connection is closed.

use tokio::time::Instant;

/// Refusals in a row after which a flooding client is closed with 1008.
const MAX_STRIKES: u32 = 100;

/// Token bucket for one connection's control messages.
pub(crate) struct RateLimit {
    /// Messages that may be sent now; refilled at `rate`, up to `burst`.
    tokens: f64,
    /// Tokens added per second.
    rate: f64,
    /// The bucket's size: the most messages sent at once.
    burst: f64,
    /// When `tokens` was last refilled.
    last: Instant,
    /// Consecutive refusals; persistent abuse closes the connection.
    strikes: u32,
}

impl RateLimit {
    /// A full bucket of `burst` tokens, refilled at `rate` a second.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        RateLimit {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// Takes a token for one message; `false` when there is none (the
    /// message is refused, and counts as a strike).
    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }

    /// Whether refusals in a row have reached the point where the client
    /// is closed rather than answered.
    pub(crate) fn is_flood(&self) -> bool {
        self.strikes >= MAX_STRIKES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_then_a_flood() {
        let mut limit = RateLimit::new(10, 3);
        assert!((0..3).all(|_| limit.allow()));
        assert!(!limit.allow());
        // 150 ms at 10/s refills one and a half tokens; a success forgives
        // the strikes.
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(limit.allow());
        for _ in 0..MAX_STRIKES - 1 {
            assert!(!limit.allow());
        }
        assert!(!limit.is_flood());
        assert!(!limit.allow());
        assert!(limit.is_flood());
    }
}
