//! Pictures: the percentile distribution of each run (HdrHistogram style,
//! the tail stretched out on a log axis) and, for sweeps, p50/p99 against
//! load. SVG via plotters; its SVG text needs no system fonts.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.display().to_string(),
        message,
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// `x = 1/(1-q)` as a percentile label: 10 → "90%", 1000 → "99.9%".
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn micros_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{}ms", us / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// One line of a percentile plot.
pub struct Series<'a> {
    pub label: String,
    pub hist: &'a Histogram<u64>,
    /// Runs of the same target share a colour.
    pub color: usize,
    pub dashed: bool,
}

/// Latency (µs, log) against percentile (log of 1/(1-q)), one line per series.
pub fn percentile_plot(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let e = err(path);
    let lines: Vec<(&Series, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|s| !s.hist.is_empty())
        .map(|s| {
            let mut pts: Vec<(f64, f64)> = s
                .hist
                .iter_quantiles(5)
                .map(|v| {
                    let q = v.quantile_iterated_to();
                    let x = if q >= 1.0 {
                        1e6
                    } else {
                        (1.0 / (1.0 - q)).min(1e6)
                    };
                    (
                        x,
                        s.hist.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
                    )
                })
                .collect();
            pts.dedup_by(|a, b| a.0 <= b.0);
            (s, pts)
        })
        .collect();
    // The last point (q = 1, the max) is drawn one decade past the last
    // measured percentile, not at infinity.
    let x_last = lines
        .iter()
        .flat_map(|(_, p)| p.iter().rev().skip(1).map(|v| v.0))
        .fold(10.0f64, f64::max)
        .clamp(10.0, 1e5);
    let x_max = x_last * 10.0;
    let lines: Vec<(&Series, Vec<(f64, f64)>)> = lines
        .into_iter()
        .map(|(s, p)| (s, p.into_iter().map(|(x, y)| (x.min(x_max), y)).collect()))
        .collect();
    let (mut y_min, mut y_max) = (f64::MAX, 0.0f64);
    for (_, p) in &lines {
        for &(_, y) in p {
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if y_max <= 0.0 {
        (y_min, y_max) = (1.0, 1000.0);
    }
    let y_min = (y_min * 0.8).max(0.1);
    let y_max = y_max * 1.3;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| micros_label(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (s, pts) in lines {
        let color = COLORS[s.color % COLORS.len()];
        let style = color.stroke_width(2);
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts, 6, 4, style))
                .map_err(|x| e(x.to_string()))?
        } else {
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(|x| e(x.to_string()))?
        };
        anno.label(s.label.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

/// One target's figures across a sweep: (load, p50 ns, p99 ns).
pub struct SweepLine {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// p50 (solid) and p99 (dashed) against the swept load, one colour per target.
pub fn sweep_plot(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    lines: &[SweepLine],
) -> Result<(), PlotError> {
    let e = err(path);
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    if x_max <= 0.0 {
        return Err(e("no points".into()));
    }
    let ys = lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|p| [p.1 / 1e3, p.2 / 1e3]));
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let (y_min, y_max) = ((y_min * 0.7).max(0.1), (y_max * 1.5).max(1.0));
    let (x_lo, x_hi) = (x_min * 0.8, x_max * 1.25);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_min..y_max).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .x_label_formatter(&|v| format!("{v}"))
        .y_label_formatter(&|v| micros_label(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, l) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let p50: Vec<(f64, f64)> = l.points.iter().map(|p| (p.0, p.1 / 1e3)).collect();
        let p99: Vec<(f64, f64)> = l.points.iter().map(|p| (p.0, p.2 / 1e3)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(format!("{} p50", l.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(p50.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                6,
                4,
                color.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(format!("{} p99", l.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                p99.iter()
                    .map(|&p| TriangleMarker::new(p, 4, color.filled())),
            )
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(micros_label(250.0), "250µs");
        assert_eq!(micros_label(2000.0), "2ms");
    }

    #[test]
    fn plots_are_svg() {
        let dir = std::env::temp_dir().join(format!("tw-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = crate::clients::new_histogram();
        for v in 1..10_000u64 {
            h.record(20_000 + v * 7).unwrap();
        }
        let p = dir.join("p.svg");
        percentile_plot(
            &p,
            "t",
            &[Series {
                label: "a".into(),
                hist: &h,
                color: 0,
                dashed: false,
            }],
        )
        .unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<svg") && s.contains("<polyline") && s.trim_end().ends_with("</svg>"));
        let q = dir.join("s.svg");
        sweep_plot(
            &q,
            "t",
            "clients",
            "latency",
            &[SweepLine {
                label: "a".into(),
                points: vec![(100.0, 50e3, 90e3), (1000.0, 80e3, 300e3)],
            }],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&q).unwrap().contains("<svg"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
