//! The heat map of the hottest window: each cell one layer (y) on one GPU
//! (x), coloured by its load over the layer's ideal on a diverging scale
//! (white at 1.0, blue below, red above) with a colour bar beside it.
//!
//! A decode topology has 58 × 320 cells; as one `<rect>` each, plotters
//! would write 1.5 MB. So plotters draws the frame (title, axes, colour bar)
//! and maps every cell to pixels, and the cells are written as one `<path>`
//! per colour step (about 16 bytes a cell), laid under the frame.

use std::collections::BTreeMap;
use std::fmt::Write;

use plotters::chart::LabelAreaPosition;
use plotters::prelude::*;

use super::table::{escape, fixed};
use super::{draw_svg, DrawError, WIDTH};
use crate::record::Hotspot;

/// Colour steps on each side of 1.0.
const STEPS: i32 = 16;
const NEUTRAL: RGBColor = RGBColor(247, 247, 247);
const COLD: RGBColor = RGBColor(33, 102, 172);
const HOT: RGBColor = RGBColor(178, 24, 43);
/// Cells with no finite load.
const MISSING: RGBColor = RGBColor(160, 160, 160);
/// The colour bar's share of the width.
const BAR_WIDTH: u32 = 120;

/// The colour scale: white at 1.0 (the layer's ideal), [`STEPS`] steps of
/// blue down to `low` and of red up to `high`. The two sides may differ in
/// width: a GPU can carry three times its share but never less than none.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    low: f64,
    high: f64,
}

/// The narrowest a side of the scale gets (±5 %).
const MIN_SIDE: f64 = 0.05;

impl Scale {
    /// Wide enough for every finite load.
    fn of(hot: &Hotspot) -> Scale {
        let finite = hot
            .gpu_load
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite());
        let (low, high) = finite.fold((1.0 - MIN_SIDE, 1.0 + MIN_SIDE), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        Scale {
            low: low.max(0.0),
            high,
        }
    }

    /// The load one step spans on the side of `step`.
    fn step_width(&self, step: i32) -> f64 {
        let side = if step < 0 {
            1.0 - self.low
        } else {
            self.high - 1.0
        };
        side / f64::from(STEPS)
    }

    /// The colour step of a load: `-STEPS..=STEPS`, `None` if not finite.
    fn step(&self, load: f64) -> Option<i32> {
        if !load.is_finite() {
            return None;
        }
        let side = if load < 1.0 { -1 } else { 1 };
        let steps = ((load - 1.0) / self.step_width(side)).round();
        Some(steps.clamp(-f64::from(STEPS), f64::from(STEPS)) as i32)
    }

    /// The loads a step stands for, from its middle half a step each way
    /// (step 0 reaches half a step into each side).
    fn extent(&self, step: i32) -> (f64, f64) {
        let middle = 1.0 + f64::from(step) * self.step_width(step);
        let below = if step > 0 {
            self.step_width(1)
        } else {
            self.step_width(-1)
        };
        let above = if step < 0 {
            self.step_width(-1)
        } else {
            self.step_width(1)
        };
        (middle - below / 2.0, middle + above / 2.0)
    }
}

fn color(step: Option<i32>) -> RGBColor {
    let Some(step) = step else {
        return MISSING;
    };
    let t = f64::from(step.abs()) / f64::from(STEPS);
    let end = if step < 0 { COLD } else { HOT };
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(
        mix(NEUTRAL.0, end.0),
        mix(NEUTRAL.1, end.1),
        mix(NEUTRAL.2, end.2),
    )
}

/// The heat map of `hot`, titled with `run` (the run's label).
pub(super) fn chart(hot: &Hotspot, run: &str) -> Result<String, DrawError> {
    let layers = hot.gpu_load.len();
    let gpus = hot.gpu_load.iter().map(Vec::len).max().unwrap_or(0);
    let scale = Scale::of(hot);
    let plot_height = (layers as u32 * 8).clamp(160, 480);
    let height = plot_height + 44 + 40 + 20;
    let title = format!(
        "Hottest window: {run}, window {} (model imbalance {})",
        hot.window,
        fixed(hot.model_imbalance, 4)
    );
    let y_format = |v: &f64| format!("{v:.2}");
    // Cells are centred on whole numbers; ticks elsewhere stay unlabelled.
    let count_format = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let (svg, cells) = draw_svg((WIDTH, height), |root| {
        let area = root.titled(&title, ("sans-serif", 20))?;
        let (main, bar) = area.split_horizontally(WIDTH - BAR_WIDTH);
        let mut chart = ChartBuilder::on(&main)
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                -0.5..gpus.max(1) as f64 - 0.5,
                -0.5..layers.max(1) as f64 - 0.5,
            )?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(gpus.clamp(1, 12))
            .y_labels(layers.clamp(1, 12))
            .x_desc("GPU")
            .y_desc("layer")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .x_label_formatter(&count_format)
            .y_label_formatter(&count_format)
            .draw()?;
        let cells = cell_paths(hot, scale, |x, y| chart.backend_coord(&(x, y)));

        let (bottom, _) = scale.extent(-STEPS);
        let (_, top) = scale.extent(STEPS);
        let mut bar = ChartBuilder::on(&bar)
            .margin(10)
            .margin_left(16)
            .x_label_area_size(44)
            .set_label_area_size(LabelAreaPosition::Right, 58)
            .build_cartesian_2d(0.0..1.0, bottom..top)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .label_style(("sans-serif", 14))
            .y_label_formatter(&y_format)
            .draw()?;
        bar.draw_series((-STEPS..=STEPS).map(|step| {
            let (from, to) = scale.extent(step);
            Rectangle::new([(0.0, from), (1.0, to)], color(Some(step)).filled())
        }))?;
        Ok(cells)
    })?;
    Ok(under_frame(svg, &cells))
}

/// Every cell as a rectangle in pixels, one `<path>` per colour step (with
/// a `<title>` that names the step's loads); `to_pixels` maps chart
/// coordinates to the SVG's. Cell (GPU g, layer l) is centred on (g, l).
fn cell_paths(hot: &Hotspot, scale: Scale, to_pixels: impl Fn(f64, f64) -> (i32, i32)) -> String {
    let mut by_step: BTreeMap<Option<i32>, String> = BTreeMap::new();
    for (layer, row) in hot.gpu_load.iter().enumerate() {
        for (gpu, &load) in row.iter().enumerate() {
            let (x, y) = (gpu as f64, layer as f64);
            let (left, top) = to_pixels(x - 0.5, y + 0.5);
            let (right, bottom) = to_pixels(x + 0.5, y - 0.5);
            let (w, h) = ((right - left).max(1), (bottom - top).max(1));
            let d = by_step.entry(scale.step(load)).or_default();
            let _ = write!(d, "M{left} {top}h{w}v{h}h-{w}z");
        }
    }
    let mut out = String::new();
    for (step, d) in by_step {
        let c = color(step);
        let what = match step {
            None => "no load recorded".to_owned(),
            Some(step) => {
                let (from, to) = scale.extent(step);
                format!("load {:.3} to {:.3} of ideal", from.max(0.0), to)
            }
        };
        let _ = writeln!(
            out,
            "<path fill=\"#{:02x}{:02x}{:02x}\" d=\"{d}\"><title>{}</title></path>",
            c.0,
            c.1,
            c.2,
            escape(&what)
        );
    }
    out
}

/// `svg` with `cells` laid first, under everything plotters drew (the frame
/// never paints over the plot: no background, no mesh).
fn under_frame(svg: String, cells: &str) -> String {
    match svg.find(">\n") {
        Some(end) => {
            let mut out = String::with_capacity(svg.len() + cells.len());
            out.push_str(&svg[..end + 2]);
            out.push_str(cells);
            out.push_str(&svg[end + 2..]);
            out
        }
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hotspot(gpu_load: Vec<Vec<f64>>) -> Hotspot {
        Hotspot {
            run: 0,
            window: 7,
            model_imbalance: 1.4,
            gpu_load,
        }
    }

    #[test]
    fn the_scale_is_white_at_one_and_saturates_at_the_extremes() {
        let hot = hotspot(vec![vec![0.6, 1.0, 2.6], vec![f64::NAN, 1.2, 0.9]]);
        let scale = Scale::of(&hot);
        assert_eq!(
            scale,
            Scale {
                low: 0.6,
                high: 2.6
            }
        );
        assert_eq!(scale.step(1.0), Some(0));
        assert_eq!(scale.step(2.6), Some(STEPS));
        assert_eq!(scale.step(1.8), Some(STEPS / 2));
        assert_eq!(scale.step(0.6), Some(-STEPS));
        assert_eq!(scale.step(0.8), Some(-STEPS / 2));
        assert_eq!(scale.step(9.0), Some(STEPS));
        assert_eq!(scale.step(f64::NAN), None);
        // The steps tile the scale without gaps.
        for step in -STEPS..STEPS {
            assert!(
                (scale.extent(step).1 - scale.extent(step + 1).0).abs() < 1e-12,
                "{step}"
            );
        }
        let (from, to) = scale.extent(0);
        assert!(
            (from - (1.0 - 0.4 / 32.0)).abs() < 1e-12 && (to - (1.0 + 1.6 / 32.0)).abs() < 1e-12
        );
        assert_eq!(color(Some(0)), NEUTRAL);
        assert_eq!(color(Some(STEPS)), HOT);
        assert_eq!(color(Some(-STEPS)), COLD);
        assert_eq!(color(None), MISSING);
        assert_eq!(
            Scale::of(&hotspot(vec![vec![1.0]])),
            Scale {
                low: 0.95,
                high: 1.05
            }
        );
        assert_eq!(Scale::of(&hotspot(vec![vec![-1.0, 1.0]])).low, 0.0);
    }

    #[test]
    fn cells_are_one_path_per_colour_step_covering_the_grid() {
        let hot = hotspot(vec![vec![1.0, 1.4], vec![1.4, f64::NAN]]);
        let paths = cell_paths(&hot, Scale::of(&hot), |x, y| {
            (((x + 0.5) * 10.0) as i32, (100.0 - (y + 0.5) * 10.0) as i32)
        });
        assert_eq!(paths.matches("<path").count(), 3);
        // Layer 0 is at the bottom: GPU 1 of layer 0 spans x 10..20, y 90..100.
        assert!(paths.contains("M10 90h10v10h-10z"), "{paths}");
        assert!(
            paths.contains("M10 90h10v10h-10zM0 80h10v10h-10z"),
            "{paths}"
        );
        assert!(paths.contains("no load recorded"));
    }

    #[test]
    fn cells_go_under_the_frame() {
        let svg = "<svg width=\"1\">\n<text>x</text>\n</svg>\n".to_owned();
        assert_eq!(
            under_frame(svg, "<path d=\"M0 0h1v1h-1z\"/>\n"),
            "<svg width=\"1\">\n<path d=\"M0 0h1v1h-1z\"/>\n<text>x</text>\n</svg>\n"
        );
    }
}
