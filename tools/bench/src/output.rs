//! The files a benchmark leaves: the percentile plot, the sweep plot with
//! its best point, the HdrHistogram interval log and report.json.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::BenchError;
use crate::args::BenchArgs;
use crate::compare::{Comparison, median};
use crate::plot;
use crate::report::{self, Percentiles, RunData, RunReport, thousands};
use crate::target::Target;

/// Writes the percentile plot (and the sweep plot), the interval log and
/// report.json, and says where they are.
pub(crate) fn write_outputs(
    args: &BenchArgs,
    runs: &[RunData],
    targets: &[Target],
    comparison: Option<&Comparison>,
    extra: Option<(&str, serde_json::Value)>,
    started: SystemTime,
) -> Result<(), BenchError> {
    let out = |p: &Option<PathBuf>, name: &str| p.clone().unwrap_or_else(|| args.out.join(name));
    let (json, svg, hlog) = (
        out(&args.json, "report.json"),
        out(&args.plot, "latency.svg"),
        out(&args.hlog, "latency.hlog"),
    );
    for p in [&json, &svg, &hlog] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BenchError::Output {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let werr = |p: &Path| {
        let path = p.display().to_string();
        move |source| BenchError::Output { path, source }
    };

    percentile_plot(args, runs, targets, &svg)?;
    let sweep_json = match args.sweep.as_deref() {
        Some((param, vals)) => Some(sweep(runs, targets, param, vals, &svg)?),
        None => None,
    };

    report::write_interval_log(&hlog, runs).map_err(werr(&hlog))?;
    println!("interval log: {}", hlog.display());

    let doc = serde_json::json!({
        "tool": "tickwire bench",
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": started.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "complete": runs.iter().all(|r| r.report.complete),
        "files": { "plot": svg.display().to_string(), "interval_log": hlog.display().to_string() },
        "runs": runs.iter().map(|r| &r.report).collect::<Vec<_>>(),
        "comparison": comparison.map(|c| c.json.clone()),
        "sweep": sweep_json,
    });
    let mut doc = doc;
    // A mode's own summary (`max_rate`, `stall_control`).
    if let Some((key, value)) = extra {
        doc[key] = value;
    }
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    std::fs::write(&json, text).map_err(werr(&json))?;
    println!("report: {}", json.display());
    Ok(())
}

/// Every run's latency distribution on one percentile plot.
fn percentile_plot(
    args: &BenchArgs,
    runs: &[RunData],
    targets: &[Target],
    svg: &Path,
) -> Result<(), BenchError> {
    // Percentile plot: every run from rx; a single run also from intended time.
    let series: Vec<plot::Series> = runs
        .iter()
        .flat_map(|r| {
            let color = r.report.target_index;
            let color = match args.sweep.as_deref() {
                Some((_, vals)) => r
                    .report
                    .point
                    .as_ref()
                    .and_then(|(_, v)| vals.iter().position(|x| x == v))
                    .map_or(color, |i| i * targets.len() + color),
                None => color,
            };
            // Two servers' rx stamps come from two clocks; the intended send
            // time and the receive time both come from ours, so comparisons
            // are drawn from intended send time.
            let mut v = vec![if targets.len() > 1 {
                plot::Series {
                    label: format!("{} (from intended send time)", r.report.label),
                    hist: &r.intended,
                    color,
                    dashed: false,
                }
            } else {
                plot::Series {
                    label: format!("{} (from rx)", r.report.label),
                    hist: &r.rx,
                    color,
                    dashed: false,
                }
            }];
            if runs.len() == 1 {
                v.push(plot::Series {
                    label: format!("{} (from intended send time)", r.report.label),
                    hist: &r.intended,
                    color: 1,
                    dashed: true,
                });
            }
            v
        })
        .collect();
    let first = &runs[0].report.load;
    let title = format!(
        "tickwire bench: {} clients × {} symbols, {}",
        first.clients,
        if first.all_symbols {
            "*".to_owned()
        } else {
            first.per_client.to_string()
        },
        first.rate.map_or_else(
            || format!(
                "{} at {}",
                first.source,
                first.speed.clone().unwrap_or_default()
            ),
            |r| format!("{r} ticks/s")
        )
    );
    plot::percentile_plot(svg, &title, &series)?;
    println!("plot: {}", svg.display());

    Ok(())
}

/// The latency a sweep shows: two servers' rx stamps come from two clocks,
/// the intended send time from ours, so several targets are compared on it.
fn swept_latency(r: &RunReport, targets: usize) -> &Percentiles {
    if targets > 1 {
        &r.latency_intended
    } else {
        &r.latency
    }
}

/// The reports of target `ti` at the sweep value `v`.
fn runs_at(runs: &[RunData], ti: usize, v: f64) -> Vec<&RunReport> {
    runs.iter()
        .map(|r| &r.report)
        .filter(|r| r.point.as_ref().map(|p| p.1) == Some(v) && r.target_index == ti)
        .collect()
}

/// `--sweep`: the p50/p99 plot against the swept parameter and, for each
/// target, the most deliveries per second with p99 under 10 ms (S2's
/// figure). Returns report.json's `sweep` object.
fn sweep(
    runs: &[RunData],
    targets: &[Target],
    param: &str,
    vals: &[f64],
    svg: &Path,
) -> Result<serde_json::Value, BenchError> {
    let lines: Vec<plot::SweepLine> = (0..targets.len())
        .map(|ti| plot::SweepLine {
            label: targets[ti].describe(),
            points: vals
                .iter()
                .map(|v| {
                    let mine = runs_at(runs, ti, *v);
                    let lat = |r: &&RunReport| swept_latency(r, targets.len()).clone();
                    (
                        *v,
                        median(mine.iter().map(|r| lat(r).p50_ns as f64).collect()),
                        median(mine.iter().map(|r| lat(r).p99_ns as f64).collect()),
                    )
                })
                .filter(|p| p.1.is_finite() && p.2.is_finite())
                .collect(),
        })
        .collect();
    let sweep_svg = svg.with_file_name(format!(
        "{}-sweep.svg",
        svg.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("latency")
    ));
    let y = if targets.len() > 1 {
        "latency from intended send time"
    } else {
        "latency from rx"
    };
    plot::sweep_plot(
        &sweep_svg,
        &format!("p50 / p99 against {param}"),
        param,
        y,
        &lines,
    )?;
    println!("sweep plot: {}", sweep_svg.display());
    let best: Vec<serde_json::Value> = (0..targets.len())
        .map(|ti| best_under_10ms(runs, targets, ti, param, vals))
        .collect();
    Ok(serde_json::json!({
        "best_under_10ms_p99": best,
        "parameter": param,
        "plot": sweep_svg.display().to_string(),
        "lines": lines.iter().map(|l| serde_json::json!({
            "target": l.label,
            "points": l.points.iter().map(|p| serde_json::json!({"value": p.0, "p50_ns": p.1, "p99_ns": p.2})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

/// S2's figure for target `ti`: the most delivered/s whose p99 stayed under
/// 10 ms, printed, and as report.json has it.
fn best_under_10ms(
    runs: &[RunData],
    targets: &[Target],
    ti: usize,
    param: &str,
    vals: &[f64],
) -> serde_json::Value {
    let mut top: Option<(f64, f64)> = None;
    for v in vals {
        let mine = runs_at(runs, ti, *v);
        let p99 = median(
            mine.iter()
                .map(|r| swept_latency(r, targets.len()).p99_ns as f64)
                .collect(),
        );
        let rate = median(mine.iter().map(|r| r.delivered_per_sec).collect());
        // A point where nothing was timed (everything arrived late
        // or not at all) or ticks went missing does not count.
        let sound = !mine.is_empty()
            && mine
                .iter()
                .all(|r| r.latency.count > 0 && r.fast.missing == 0);
        if sound && p99 < 10e6 && rate > top.map_or(0.0, |t| t.0) {
            top = Some((rate, *v));
        }
    }
    match top {
        Some((rate, v)) => println!(
            "{}: highest delivered/s with p99 under 10 ms: {} (at {param}={v})",
            targets[ti].describe(),
            thousands(rate as u64)
        ),
        None => println!(
            "{}: p99 was over 10 ms at every point",
            targets[ti].describe()
        ),
    }
    serde_json::json!({
        "target": targets[ti].describe(),
        "delivered_per_sec": top.map(|t| t.0),
        "at": top.map(|t| t.1),
    })
}
