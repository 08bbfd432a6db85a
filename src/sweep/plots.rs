//! The plots of `hmdpc report`, drawn as SVG by `plotters` (text stays text, so no font files
//! are needed): the test cost against the swept size per method, the learning curves of each
//! problem with their spread over seeds, and the updates each method needs to come within 10%
//! of the best run against the continuous action dimension.

use plotters::prelude::*;

use super::plan::show;
use super::report::{CellReport, Report, Stats, WITHIN, updates_to_reach};
use crate::train::folder;

const SIZE: (u32, u32) = (760, 480);

/// A method's learning curve: per evaluated update, (update, mean, lowest, highest) over seeds.
type Curve = (String, Vec<(f64, f64, f64, f64)>);

/// A method's points in the reach plot: (dimension, median) per problem, and (dimension,
/// updates, never reached) per run.
type Reach = (String, Vec<(f64, f64)>, Vec<(f64, f64, bool)>);

/// The Okabe–Ito colours, which stay apart for colour-blind readers and on white (no yellow).
const COLOURS: [(u8, u8, u8); 7] =
    [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (0, 0, 0)];

fn color(k: usize) -> RGBAColor {
    let (r, g, b) = COLOURS[k % COLOURS.len()];
    RGBColor(r, g, b).to_rgba()
}

/// A tick label: whole numbers without decimals (sizes, updates, costs on a round grid), others
/// with at most four decimals and no trailing zeros.
fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { format!("{v:.4}").trim_end_matches('0').to_string() }
}

fn failed<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw the plot: {e:?}")
}

/// The legend's sample of a series drawn as a line of colour `c`.
fn line_sample(c: RGBAColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
}

/// Draws the legend of every labelled series, boxed, at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(failed)
}

/// Whether costs from `lo` to `hi` go on a logarithmic axis: when they are all positive and
/// span more than a factor of 20 (a first, poor policy, or a method that diverged, costs a
/// thousand times more than a trained one, and on a linear axis the others flatten into one).
fn log_axis(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo > 20.0
}

/// Draws the grid and the axes' descriptions of `chart`, with [`tick`] labels on both axes.
macro_rules! mesh {
    ($chart:expr, $x_desc:expr, $y_desc:expr) => {
        $chart
            .configure_mesh()
            .x_desc($x_desc)
            .y_desc($y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()
            .map_err(failed)?
    };
}

/// A range with some room around `lo..hi`.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi > lo {
        let pad = 0.06 * (hi - lo);
        (lo - pad)..(hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad)..(hi + pad)
    }
}

/// The first `set.` axis, whose values are the x axis of the cost plot.
fn size_axis(report: &Report) -> Option<String> {
    report.sweep.axes.iter().find(|a| a.set_name().is_some()).map(|a| a.name.clone())
}

/// A cell's series in the cost and reach plots: its method, and the problem's swept sizes other
/// than `x_axis`.
fn series_name(cell: &CellReport, x_axis: &str) -> String {
    let mut parts: Vec<String> = cell.method.iter().map(|(k, v)| format!("{k}={}", show(v))).collect();
    parts.extend(
        cell.problem
            .iter()
            .filter(|(k, _)| k != x_axis)
            .map(|(k, v)| format!("{}={}", k.trim_start_matches("set."), show(v))),
    );
    if parts.is_empty() { "all".into() } else { parts.join(", ") }
}

/// Test cost (mean over seeds, bars of ± one standard deviation) against the first swept size,
/// a line per method; `None` when no size is swept.
pub fn cost(report: &Report) -> Result<Option<String>, String> {
    let Some(x_axis) = size_axis(report) else { return Ok(None) };
    let mut series: Vec<(String, Vec<(f64, Stats)>)> = Vec::new();
    for cell in report.cells.iter().filter(|c| c.total.n > 0) {
        let Some(x) = cell.problem.iter().find(|(k, _)| *k == x_axis).and_then(|(_, v)| v.as_f64()) else { continue };
        let name = series_name(cell, &x_axis);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push((x, cell.total)),
            None => series.push((name, vec![(x, cell.total)])),
        }
    }
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let ys = series.iter().flat_map(|(_, p)| p.iter().flat_map(|q| [q.1.mean - q.1.std, q.1.mean + q.1.std]));
    let (y_lo, y_hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let means = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1.mean));
    let (mean_lo, mean_hi) = means.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let log = log_axis(mean_lo, mean_hi);
    let y_desc = format!("test cost, {} (mean ± std over seeds){}", report.unit, if log { "; log scale" } else { "" });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let builder = |root| {
            let mut b = ChartBuilder::on(root);
            b.caption(format!("Test cost against {}", x_axis.trim_start_matches("set.")), ("sans-serif", 20))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(70);
            b
        };
        // The same drawing on a linear or a logarithmic y axis; `clip` keeps a bar that reaches
        // below 0 on the logarithmic one.
        macro_rules! draw {
            ($chart:expr, $clip:expr) => {{
                let mut chart = $chart;
                let clip = $clip;
                mesh!(chart, x_axis.trim_start_matches("set."), y_desc.clone());
                for (k, (name, points)) in series.iter_mut().enumerate() {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let c = color(k);
                    chart
                        .draw_series(LineSeries::new(points.iter().map(|(x, s)| (*x, s.mean)), c.stroke_width(2)))
                        .map_err(failed)?
                        .label(name.clone())
                        .legend(line_sample(c));
                    chart
                        .draw_series(points.iter().map(|(x, s)| Circle::new((*x, s.mean), 4, c.filled())))
                        .map_err(failed)?;
                    chart
                        .draw_series(points.iter().map(|(x, s)| {
                            PathElement::new(vec![(*x, clip(s.mean - s.std)), (*x, clip(s.mean + s.std))], c)
                        }))
                        .map_err(failed)?;
                }
                draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
            }};
        }
        if log {
            let (lo, hi) = (mean_lo / 1.5, y_hi * 1.2);
            let chart = builder(&root).build_cartesian_2d(padded(x_lo, x_hi), (lo..hi).log_scale()).map_err(failed)?;
            draw!(chart, |y: f64| y.clamp(lo, hi));
        } else {
            let chart = builder(&root).build_cartesian_2d(padded(x_lo, x_hi), padded(y_lo, y_hi)).map_err(failed)?;
            draw!(chart, |y: f64| y);
        }
        root.present().map_err(failed)?;
    }
    Ok(Some(svg))
}

/// The learning curves of one problem: per method, the mean dev cost over its seeds at each
/// evaluation, and the band between the lowest and the highest seed.
pub fn curves(report: &Report, problem: &str) -> Result<String, String> {
    let cells: Vec<&CellReport> =
        report.cells.iter().filter(|c| c.problem_name() == problem && !c.runs.is_empty()).collect();
    // Per method: (update, mean, min, max) over the seeds that evaluated at that update.
    let mut lines: Vec<Curve> = Vec::new();
    for cell in &cells {
        let mut updates: Vec<usize> = cell.runs.iter().flat_map(|r| r.curve.iter().map(|row| row.update)).collect();
        updates.sort_unstable();
        updates.dedup();
        let points = updates
            .into_iter()
            .filter_map(|u| {
                let values: Vec<f64> = cell
                    .runs
                    .iter()
                    .filter_map(|r| r.curve.iter().find(|row| row.update == u).map(folder::dev_total))
                    .filter(|v| v.is_finite())
                    .collect();
                if values.is_empty() {
                    return None;
                }
                let stats = Stats::of(&values);
                let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                Some((u as f64, stats.mean, lo, hi))
            })
            .collect();
        lines.push((cell.method_name(), points));
    }
    let x_hi = lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(1.0, f64::max);
    // The first evaluations of a poor policy can be far above the rest: the y range leaves out
    // the first tenth of the run.
    let tail = lines.iter().flat_map(|(_, p)| p.iter().filter(|q| q.0 >= 0.1 * x_hi).flat_map(|q| [q.2, q.3]));
    let (y_lo, y_hi) = tail.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    // A first, poor policy can cost a thousand times more than a trained one: a logarithmic
    // axis keeps the end of the curves visible when every cost is positive.
    let all = lines.iter().flat_map(|(_, p)| p.iter().flat_map(|q| [q.2, q.3]));
    let (all_lo, all_hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let log = log_axis(all_lo, all_hi);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let builder = |root| {
            let mut b = ChartBuilder::on(root);
            b.caption(format!("Learning curves, {problem}"), ("sans-serif", 20))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(70);
            b
        };
        let y_desc = format!(
            "dev cost, {} (mean; band: min–max over seeds){}",
            report.unit,
            if log { "; log scale" } else { "" }
        );
        // The same drawing on a linear or a logarithmic y axis.
        macro_rules! draw {
            ($chart:expr, $clip:expr) => {{
                let mut chart = $chart;
                let clip = $clip;
                mesh!(chart, "policy updates", y_desc.clone());
                for (k, (name, points)) in lines.iter().enumerate() {
                    let c = color(k);
                    let mut band: Vec<(f64, f64)> = points.iter().map(|p| (p.0, clip(p.3))).collect();
                    band.extend(points.iter().rev().map(|p| (p.0, clip(p.2))));
                    chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled()))).map_err(failed)?;
                    chart
                        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, clip(p.1))), c.stroke_width(2)))
                        .map_err(failed)?
                        .label(name.clone())
                        .legend(line_sample(c));
                }
                draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
            }};
        }
        if log {
            let (lo, hi) = (all_lo / 1.2, all_hi * 1.2);
            let chart = builder(&root).build_cartesian_2d(0.0..x_hi, (lo..hi).log_scale()).map_err(failed)?;
            draw!(chart, |y: f64| y.clamp(lo, hi));
        } else {
            let range = padded(y_lo, y_hi);
            let (lo, hi) = (range.start, range.end);
            let chart = builder(&root).build_cartesian_2d(0.0..x_hi, range).map_err(failed)?;
            draw!(chart, |y: f64| y.clamp(lo, hi));
        }
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// Updates to come within 10% of the best run's dev cost against the continuous action
/// dimension: per method a line through the median over seeds, a dot per run, and a hollow dot
/// at the run's last update for a run that never came that close.
pub fn reach(report: &Report) -> Result<String, String> {
    // A line per method and per value of the swept sizes other than the first (the modes of the
    // switched LQR, say), as in the cost plot, so that two problems of one dimension are two
    // points of two lines, not a vertical step of one.
    let x_axis = size_axis(report).unwrap_or_default();
    let mut series: Vec<Reach> = Vec::new();
    for cell in report.cells.iter().filter(|c| !c.runs.is_empty()) {
        let Some(dim) = cell.action_dim else { continue };
        let x = dim as f64;
        let (values, _) = updates_to_reach(cell);
        let name = series_name(cell, &x_axis);
        let index = match series.iter().position(|(n, _, _)| *n == name) {
            Some(index) => index,
            None => {
                series.push((name, Vec::new(), Vec::new()));
                series.len() - 1
            }
        };
        let (_, medians, dots) = &mut series[index];
        for (run, v) in cell.runs.iter().zip(&values) {
            dots.push((x, *v, run.reached.is_none()));
        }
        medians.push((x, Stats::of(&values).median));
    }
    for (_, medians, _) in &mut series {
        medians.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xs = series.iter().flat_map(|s| s.2.iter().map(|d| d.0));
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let y_hi = series.iter().flat_map(|s| s.2.iter().map(|d| d.1)).fold(1.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Updates to come within {:.0}% of the best run's dev cost", 100.0 * WITHIN),
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(padded(x_lo, x_hi), 0.0..(1.08 * y_hi))
            .map_err(failed)?;
        mesh!(
            chart,
            "continuous action dimension",
            "policy updates (median over seeds; hollow: never, drawn at the cap)"
        );
        for (k, (name, medians, dots)) in series.into_iter().enumerate() {
            let c = color(k);
            chart
                .draw_series(LineSeries::new(medians, c.stroke_width(2)))
                .map_err(failed)?
                .label(name)
                .legend(line_sample(c));
            chart
                .draw_series(
                    dots.into_iter().map(|(x, y, never)| {
                        Circle::new((x, y), 4, if never { c.stroke_width(2) } else { c.filled() })
                    }),
                )
                .map_err(failed)?;
        }
        // The middle right is empty: runs that never get close sit at the cap, the others low.
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_drop_needless_decimals() {
        assert_eq!(tick(&1600.0), "1600");
        assert_eq!(tick(&42.5), "42.5");
        assert_eq!(tick(&(0.1 + 0.2)), "0.3");
        assert_eq!(tick(&-2.0), "-2");
    }

    #[test]
    fn costs_that_span_more_than_a_factor_of_20_go_on_a_log_axis() {
        // The S-LQR study's means: HPO about 38 to 57, PPO up to 4512 after diverging.
        assert!(log_axis(37.8, 4512.0));
        assert!(!log_axis(37.8, 180.9));
        // A cost at or below 0 has no logarithm: the axis stays linear.
        assert!(!log_axis(-842.0, 30.0) && !log_axis(0.0, 4512.0));
    }
}
