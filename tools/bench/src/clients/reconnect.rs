//! A reconnecting client (`--reconnect-every`): when to drop the
//! connection, how (a WebSocket close, a bare FIN or an RST, in turn), the
//! `resume` it reconnects with, what the server answered, and the resume
//! latency. The plan and the report are in `crate::resume`.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;

use super::new_histogram;
use crate::plan::Plan;
use crate::resume::ResumePlan;
use crate::tls::Stream;
use crate::ws;

/// What one thread's reconnecting clients measured.
pub struct ReconnectAcc {
    /// Clients that reconnected at least once.
    pub clients: u64,
    /// Disconnects by method: close, FIN, RST.
    pub by_method: [u64; 3],
    /// Reconnects that could not connect or were refused.
    pub failed: u64,
    /// `recovered:false` answers (the whole position or one key).
    pub not_recovered: u64,
    /// The first reason the server gave for one, for the report.
    pub first_reason: Option<String>,
    /// Disconnect → first caught-up tick, ns.
    pub latency: Histogram<u64>,
}

impl Default for ReconnectAcc {
    fn default() -> ReconnectAcc {
        ReconnectAcc {
            clients: 0,
            by_method: [0; 3],
            failed: 0,
            not_recovered: 0,
            first_reason: None,
            latency: new_histogram(),
        }
    }
}

impl ReconnectAcc {
    pub fn merge(&mut self, o: &ReconnectAcc) {
        self.clients += o.clients;
        for (a, b) in self.by_method.iter_mut().zip(o.by_method) {
            *a += b;
        }
        self.failed += o.failed;
        self.not_recovered += o.not_recovered;
        if self.first_reason.is_none() {
            self.first_reason.clone_from(&o.first_reason);
        }
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.latency.add(&o.latency);
    }

    /// Counts the `resumed` object of a `subscribed` reply.
    pub(super) fn note_resumed(&mut self, resumed: &serde_json::Value) {
        let mut refuse = |why: &serde_json::Value| {
            self.not_recovered += 1;
            if self.first_reason.is_none() {
                self.first_reason = Some(why.as_str().unwrap_or("no reason given").to_owned());
            }
        };
        if resumed.is_null() {
            refuse(&serde_json::Value::from("no `resumed` in the reply"));
            return;
        }
        if resumed["recovered"] == false {
            refuse(&resumed["reason"]);
        }
        for k in resumed["keys"].as_array().into_iter().flatten() {
            if k["recovered"] == false {
                refuse(&k["reason"]);
            }
        }
    }
}

/// What a connection keeps from the server's `subscribed` to resume later.
#[derive(Clone, Debug, Default)]
pub struct Position {
    /// The feed epoch.
    pub epoch: String,
    /// The connection-wide offset: every tick of the subscription up to it
    /// is had (covers keys with no `seq` yet, and `*`'s new symbols).
    pub offset: u64,
}

impl Position {
    /// Reads `epoch` and `offset` of a `subscribed` reply; `None` when the
    /// server offers no resume (then the client cannot reconnect safely).
    pub fn of(subscribed: &serde_json::Value) -> Option<Position> {
        Some(Position {
            epoch: subscribed["epoch"].as_str()?.to_owned(),
            offset: subscribed["offset"].as_u64()?,
        })
    }
}

/// A reconnecting client's schedule and state.
pub(super) struct Reconnector {
    /// The reconnect period, ns.
    every: u64,
    /// This client's phase within the period, so that reconnects spread.
    phase: u64,
    /// Reconnects done: picks the next method (close, FIN, RST in turn).
    done: u64,
    /// Where to resume from.
    pub position: Position,
    /// (disconnect wall ns, `subscribed` wall ns) until the first tick
    /// stamped after the resume answer arrives.
    pub pending: Option<(u64, u64)>,
}

impl Reconnector {
    pub fn new(plan: &ResumePlan, id: u32, slow: bool, position: Option<Position>) -> Option<Self> {
        if !plan.reconnects(id, slow) {
            return None;
        }
        let (every, _) = plan.reconnect?;
        let every = every.as_nanos() as u64;
        Some(Reconnector {
            every,
            // A fixed odd multiplier spreads ids over the period.
            phase: (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % every.max(1),
            done: 0,
            position: position?,
            pending: None,
        })
    }

    /// When to drop the connection next (wall ns), if still publishing.
    pub fn next_at(&self, start_wall_ns: u64, publish_seconds: f64) -> Option<u64> {
        let at = start_wall_ns + self.phase + self.done * self.every;
        let end = start_wall_ns + (publish_seconds * 1e9) as u64;
        (at < end).then_some(at)
    }

    /// Whether the reconnect under way is this client's first.
    pub fn first_reconnect(&self) -> bool {
        self.done == 1
    }

    /// Drops the connection: a WebSocket close (then FIN), a bare FIN, or
    /// an RST, in turn. Returns the method's index.
    pub async fn disconnect(&mut self, mut s: Stream, mask: [u8; 4]) -> usize {
        let method = (self.done % 3) as usize;
        self.done += 1;
        match method {
            0 => {
                let mut close = Vec::new();
                ws::client_frame(&mut close, ws::OPCODE_CLOSE, &1000u16.to_be_bytes(), mask);
                let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&close)).await;
                let _ = s.shutdown().await;
            }
            1 => {
                let _ = s.shutdown().await;
            }
            _ => {
                // SO_LINGER 0: close() sends an RST and discards the unread.
                let _ = s.tcp().set_zero_linger();
            }
        }
        drop(s);
        method
    }

    /// The `resume` object: each key's last `seq`, and the connection-wide
    /// offset for the keys without one.
    pub fn resume(&self, keys: &[(u32, [u64; 2])], plan: &Plan) -> serde_json::Value {
        let mut seq = [serde_json::Map::new(), serde_json::Map::new()];
        for (sym, last) in keys {
            for (ch, &s) in last.iter().enumerate() {
                if s > 0 {
                    seq[ch].insert(plan.symbols[*sym as usize].clone(), s.into());
                }
            }
        }
        let [trade, quote] = seq;
        let mut by_channel = serde_json::Map::new();
        if !trade.is_empty() {
            by_channel.insert("trade".into(), trade.into());
        }
        if !quote.is_empty() {
            by_channel.insert("quote".into(), quote.into());
        }
        serde_json::json!({
            "epoch": self.position.epoch,
            "seq": by_channel,
            "offset": self.position.offset,
        })
    }
}
