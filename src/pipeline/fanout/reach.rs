//! The per-client tick rate a worker's coalescing window reads
//! (`coalesce.rs`): from what a measuring period delivered and to how many
//! distinct clients, and what it predicts for ticks per write.
//!
//! A client that receives Poisson ticks at rate λ and is written once per
//! window `W` in which it got any gets `x / (1 − e^−x)` ticks per write,
//! `x = λW`. Deliveries per client reached over a period `T` is the same
//! formula at `W = T`, so inverting it gives λ, whatever window the worker
//! ran meanwhile (shorter than the period).

/// What a worker's passes delivered during a measuring period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Reach {
    /// Live ticks queued to clients.
    pub(crate) deliveries: u64,
    /// Distinct clients they went to.
    pub(crate) clients: u64,
}

/// Expected ticks per write for a client that gets `x` ticks per window on
/// average (Poisson) and is written once per window in which it got any:
/// `x / (1 − e^−x)`, 1 as `x` → 0.
pub(crate) fn expected_yield(x: f64) -> f64 {
    if x < 1e-9 { 1.0 } else { x / -(-x).exp_m1() }
}

/// The `x` whose [`expected_yield`] is `y` (0 for `y` ≤ 1).
fn ticks_per_window(y: f64) -> f64 {
    if y.is_nan() || y <= 1.0 {
        return 0.0;
    }
    // The yield rises with x and lies between x and x + 1: bisect there.
    let (mut lo, mut hi) = (y - 1.0, y);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if expected_yield(mid) < y {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// Ticks per second per client reached, from what a period of `secs`
/// delivered: its deliveries per client is the expected yield of a window
/// as long as the period.
pub(crate) fn client_rate(reach: Reach, secs: f64) -> f64 {
    if reach.clients == 0 || secs <= 0.0 {
        return 0.0;
    }
    ticks_per_window(reach.deliveries as f64 / reach.clients as f64) / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_read_from_a_period_is_the_clients_rate() {
        assert!((expected_yield(1.0) - 1.582).abs() < 1e-3);
        assert!((expected_yield(2.0) - 2.313).abs() < 1e-3);
        assert_eq!(expected_yield(0.0), 1.0);
        for rate in [2.0, 10.0, 80.0, 200.0, 1000.0] {
            let x: f64 = rate * 0.05;
            let reach = Reach {
                deliveries: (1e6 * x).round() as u64,
                clients: (1e6 * -(-x).exp_m1()).round() as u64,
            };
            let got = client_rate(reach, 0.05);
            assert!((got / rate - 1.0).abs() < 0.01, "{rate}/s read as {got}");
        }
        assert_eq!(client_rate(Reach::default(), 0.05), 0.0);
        // One tick per client reached: no evidence of a second.
        let one = Reach {
            deliveries: 5,
            clients: 5,
        };
        assert_eq!(client_rate(one, 0.05), 0.0);
    }
}
