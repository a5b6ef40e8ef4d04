//! The two charts over time (x: window): experienced imbalance per run with
//! the oracle dashed (`experienced`), and slots re-loaded per re-plan
//! (`reloads`).
//!
//! A series holds up to 2,048 points; a chart is under 1,000 pixels wide,
//! so each line is thinned to at most [`MAX_POINTS`] count-weighted means
//! before it is drawn, and to fewer when there are many runs (a chart draws
//! about [`CHART_POINTS`] in all). That keeps 20 runs over a long history
//! under half a megabyte, and hundreds of runs not much more. Non-finite
//! values break a line instead of bending it to zero.

use plotters::prelude::*;

use super::legend::{self, Entry, Mark};
use super::palette::{RunStyle, ORACLE};
use super::{draw_svg, DrawError, WIDTH};
use crate::record::{ReportData, Series};

/// Points per drawn line, at most.
const MAX_POINTS: usize = 720;
/// Points a chart draws in all, about: lines get fewer when there are
/// many...
const CHART_POINTS: usize = 20_000;
/// ...but never fewer than this.
const MIN_POINTS: usize = 100;
/// Lines with at most this many points get a marker on each.
const MARKED_POINTS: usize = 64;
/// Height of the plot, above the legend.
const PLOT_HEIGHT: u32 = 420;

/// One line: the legend entry and its unbroken pieces `(x, y)`.
struct Line {
    entry: Entry,
    segments: Vec<Vec<(f64, f64)>>,
    /// Drawn last and dashed (the oracle).
    dashed: bool,
}

/// Experienced imbalance over time, per run, and the oracle.
pub(super) fn experienced(data: &ReportData, styles: &[RunStyle]) -> Result<String, DrawError> {
    let mut lines = vec![Line {
        entry: Entry {
            label: "oracle (the window's own bound)".to_owned(),
            color: ORACLE,
            mark: Mark::Dashed,
        },
        segments: thin(&data.oracle, 1.0, line_points(data.experienced.len() + 1)),
        dashed: true,
    }];
    lines.extend(
        data.experienced
            .iter()
            .zip(styles)
            .map(|(series, style)| Line {
                entry: Entry {
                    label: style.label.clone(),
                    color: style.color,
                    mark: Mark::Line,
                },
                segments: thin(series, 1.0, line_points(data.experienced.len() + 1)),
                dashed: false,
            }),
    );
    chart(&lines, "experienced imbalance", false)
}

/// Slots re-loaded per re-plan over time, per run, as a share of the
/// model's slots (raw slots if the total is unknown).
pub(super) fn reloads(data: &ReportData, styles: &[RunStyle]) -> Result<String, DrawError> {
    let total = data.summary.total_slots;
    let (scale, y_desc) = if total > 0 {
        (100.0 / total as f64, "% of slots re-loaded per re-plan")
    } else {
        (1.0, "slots re-loaded per re-plan")
    };
    let lines: Vec<Line> = data
        .reloads
        .iter()
        .zip(styles)
        .map(|(series, style)| Line {
            entry: Entry {
                label: style.label.clone(),
                color: style.color,
                mark: Mark::Line,
            },
            segments: thin(series, scale, line_points(data.reloads.len())),
            dashed: false,
        })
        .collect();
    chart(&lines, y_desc, true)
}

/// Draws `lines` over windows, the legend below.
fn chart(lines: &[Line], y_desc: &str, y_from_zero: bool) -> Result<String, DrawError> {
    let entries: Vec<Entry> = lines.iter().map(|l| l.entry.clone()).collect();
    let legend_height = legend::height(&entries, WIDTH);
    let ((x0, x1), (y0, y1)) = bounds(lines, y_from_zero);
    let digits = label_digits(y1 - y0);
    let y_format = move |v: &f64| format!("{v:.digits$}");
    let x_format = |v: &f64| format!("{v:.0}");
    let (svg, ()) = draw_svg((WIDTH, PLOT_HEIGHT + legend_height), |root| {
        root.fill(&WHITE)?;
        let (plot, below) = root.split_vertically(PLOT_HEIGHT);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("window")
            .y_desc(y_desc)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(238, 238, 238))
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .draw()?;
        // Runs first, the oracle over them.
        for line in lines
            .iter()
            .filter(|l| !l.dashed)
            .chain(lines.iter().filter(|l| l.dashed))
        {
            let color = line.entry.color;
            let points: usize = line.segments.iter().map(Vec::len).sum();
            for segment in &line.segments {
                if segment.len() > 1 {
                    if line.dashed {
                        chart.draw_series(DashedLineSeries::new(
                            segment.iter().copied(),
                            7,
                            5,
                            color.stroke_width(2),
                        ))?;
                    } else {
                        chart.draw_series(LineSeries::new(
                            segment.iter().copied(),
                            color.stroke_width(2),
                        ))?;
                    }
                }
                if segment.len() == 1 || (points <= MARKED_POINTS && !line.dashed) {
                    chart.draw_series(PointSeries::of_element(
                        segment.iter().copied(),
                        3,
                        color.filled(),
                        &|c, s, st| Circle::new(c, s, st),
                    ))?;
                }
            }
        }
        legend::draw(&below, &entries)
    })?;
    Ok(svg)
}

/// The most points each of `lines` lines gets.
fn line_points(lines: usize) -> usize {
    (CHART_POINTS / lines.max(1)).clamp(MIN_POINTS, MAX_POINTS)
}

/// `series` as unbroken pieces of at most `most` points in all: each drawn
/// point is the count-weighted mean of consecutive points (x at the middle
/// of the windows it covers), `value × scale`.
fn thin(series: &Series, scale: f64, most: usize) -> Vec<Vec<(f64, f64)>> {
    let group = series.points.len().div_ceil(most.max(1)).max(1);
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for chunk in series.points.chunks(group) {
        let (mut weight, mut x, mut y) = (0.0, 0.0, 0.0);
        for p in chunk.iter().filter(|p| p.value.is_finite()) {
            let count = p.count.max(1) as f64;
            weight += count;
            x += (p.window as f64 + (count - 1.0) / 2.0) * count;
            y += p.value * count;
        }
        let point = (x / weight, y / weight * scale);
        if weight > 0.0 && point.0.is_finite() && point.1.is_finite() {
            current.push(point);
        } else if !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// The axes' ranges: every point inside, a little room around; sensible
/// ranges when there is one point or none.
fn bounds(lines: &[Line], y_from_zero: bool) -> ((f64, f64), (f64, f64)) {
    let points = lines.iter().flat_map(|l| l.segments.iter().flatten());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !(x0.is_finite() && x1.is_finite()) {
        return (
            (0.0, 1.0),
            (
                if y_from_zero { 0.0 } else { 1.0 },
                if y_from_zero { 1.0 } else { 1.1 },
            ),
        );
    }
    if x1 - x0 < 1.0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y_from_zero {
        y0 = y0.min(0.0);
    }
    let span = y1 - y0;
    let pad = if span > 1e-9 {
        span * 0.06
    } else {
        (y1.abs() * 0.01).max(0.01)
    };
    let low = if y_from_zero && y0 >= 0.0 {
        0.0
    } else {
        y0 - pad
    };
    ((x0, x1), (low, y1 + pad))
}

/// Decimals that tell the y labels of a span apart.
fn label_digits(span: f64) -> usize {
    if span < 0.02 {
        4
    } else if span < 0.2 {
        3
    } else if span < 5.0 {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Series {
        let mut s = Series::default();
        for (w, &v) in values.iter().enumerate() {
            s.push(w as u64 + 1, v);
        }
        s
    }

    #[test]
    fn long_series_are_thinned_to_means() {
        let values: Vec<f64> = (0..2000).map(|i| (i % 2) as f64).collect();
        let segments = thin(&series(&values), 1.0, MAX_POINTS);
        assert_eq!(segments.len(), 1);
        let points = &segments[0];
        assert!(points.len() <= MAX_POINTS);
        assert_eq!(points.len(), 667);
        // Groups of three: 0, 1, 0 then 1, 0, 1.
        assert!((points[0].1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((points[0].0 - 2.0).abs() < 1e-12);
    }

    #[test]
    fn many_lines_get_fewer_points_each() {
        assert_eq!(line_points(1), MAX_POINTS);
        assert_eq!(line_points(21), 952.min(MAX_POINTS));
        assert_eq!(line_points(100), 200);
        assert_eq!(line_points(1000), MIN_POINTS);
        let values = vec![1.0; 2000];
        assert_eq!(thin(&series(&values), 1.0, 200)[0].len(), 200);
    }

    #[test]
    fn nan_breaks_a_line() {
        let segments = thin(
            &series(&[1.0, 1.1, f64::NAN, 1.2, f64::INFINITY]),
            2.0,
            MAX_POINTS,
        );
        assert_eq!(
            segments,
            vec![vec![(1.0, 2.0), (2.0, 2.2)], vec![(4.0, 2.4)]]
        );
        assert!(thin(&Series::default(), 1.0, MAX_POINTS).is_empty());
    }

    #[test]
    fn bounds_hold_every_point_and_survive_degenerate_data() {
        let line = |segments| Line {
            entry: Entry {
                label: String::new(),
                color: BLACK,
                mark: Mark::Line,
            },
            segments,
            dashed: false,
        };
        let ((x0, x1), (y0, y1)) = bounds(&[line(vec![vec![(3.0, 1.2), (9.0, 1.5)]])], false);
        assert!(x0 <= 3.0 && x1 >= 9.0 && y0 < 1.2 && y1 > 1.5);
        let ((x0, x1), (y0, y1)) = bounds(&[line(vec![vec![(5.0, 1.3)]])], false);
        assert!(x0 < 5.0 && x1 > 5.0 && y0 < 1.3 && y1 > 1.3);
        let ((x0, x1), (y0, y1)) = bounds(&[line(vec![])], true);
        assert!(x0 < x1 && y0 == 0.0 && y1 > 0.0);
        let (_, (y0, _)) = bounds(&[line(vec![vec![(1.0, 4.0), (2.0, 6.0)]])], true);
        assert_eq!(y0, 0.0);
    }
}
