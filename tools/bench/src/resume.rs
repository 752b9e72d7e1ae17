//! The resume scenarios (#12): clients that disconnect and resume from
//! their position (`--reconnect-every`, `--reconnect-share`), and the slow
//! clients' slow-consumer policy (`--stall-policy catchup`). Their flags,
//! the plan the client threads follow, and the report's `reconnect`
//! section, which makes a lost tick impossible to miss.
//!
//! The connection side lives in `clients::reconnect`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::clients::ReconnectAcc;
use crate::report::{GroupReport, Percentiles, ns, thousands};

/// `--reconnect-every`: "500ms", "2s", "1.5s", "1m", or seconds as a number.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale <= 3600.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "`{s}`: write a positive duration up to an hour, e.g. 500ms, 2s, 1.5s or 1m"
        )),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "`{s}`: the share of clients is a fraction in (0, 1], e.g. 0.1"
        )),
    }
}

/// The slow clients' `subscribe.policy` on every channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StallPolicy {
    /// The server's default: past the byte cap, newest value per key.
    Conflate,
    /// Read forward through the server's shared history: lose nothing.
    Catchup,
}

impl StallPolicy {
    pub fn name(self) -> &'static str {
        match self {
            StallPolicy::Conflate => "conflate",
            StallPolicy::Catchup => "catchup",
        }
    }
}

/// The flags of the resume scenarios.
#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    /// Reconnect scenario: every this long (e.g. 500ms, 2s), each of
    /// --reconnect-share of the fast clients drops its connection (a
    /// WebSocket close, a bare FIN or an RST, in turn) and reconnects with
    /// `resume` (its per-key `seq` and the connection-wide offset); the
    /// report counts ticks lost (the run fails on any) and resume latency.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub reconnect_every: Option<Duration>,
    /// The share of fast clients that reconnect, a fraction in (0, 1].
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1, value_parser = parse_share, requires = "reconnect_every")]
    pub reconnect_share: f64,
    /// The slow clients' (--slow) slow-consumer policy on every channel:
    /// `catchup` reads forward through the server's history and must lose
    /// nothing; `conflate` is the server's default.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub stall_policy: Option<StallPolicy>,
}

/// What the client threads follow: who reconnects, and how often.
#[derive(Clone, Debug, Default)]
pub struct ResumePlan {
    /// (period, share of fast clients) when reconnecting.
    pub reconnect: Option<(Duration, f64)>,
    /// Seconds of publishing: no reconnect starts after them.
    pub publish_seconds: f64,
    /// The slow clients' policy, when asked.
    pub stall_policy: Option<StallPolicy>,
}

impl ResumePlan {
    pub fn new(args: &ResumeArgs, publish_seconds: f64) -> ResumePlan {
        ResumePlan {
            reconnect: args.reconnect_every.map(|d| (d, args.reconnect_share)),
            publish_seconds,
            stall_policy: args.stall_policy,
        }
    }

    /// Whether fast client `id` is one of the reconnecting share: spread
    /// evenly over ids (the ids where `id × share` crosses an integer).
    pub fn reconnects(&self, id: u32, slow: bool) -> bool {
        match self.reconnect {
            Some((_, share)) if !slow => {
                let (a, b) = (id as f64 * share, (id as f64 + 1.0) * share);
                b.floor() > a.floor() || share >= 1.0
            }
            _ => false,
        }
    }
}

/// The report's `reconnect` section.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconnectReport {
    /// The reconnect period, seconds.
    pub every_seconds: f64,
    /// The share of fast clients that reconnect (`--reconnect-share`).
    pub share: f64,
    /// Clients that reconnected at least once.
    pub clients: u64,
    /// Disconnects by how: WebSocket close, bare FIN, RST.
    pub by_close: u64,
    pub by_fin: u64,
    pub by_rst: u64,
    /// Reconnects that could not connect and resume (the client then
    /// stops: its remaining ticks count as lost).
    pub failed: u64,
    /// Resumes the server answered `recovered:false` (the connection-wide
    /// position, or a key), with the first reason seen.
    pub not_recovered: u64,
    pub not_recovered_reason: Option<String>,
    /// Ticks fast clients never got: missing (expected − delivered) plus
    /// the `seq` gaps. Must be 0.
    pub ticks_lost: u64,
    /// Ticks received twice or out of order (the seam of a resume).
    pub duplicates: u64,
    /// Disconnect → the first tick the server stamped after answering the
    /// resume (so everything missed has been replayed before it).
    pub resume_latency: Percentiles,
}

impl ReconnectReport {
    /// Builds the section and turns a loss, a duplicate or a failed resume
    /// into a problem (the run is then incomplete and the command exits 2).
    pub fn build(
        plan: &ResumePlan,
        acc: &ReconnectAcc,
        fast: &GroupReport,
        problems: &mut Vec<String>,
    ) -> Option<ReconnectReport> {
        let (every, share) = plan.reconnect?;
        let r = ReconnectReport {
            every_seconds: every.as_secs_f64(),
            share,
            clients: acc.clients,
            by_close: acc.by_method[0],
            by_fin: acc.by_method[1],
            by_rst: acc.by_method[2],
            failed: acc.failed,
            not_recovered: acc.not_recovered,
            not_recovered_reason: acc.first_reason.clone(),
            ticks_lost: fast.missing + fast.gap_ticks,
            duplicates: fast.reorders,
            resume_latency: Percentiles::of(&acc.latency),
        };
        if r.ticks_lost > 0 || r.duplicates > 0 {
            problems.push(format!(
                "TICKS LOST ACROSS RECONNECTS: {} lost ({} missing, {} in seq gaps), {} duplicated or reordered, over {} reconnects",
                thousands(r.ticks_lost),
                thousands(fast.missing),
                thousands(fast.gap_ticks),
                thousands(r.duplicates),
                thousands(r.reconnects()),
            ));
        }
        if r.failed > 0 || r.not_recovered > 0 {
            problems.push(format!(
                "{} reconnects failed and {} resumes were not recovered (first reason: {})",
                r.failed,
                r.not_recovered,
                r.not_recovered_reason.as_deref().unwrap_or("-")
            ));
        }
        if r.reconnects() == 0 {
            problems.push(
                "--reconnect-every was given but no client reconnected (is the period longer than the run?)".into(),
            );
        }
        Some(r)
    }

    pub fn reconnects(&self) -> u64 {
        self.by_close + self.by_fin + self.by_rst
    }

    /// The table's lines for this section.
    pub fn table(&self, o: &mut String) {
        let verdict = if self.ticks_lost == 0 && self.duplicates == 0 {
            "0 lost".to_owned()
        } else {
            format!(
                "*** {} LOST, {} DUPLICATED ***",
                thousands(self.ticks_lost),
                thousands(self.duplicates)
            )
        };
        let _ = writeln!(
            o,
            "  reconnect    {verdict} · {} reconnects of {} clients every {}s (close {} · FIN {} · RST {}) · failed {} · not recovered {}",
            thousands(self.reconnects()),
            self.clients,
            self.every_seconds,
            self.by_close,
            self.by_fin,
            self.by_rst,
            self.failed,
            self.not_recovered
        );
        let l = &self.resume_latency;
        let _ = writeln!(
            o,
            "  resume       disconnect → first caught-up tick: p50 {} · p99 {} · max {} ({} resumes timed)",
            ns(l.p50_ns),
            ns(l.p99_ns),
            ns(l.max_ns),
            l.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "0", "-1s", "abc", "2h", "nanms", "7200"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_share("0").is_err() && parse_share("1.5").is_err());
        assert_eq!(parse_share("0.25"), Ok(0.25));
    }

    #[test]
    fn the_share_picks_evenly_spread_fast_clients() {
        let plan = ResumePlan {
            reconnect: Some((Duration::from_secs(1), 0.1)),
            ..ResumePlan::default()
        };
        let picked: Vec<u32> = (0..100).filter(|&i| plan.reconnects(i, false)).collect();
        assert_eq!(picked.len(), 10);
        assert!(picked.windows(2).all(|w| w[1] - w[0] == 10));
        assert!(!plan.reconnects(picked[0], true));
        let all = ResumePlan {
            reconnect: Some((Duration::from_secs(1), 1.0)),
            ..ResumePlan::default()
        };
        assert!((0..10).all(|i| all.reconnects(i, false)));
    }
}
