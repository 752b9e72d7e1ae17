//! `--compare`: medians per target and load point over alternating rounds,
//! and their ratios; rounds where other processes took CPU are also shown
//! on their own.

use crate::args::Load;
use crate::report::{RunData, RunReport};
use crate::target::Target;

/// Target letters: A, B, C, … (as many as --compare accepts).
pub(crate) const LETTERS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];

/// Medians per target and load point, and A/B ratios.
pub(crate) struct Comparison {
    /// The tables, for the terminal.
    pub text: String,
    /// The same figures for report.json.
    pub json: serde_json::Value,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

type Metric = (&'static str, fn(&RunReport) -> Option<f64>);

const METRICS: [Metric; 11] = [
    ("p50 from rx (µs)", |r| Some(r.latency.p50_ns as f64 / 1e3)),
    ("p99 from rx (µs)", |r| Some(r.latency.p99_ns as f64 / 1e3)),
    ("p99.9 from rx (µs)", |r| {
        Some(r.latency.p999_ns as f64 / 1e3)
    }),
    ("p50 from intended (µs)", |r| {
        Some(r.latency_intended.p50_ns as f64 / 1e3)
    }),
    ("p99 from intended (µs)", |r| {
        Some(r.latency_intended.p99_ns as f64 / 1e3)
    }),
    ("p99.9 from intended (µs)", |r| {
        Some(r.latency_intended.p999_ns as f64 / 1e3)
    }),
    ("max from rx (µs)", |r| Some(r.latency.max_ns as f64 / 1e3)),
    ("delivered/s", |r| Some(r.delivered_per_sec)),
    ("server CPU-s per M deliveries", |r| {
        r.server_resources
            .as_ref()
            .map(|s| s.cpu_seconds_per_million)
    }),
    ("missing (fast clients)", |r| Some(r.fast.missing as f64)),
    ("deliveries per write", |r| r.writes.deliveries_per_write()),
];

/// A round is "clean" when other processes kept less than this many cores
/// busy during both of its runs.
const CLEAN_OTHERS: f64 = 0.3;

/// The medians of each metric per target and load point, with ratios
/// (A/B for two targets, X/A for more), over all rounds and over the quiet
/// ones only.
pub(crate) fn compare(runs: &[RunData], targets: &[Target], loads: &[Load]) -> Comparison {
    use std::fmt::Write as _;
    let mut text = String::new();
    let mut points = Vec::new();
    let names: Vec<String> = targets.iter().map(|t| t.describe()).collect();
    let k = targets.len();
    // Two targets: A/B, as always; more: each against A.
    let ratio_names: Vec<String> = if k == 2 {
        vec!["A/B".into()]
    } else {
        (1..k).map(|i| format!("{}/A", LETTERS[i])).collect()
    };
    let block = |text: &mut String, title: String, groups: &[Vec<&RunReport>]| {
        let _ = write!(text, "{title}\n  {:<32}", "");
        for l in LETTERS.iter().take(k) {
            let _ = write!(text, "{l:>14}");
        }
        for r in &ratio_names {
            let _ = write!(text, "{r:>9}");
        }
        let _ = write!(text, "\n  {:<32}", "");
        for n in &names {
            let short: String = n.trim_start_matches("ws://").chars().take(13).collect();
            let _ = write!(text, "{short:>14}");
        }
        let _ = writeln!(text);
        let mut rows = serde_json::Map::new();
        for (name, f) in METRICS {
            let m: Vec<f64> = groups
                .iter()
                .map(|g| median(g.iter().filter_map(|r| f(r)).collect()))
                .collect();
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let ratios: Vec<f64> = if k == 2 {
                vec![div(m[0], m[1])]
            } else {
                m[1..].iter().map(|&x| div(x, m[0])).collect()
            };
            let _ = write!(text, "  {name:<32}");
            for v in &m {
                let _ = write!(text, "{v:>14.1}");
            }
            for r in &ratios {
                let _ = write!(text, "{r:>9.2}");
            }
            let _ = writeln!(text);
            let mut row = serde_json::json!({
                "medians": m.iter().map(|&v| finite(v)).collect::<Vec<_>>(),
            });
            if k == 2 {
                row["a"] = finite(m[0]);
                row["b"] = finite(m[1]);
                row["a_over_b"] = finite(ratios[0]);
            } else {
                row["over_a"] = ratios.iter().map(|&v| finite(v)).collect();
            }
            rows.insert(name.to_owned(), row);
        }
        rows
    };
    for load in loads {
        let groups: Vec<Vec<&RunReport>> = (0..k)
            .map(|ti| {
                runs.iter()
                    .map(|r| &r.report)
                    .filter(|r| r.point == load.point && r.target_index == ti && !r.stall_control)
                    .collect()
            })
            .collect();
        let point = load
            .point
            .as_ref()
            .map_or(String::new(), |(k, v)| format!(" at {k}={v}"));
        let n = groups.iter().map(Vec::len).min().unwrap_or(0);
        let all = block(
            &mut text,
            format!("comparison{point}: median of {n} alternating runs each"),
            &groups,
        );
        // On a shared machine, rounds where someone else's build ran are
        // noise for every target; show the quiet rounds on their own too.
        let clean: Vec<usize> = (1..=n)
            .filter(|&round| {
                groups
                    .iter()
                    .flatten()
                    .filter(|r| r.round == round)
                    .all(|r| r.runner.other_processes_cores < CLEAN_OTHERS)
            })
            .collect();
        let clean_groups: Vec<Vec<&RunReport>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|r| clean.contains(&r.round))
                    .copied()
                    .collect()
            })
            .collect();
        let clean_rows = (!clean.is_empty() && clean.len() < n).then(|| {
            block(
                &mut text,
                format!(
                    "comparison{point}: quiet rounds only ({} of {n}: other processes under {CLEAN_OTHERS} cores in every run of the round)",
                    clean.len()
                ),
                &clean_groups,
            )
        });
        if clean.is_empty() {
            let _ = writeln!(
                text,
                "  (no round was quiet: other processes took {CLEAN_OTHERS}+ cores in every round; the figures include waiting for CPU)"
            );
        }
        points.push(serde_json::json!({
            "point": load.point,
            "medians": all,
            "quiet_rounds": clean,
            "quiet_medians": clean_rows,
        }));
    }
    let mut json = serde_json::json!({ "targets": names, "points": points });
    if k == 2 {
        json["a"] = serde_json::json!(names[0]);
        json["b"] = serde_json::json!(names[1]);
    }
    Comparison { text, json }
}

pub(crate) fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}
