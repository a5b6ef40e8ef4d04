//! The Pareto chart: what each run pays in movement (x: slots re-loaded per
//! window, % of the model's slots) against what it gets (y: experienced
//! imbalance). A policy's runs are joined in interval order, so an
//! `--interval` sweep draws the policy's trade-off curve; each point is
//! labelled with its interval. EPLB, the baseline, is drawn thick with
//! square markers.

use plotters::prelude::*;

use super::legend::{self, Entry, Mark};
use super::palette;
use super::{draw_svg, DrawError, WIDTH};
use crate::record::Summary;

const PLOT_HEIGHT: u32 = 460;

/// One policy's curve: `(x %, y, interval label)` in interval order.
struct Curve {
    entry: Entry,
    eplb: bool,
    points: Vec<(f64, f64, String)>,
}

pub(super) fn chart(summary: &Summary) -> Result<String, DrawError> {
    let curves = curves(summary);
    let entries: Vec<Entry> = curves.iter().map(|c| c.entry.clone()).collect();
    let legend_height = legend::height(&entries, WIDTH);
    let ((x0, x1), (y0, y1)) = bounds(&curves);
    let x_format = |v: &f64| format!("{v:.1}");
    let y_format = |v: &f64| format!("{v:.3}");
    let (svg, ()) = draw_svg((WIDTH, PLOT_HEIGHT + legend_height), |root| {
        root.fill(&WHITE)?;
        let (plot, below) = root.split_vertically(PLOT_HEIGHT);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("% of slots re-loaded per window")
            .y_desc("experienced imbalance")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(238, 238, 238))
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .draw()?;
        // EPLB last: its curve stays on top where they cross.
        for curve in curves
            .iter()
            .filter(|c| !c.eplb)
            .chain(curves.iter().filter(|c| c.eplb))
        {
            let color = curve.entry.color;
            let xy = curve.points.iter().map(|(x, y, _)| (*x, *y));
            let width = if curve.eplb { 3 } else { 2 };
            chart.draw_series(LineSeries::new(xy.clone(), color.stroke_width(width)))?;
            let font = ("sans-serif", 14).into_font().color(&color);
            if curve.eplb {
                chart.draw_series(curve.points.iter().map(|(x, y, label)| {
                    EmptyElement::at((*x, *y))
                        + Rectangle::new([(-5, -5), (5, 5)], color.filled())
                        + Text::new(label.clone(), (7, -16), font.clone())
                }))?;
            } else {
                chart.draw_series(curve.points.iter().map(|(x, y, label)| {
                    EmptyElement::at((*x, *y))
                        + Circle::new((0, 0), 4, color.filled())
                        + Text::new(label.clone(), (6, 4), font.clone())
                }))?;
            }
        }
        legend::draw(&below, &entries)
    })?;
    Ok(svg)
}

/// One curve per policy name, in order of first appearance; runs without a
/// finite figure are left out.
fn curves(summary: &Summary) -> Vec<Curve> {
    let names = palette::policy_names(&summary.policies);
    names
        .iter()
        .map(|&name| {
            let mut runs: Vec<_> = summary
                .policies
                .iter()
                .filter(|r| r.name == name)
                .filter(|r| {
                    r.experienced_imbalance.is_finite() && r.reloaded_slots_per_window.is_finite()
                })
                .collect();
            runs.sort_by_key(|r| palette::interval_order(r.interval));
            let eplb = palette::is_eplb(name);
            let label = if eplb {
                format!("{name} (baseline)")
            } else {
                name.to_owned()
            };
            let color = palette::policy_hue(&names, name);
            Curve {
                entry: Entry {
                    label,
                    color,
                    mark: if eplb { Mark::Square } else { Mark::Circle },
                },
                eplb,
                points: runs
                    .iter()
                    .map(|r| {
                        let interval = r
                            .interval
                            .map_or_else(|| "never".to_owned(), |n| n.to_string());
                        (
                            r.reloaded_slots_per_window * 100.0,
                            r.experienced_imbalance,
                            interval,
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// x from 0 to a little past the busiest run; y around every point.
fn bounds(curves: &[Curve]) -> ((f64, f64), (f64, f64)) {
    let points = curves.iter().flat_map(|c| c.points.iter());
    let (mut x1, mut y0, mut y1) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y, _) in points {
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let x1 = if x1 > 0.0 { x1 * 1.08 } else { 1.0 };
    if !(y0.is_finite() && y1.is_finite()) {
        return ((0.0, x1), (1.0, 1.1));
    }
    let span = y1 - y0;
    let pad = if span > 1e-9 {
        span * 0.08
    } else {
        (y1.abs() * 0.01).max(0.01)
    };
    ((0.0, x1), (y0 - pad, y1 + pad))
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;

    #[test]
    fn a_policy_is_one_curve_in_interval_order() {
        let summary = super::super::tests::summary(vec![
            run("optimal", Some(4), 1.35, 0.02),
            run("eplb", None, 1.45, 0.0),
            run("optimal", Some(1), 1.30, 0.05),
            run("eplb", Some(1), 1.29, 0.80),
            run("optimal", None, f64::NAN, 0.0),
        ]);
        let curves = curves(&summary);
        assert_eq!(curves.len(), 2);
        assert!(!curves[0].eplb && curves[1].eplb);
        let labels: Vec<&str> = curves[0].points.iter().map(|p| p.2.as_str()).collect();
        assert_eq!(labels, ["1", "4"]);
        let labels: Vec<&str> = curves[1].points.iter().map(|p| p.2.as_str()).collect();
        assert_eq!(labels, ["1", "never"]);
        assert_eq!(curves[1].entry.label, "eplb (baseline)");
        assert!((curves[1].points[0].0 - 80.0).abs() < 1e-9);
        let ((x0, x1), (y0, y1)) = bounds(&curves);
        assert!(x0 == 0.0 && x1 > 80.0 && y0 < 1.29 && y1 > 1.45);
    }
}
