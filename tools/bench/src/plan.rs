//! The load plan: which symbols exist, who subscribes to what, and how many
//! deliveries each published tick should cause.
//!
//! Everything is derived from `--seed`, so the same flags give the same
//! subscriptions and the same tick sequence against every server compared.

use std::collections::HashMap;

/// SplitMix64: a tiny seeded generator. Hand-rolled on purpose: a benchmark's
/// load must not change when a dependency changes its algorithm.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--per-client {per_client} is more than --symbols {symbols}")]
    TooManyPerClient { per_client: usize, symbols: usize },
    #[error("--symbols must be at least 1")]
    NoSymbols,
    #[error("--clients must be at least 1")]
    NoClients,
}

/// One subscriber connection.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub id: u32,
    /// Indices into [`Plan::symbols`], sorted; every symbol when `all`.
    pub symbols: Vec<u32>,
    /// Subscribes with `"*"`.
    pub all: bool,
    /// Stops reading for a while (`--slow`).
    pub slow: bool,
}

/// Who is subscribed to what.
#[derive(Debug)]
pub struct Plan {
    pub symbols: Vec<String>,
    /// Symbol name → index in `symbols`, looked up for every tick a client
    /// reads (foldhash: the names are the plan's own, SipHash cost ~1% of
    /// a client thread).
    pub index: HashMap<Vec<u8>, u32, foldhash::fast::RandomState>,
    /// Channel mask: bit 0 trade, bit 1 quote.
    pub channels: u8,
    pub clients: Vec<ClientSpec>,
    /// Per symbol: fast subscribers (per channel they all share the mask).
    pub fast_subscribers: Vec<u32>,
    pub slow_subscribers: Vec<u32>,
}

pub struct PlanInput {
    pub symbols: Vec<String>,
    pub channels: u8,
    pub clients: usize,
    pub per_client: usize,
    pub all_symbols: bool,
    pub slow: usize,
    pub seed: u64,
}

impl Plan {
    pub fn new(input: PlanInput) -> Result<Plan, PlanError> {
        let n = input.symbols.len();
        if n == 0 {
            return Err(PlanError::NoSymbols);
        }
        if input.clients == 0 {
            return Err(PlanError::NoClients);
        }
        if !input.all_symbols && input.per_client > n {
            return Err(PlanError::TooManyPerClient {
                per_client: input.per_client,
                symbols: n,
            });
        }
        let mut fast_subscribers = vec![0u32; n];
        let mut slow_subscribers = vec![0u32; n];
        let mut clients = Vec::with_capacity(input.clients + input.slow);
        let mut pool: Vec<u32> = (0..n as u32).collect();
        for id in 0..input.clients {
            let symbols = if input.all_symbols {
                (0..n as u32).collect()
            } else {
                // Partial Fisher-Yates: the first k of a per-client shuffle.
                let mut rng =
                    SplitMix64::new(input.seed ^ (id as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                for i in 0..input.per_client {
                    let j = i + rng.below((n - i) as u64) as usize;
                    pool.swap(i, j);
                }
                let mut s = pool[..input.per_client].to_vec();
                s.sort_unstable();
                s
            };
            for &s in &symbols {
                fast_subscribers[s as usize] += 1;
            }
            clients.push(ClientSpec {
                id: id as u32,
                symbols,
                all: input.all_symbols,
                slow: false,
            });
        }
        // Slow clients watch everything: the worst case for the server.
        for k in 0..input.slow {
            for s in &mut slow_subscribers {
                *s += 1;
            }
            clients.push(ClientSpec {
                id: (input.clients + k) as u32,
                symbols: (0..n as u32).collect(),
                all: true,
                slow: true,
            });
        }
        let index = input
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_bytes().to_vec(), i as u32))
            .collect();
        Ok(Plan {
            symbols: input.symbols,
            index,
            channels: input.channels,
            clients,
            fast_subscribers,
            slow_subscribers,
        })
    }

    /// Synthetic symbol names: `S0000`, `S0001`, …
    pub fn synthetic_symbols(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("S{i:04}")).collect()
    }

    pub fn channel_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.channels & 1 != 0 {
            v.push("trade");
        }
        if self.channels & 2 != 0 {
            v.push("quote");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(clients: usize, per: usize, syms: usize) -> PlanInput {
        PlanInput {
            symbols: Plan::synthetic_symbols(syms),
            channels: 3,
            clients,
            per_client: per,
            all_symbols: false,
            slow: 2,
            seed: 7,
        }
    }

    #[test]
    fn subscriptions_are_distinct_seeded_and_counted() {
        let a = Plan::new(input(1000, 10, 100)).unwrap();
        let b = Plan::new(input(1000, 10, 100)).unwrap();
        assert_eq!(a.clients.len(), 1002);
        for (x, y) in a.clients.iter().zip(&b.clients) {
            assert_eq!(x.symbols, y.symbols);
        }
        for c in &a.clients[..1000] {
            let mut s = c.symbols.clone();
            s.dedup();
            assert_eq!(s.len(), 10);
        }
        assert_eq!(a.fast_subscribers.iter().sum::<u32>(), 10_000);
        // Roughly uniform: every symbol has some subscribers.
        assert!(a.fast_subscribers.iter().all(|&n| n > 50 && n < 150));
        assert!(a.slow_subscribers.iter().all(|&n| n == 2));
        assert!(a.clients[1000].slow && a.clients[1000].all);
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(Plan::new(input(1, 11, 10)).is_err());
        assert!(Plan::new(input(0, 1, 10)).is_err());
        assert!(Plan::new(input(1, 1, 0)).is_err());
    }
}
