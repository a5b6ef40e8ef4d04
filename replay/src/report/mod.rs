//! `report.html`: one self-contained page (inline CSS, inline `<svg>`, one
//! small inline script; nothing fetched) that shows a replay's
//! [`ReportData`].
//!
//! The page holds the summary table and four charts, each an `<svg>` in a
//! `<figure>` with an id:
//!
//! - `experienced`: experienced imbalance over time, one line per run, the
//!   oracle dashed (`timeline`);
//! - `reloads`: slots re-loaded per re-plan over time, as a share of the
//!   model's slots (`timeline`);
//! - `pareto`: experienced imbalance against slots re-loaded per window, one
//!   curve per policy over its interval sweep (`pareto`);
//! - `heatmap`: the hottest window's load per layer and GPU (`heatmap`).
//!
//! Charts are drawn with `plotters` into its SVG backend, without font
//! files: plotters lays labels out by a size estimate and writes them as
//! `<text>`, which the browser draws with whatever sans-serif font it has.
//! A run keeps the same label and colour in every chart (`palette`).
//!
//! The inline script measures every chart once the page is laid out and
//! marks each figure that drew something visible (`data-rendered`, the count
//! of drawn shapes; `data-text`, of labels with a width): the check a
//! headless browser runs in `tests/report_chromium.rs`.
//!
//! [`render_html`] is pure: it returns the page, and the caller writes it.

mod heatmap;
mod legend;
mod palette;
mod pareto;
mod table;
mod timeline;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::record::ReportData;
use palette::RunStyle;
use table::escape;

/// Every chart's width in pixels (the page scales it down on narrow
/// screens: the SVGs carry a `viewBox`).
const WIDTH: u32 = 960;

/// The drawing surface every chart draws on: an SVG document in a string.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What drawing a chart can fail with (in practice, a layout that does not
/// fit; the SVG backend writes into a string and cannot fail otherwise).
type DrawError = DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>;

/// The whole `report.html` for one replay.
pub fn render_html(data: &ReportData) -> String {
    let styles = palette::run_styles(&data.summary.policies);
    let mut page = String::with_capacity(256 * 1024);
    page.push_str(HEAD);
    page.push_str("<main>\n<h1>Ballast replay</h1>\n");
    page.push_str(&table::overview(&data.summary));
    page.push_str(&table::summary_table(&data.summary));
    page.push_str(&figure(
        "experienced",
        timeline::experienced(data, &styles),
        "Experienced imbalance over time: each window scored with the plan \
         made from earlier windows only, one line per run; dashed, the oracle \
         (each window's own bound).",
    ));
    page.push_str(&figure(
        "reloads",
        timeline::reloads(data, &styles),
        "Slots re-loaded by each re-plan, as a share of the model's slots \
         (averaged over neighbouring re-plans in long histories).",
    ));
    page.push_str(&figure(
        "pareto",
        pareto::chart(&data.summary),
        "Experienced imbalance against slots re-loaded per window: each \
         policy's runs joined in interval order, each point labelled with its \
         interval; EPLB thick, with square markers.",
    ));
    page.push_str(&heatmap_figure(data, &styles));
    page.push_str("</main>\n");
    page.push_str(SCRIPT);
    page.push_str("</body>\n</html>\n");
    page
}

/// The heat map's figure, or a note when no window was scored.
fn heatmap_figure(data: &ReportData, styles: &[RunStyle]) -> String {
    match &data.hottest {
        Some(hot) => {
            let run = styles
                .get(hot.run)
                .map_or_else(|| format!("run {}", hot.run), |s| s.label.clone());
            figure(
                "heatmap",
                heatmap::chart(hot, &run),
                &format!(
                    "Load per layer and GPU in the hottest window (window {}, \
                     model imbalance {}) under {run}; 1.0 is the layer's ideal.",
                    hot.window,
                    table::fixed(hot.model_imbalance, 4),
                ),
            )
        }
        None => "<p class=\"note\" id=\"heatmap-none\">No heat map: no window was \
                 scored (a replay needs two windows).</p>\n"
            .to_owned(),
    }
}

/// One chart in its `<figure>`; a chart that could not be drawn leaves a
/// note in its place.
fn figure(id: &str, svg: Result<String, DrawError>, caption: &str) -> String {
    let body = match svg {
        Ok(svg) => svg,
        Err(error) => format!(
            "<p class=\"note\">This chart could not be drawn: {}</p>\n",
            escape(&error.to_string())
        ),
    };
    format!(
        "<figure id=\"{id}\">\n{body}<figcaption>{}</figcaption>\n</figure>\n",
        escape(caption)
    )
}

/// Draws one SVG document of `size` pixels; `draw` may hand back a value
/// computed from the chart's coordinates.
fn draw_svg<T>(
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Result<T, DrawError>,
) -> Result<(String, T), DrawError> {
    let mut svg = String::new();
    let value = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let value = draw(&root)?;
        root.present()?;
        value
    };
    Ok((svg, value))
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ballast replay</title>
<style>
body { margin: 0; background: #f6f6f4; color: #222; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 1.5em 1em 3em; }
h1 { font-size: 1.6em; margin: 0 0 .3em; }
h2 { font-size: 1.2em; margin: 1.6em 0 .5em; }
.overview { color: #444; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { padding: .3em .5em; border-bottom: 1px solid #ddd; text-align: right; }
td { white-space: nowrap; }
th { background: #eee; font-weight: 600; vertical-align: bottom; }
td.name, th.name { text-align: left; }
td.better { color: #1a7f37; font-weight: 600; }
td.worse { color: #b3261e; }
figure { margin: 1.6em 0; background: #fff; padding: .6em; border: 1px solid #ddd; }
figure svg { display: block; max-width: 100%; height: auto; background: #fff; }
figcaption { color: #555; font-size: .9em; margin-top: .4em; }
.note { color: #666; font-style: italic; }
</style>
</head>
<body>
"#;

/// Marks each figure whose chart drew something visible: `data-rendered`
/// counts shapes with a non-empty box, `data-text` labels with a width;
/// `data-charts-rendered` on `<body>` counts the figures marked.
const SCRIPT: &str = r#"<script>
(function () {
  var marked = 0;
  document.querySelectorAll("figure[id]").forEach(function (figure) {
    var svg = figure.querySelector("svg");
    if (!svg) { return; }
    var box = svg.getBoundingClientRect();
    var shapes = 0, labels = 0;
    svg.querySelectorAll("polyline, path, rect, circle, line, polygon").forEach(function (shape) {
      var b = shape.getBBox();
      if (b.width > 0 || b.height > 0) { shapes += 1; }
    });
    svg.querySelectorAll("text").forEach(function (text) {
      if (text.getComputedTextLength() > 0) { labels += 1; }
    });
    if (box.width > 0 && box.height > 0 && shapes > 0) {
      figure.setAttribute("data-rendered", String(shapes));
      figure.setAttribute("data-text", String(labels));
      marked += 1;
    }
  });
  document.body.setAttribute("data-charts-rendered", String(marked));
})();
</script>
"#;

#[cfg(test)]
mod tests;
