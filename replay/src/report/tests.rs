//! Whole-page checks of `render_html` (each chart's own logic is tested
//! beside it), plus the fixtures those tests share.

use super::render_html;
use crate::record::{Hotspot, ReportData, RunSummary, Series, Summary};

pub(super) fn run(
    name: &str,
    interval: Option<u32>,
    experienced: f64,
    reloaded: f64,
) -> RunSummary {
    RunSummary {
        name: name.to_owned(),
        interval,
        experienced_imbalance: experienced,
        experienced_imbalance_optimal_routing: experienced - 0.02,
        oracle_imbalance: 1.1,
        reloaded_slots_per_window: reloaded,
        bytes_per_window: None,
        move_seconds_per_window: None,
        plans: 10,
        replans: 5,
        plan_ms: 12.5,
        plan_ms_max: 30.0,
        worst_window: Some(3),
        worst_imbalance: Some(experienced + 0.1),
        eplb_at_equal_budget: None,
        vs_eplb_at_equal_budget: None,
        covisit_served: None,
        transfers_per_token: None,
        transfers_known_windows: 0,
    }
}

pub(super) fn summary(policies: Vec<RunSummary>) -> Summary {
    Summary {
        windows: 100,
        scored_windows: 99,
        total_slots: 1000,
        expert_bytes: None,
        link_bandwidth: None,
        policies,
    }
}

fn series(points: usize, at: impl Fn(usize) -> f64) -> Series {
    let mut s = Series::default();
    for i in 0..points {
        s.push(i as u64 + 1, at(i));
    }
    s
}

/// `runs` runs over `points` windows, a `layers × gpus` hottest window.
fn data(runs: usize, points: usize, layers: usize, gpus: usize) -> ReportData {
    let policies: Vec<RunSummary> = (0..runs)
        .map(|i| {
            let name = ["service", "eplb", "optimal:previous", "greedy"][i % 4];
            let interval = [Some(1), Some(2), Some(4), None][(i / 4) % 4];
            run(name, interval, 1.2 + 0.01 * i as f64, 0.3 / (1 + i) as f64)
        })
        .collect();
    let experienced = (0..runs)
        .map(|r| series(points, |i| 1.25 + 0.1 * ((i * (r + 3)) as f64 * 0.01).sin()))
        .collect();
    let reloads = (0..runs)
        .map(|r| series(points / (1 + r % 4), |i| (i % 50) as f64))
        .collect();
    let hottest = (layers > 0).then(|| Hotspot {
        run: 0,
        window: 42,
        model_imbalance: 1.52,
        gpu_load: (0..layers)
            .map(|l| {
                (0..gpus)
                    .map(|g| 0.6 + ((l * 31 + g * 17) % 97) as f64 / 97.0)
                    .collect()
            })
            .collect(),
    });
    ReportData {
        summary: summary(policies),
        experienced,
        reloads,
        oracle: series(points, |i| 1.05 + 0.01 * (i % 7) as f64),
        hottest,
    }
}

/// The text between `<figure id="{id}"` and its `</figure>`.
fn figure<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let start = html.find(&format!("<figure id=\"{id}\""))?;
    let end = start + html[start..].find("</figure>")?;
    Some(&html[start..end])
}

/// Every `name="value"` of every tag, for attributes that hold numbers.
fn numeric_attributes(html: &str) -> Vec<(String, String)> {
    const NUMERIC: [&str; 17] = [
        "x",
        "y",
        "x1",
        "y1",
        "x2",
        "y2",
        "cx",
        "cy",
        "r",
        "width",
        "height",
        "points",
        "d",
        "viewBox",
        "font-size",
        "stroke-width",
        "opacity",
    ];
    let mut found = Vec::new();
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        let mut rest = tag;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].rsplit(' ').next().unwrap_or("").to_owned();
            let value_start = eq + 2;
            let Some(len) = rest[value_start..].find('"') else {
                break;
            };
            let value = rest[value_start..value_start + len].to_owned();
            if NUMERIC.contains(&name.as_str()) {
                found.push((name, value));
            }
            rest = &rest[value_start + len + 1..];
        }
    }
    found
}

#[test]
fn every_chart_is_an_svg_in_its_figure() {
    let html = render_html(&data(6, 200, 4, 8));
    assert!(html.starts_with("<!DOCTYPE html>"));
    for id in ["experienced", "reloads", "pareto", "heatmap"] {
        let figure = figure(&html, id).unwrap_or_else(|| panic!("no figure {id}"));
        assert!(figure.contains("<svg"), "{id} has no svg");
        assert!(figure.contains("viewBox"), "{id}");
        assert!(figure.contains("<figcaption>"), "{id}");
        assert!(
            figure.contains("<polyline") || figure.contains("<path") || figure.contains("<rect"),
            "{id} draws nothing"
        );
    }
    assert!(figure(&html, "experienced").unwrap().contains("oracle"));
    assert!(figure(&html, "heatmap")
        .unwrap()
        .contains("Hottest window: service every 1, window 42"));
    assert!(html.contains("<section id=\"summary\">"));
    assert!(html.contains("100 windows replayed (99 scored"));
}

#[test]
fn the_page_fetches_nothing() {
    let html = render_html(&data(4, 50, 3, 4));
    for outside in ["src=", "<link", "url(", "@import", "href="] {
        assert!(!html.contains(outside), "{outside}");
    }
    let without_svg_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_svg_namespace.contains("http"));
    assert_eq!(html.matches("<script>").count(), 1);
}

#[test]
fn numeric_attributes_are_finite_numbers() {
    let mut data = data(5, 300, 6, 10);
    data.experienced[1].points[7].value = f64::NAN;
    data.experienced[2] = series(3, |_| f64::INFINITY);
    data.summary.policies[3].experienced_imbalance = f64::NAN;
    data.hottest.as_mut().unwrap().gpu_load[2][3] = f64::NAN;
    let html = render_html(&data);
    let attributes = numeric_attributes(&html);
    assert!(attributes.len() > 100);
    for (name, value) in attributes {
        let lower = value.to_ascii_lowercase();
        assert!(
            !lower.contains("nan") && !lower.contains("inf"),
            "{name}=\"{value}\""
        );
    }
}

#[test]
fn text_from_the_data_is_escaped() {
    let mut data = data(3, 20, 2, 2);
    let evil = "optimal:<script>alert(\"x\")</script>&'";
    data.summary.policies[0].name = evil.to_owned();
    data.summary.policies[1].name = evil.to_owned();
    let html = render_html(&data);
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("alert(\"x\")"));
    assert!(html.contains("optimal:&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
    // In the charts' legends and the heat map's title, escaped by the SVG
    // backend.
    assert!(html.contains("optimal:&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&apos;"));
}

#[test]
fn missing_figures_read_as_a_dash_in_the_table() {
    let mut data = data(3, 20, 2, 2);
    let run = &mut data.summary.policies[2];
    run.experienced_imbalance = f64::NAN;
    run.eplb_at_equal_budget = Some(1.3);
    run.vs_eplb_at_equal_budget = Some(f64::NAN);
    data.summary.policies[0].eplb_at_equal_budget = Some(1.3);
    data.summary.policies[0].vs_eplb_at_equal_budget = Some(0.95);
    data.summary.expert_bytes = Some(44_040_192);
    data.summary.policies[0].bytes_per_window = Some(2.2e9);
    let html = render_html(&data);
    let table = &html[html.find("<table>").unwrap()..html.find("</table>").unwrap()];
    assert!(table.contains("<th>EPLB at equal budget</th>"));
    assert!(table.contains("<th>bytes / window</th>"));
    assert!(table.contains("<td>2.20 GB</td>"));
    assert!(table.contains("<td class=\"better\">0.950</td>"));
    let third = table.split("<tr>").nth(4).unwrap();
    assert!(
        third.starts_with("<td class=\"name\">optimal:previous</td>"),
        "{third}"
    );
    assert_eq!(third.matches("<td>—</td>").count(), 3, "{third}");
    assert!(!table.contains("NaN"));
}

#[test]
fn one_window_and_no_runs_still_make_a_page() {
    let mut one = data(3, 0, 0, 0);
    one.summary.windows = 1;
    one.summary.scored_windows = 0;
    for run in &mut one.summary.policies {
        run.experienced_imbalance = f64::NAN;
        run.experienced_imbalance_optimal_routing = f64::NAN;
        run.oracle_imbalance = f64::NAN;
    }
    let html = render_html(&one);
    for id in ["experienced", "reloads", "pareto"] {
        assert!(figure(&html, id).unwrap().contains("<svg"), "{id}");
    }
    assert!(figure(&html, "heatmap").is_none());
    assert!(html.contains("id=\"heatmap-none\""));
    assert!(!html.contains("NaN"));

    let mut none = data(0, 0, 0, 0);
    none.summary.windows = 0;
    let html = render_html(&none);
    assert!(html.contains("No policy was replayed"));
    assert!(figure(&html, "pareto").unwrap().contains("<svg"));
}

#[test]
fn an_empty_heat_map_is_drawn_without_cells() {
    let mut data = data(2, 10, 1, 1);
    data.hottest.as_mut().unwrap().gpu_load = Vec::new();
    let html = render_html(&data);
    assert!(figure(&html, "heatmap").unwrap().contains("<svg"));
}

#[test]
fn twenty_long_runs_and_a_decode_heat_map_stay_under_two_megabytes() {
    let html = render_html(&data(20, 2048, 58, 320));
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    let heatmap = figure(&html, "heatmap").unwrap();
    // One path per colour step, not one element per cell.
    assert!(
        heatmap.matches("<path").count() <= 33,
        "{}",
        heatmap.matches("<path").count()
    );
    let cells: usize = heatmap
        .split(" d=\"")
        .skip(1)
        .map(|d| d.split('"').next().unwrap().matches('z').count())
        .sum();
    assert_eq!(cells, 58 * 320);
}

#[test]
fn hundreds_of_runs_get_a_legend_that_grows_down() {
    let small = render_html(&data(8, 30, 2, 2));
    let large = render_html(&data(300, 30, 2, 2));
    let height = |html: &str, id: &str| -> u32 {
        let figure = figure(html, id).unwrap();
        let at = figure.find("height=\"").unwrap() + 8;
        figure[at..].split('"').next().unwrap().parse().unwrap()
    };
    assert!(height(&large, "experienced") > height(&small, "experienced") + 500);
    // Every run has its legend entry (labels repeat: four policies at four
    // intervals).
    assert!(figure(&large, "experienced")
        .unwrap()
        .contains("greedy never"));
    assert!(large.len() < 3_000_000, "{}", large.len());
}

#[test]
fn cross_node_transfers_get_a_column_when_known() {
    let mut data = data(3, 20, 2, 2);
    let html = render_html(&data);
    assert!(!html.contains("cross-node transfers / token"));
    let range = |low, high, estimate| crate::TrafficRange {
        low,
        high,
        estimate,
    };
    let runs = &mut data.summary.policies;
    runs[0].transfers_per_token = Some(range(2.2, 2.6, Some(2.4491)));
    runs[1].transfers_per_token = Some(range(2.1, 2.4, Some(2.3226)));
    runs[1].covisit_served = Some(0.16);
    let html = render_html(&data);
    let table = &html[html.find("<table>").unwrap()..html.find("</table>").unwrap()];
    assert!(table.contains("<th>cross-node transfers / token</th>"));
    assert!(table.contains("<td>2.449</td>"), "{table}");
    assert!(table.contains("<td>&le; 2.323</td>"), "{table}");
    // The third run had no counts.
    let third = table.split("<tr>").nth(4).unwrap();
    assert_eq!(third.matches("<td>—</td>").count(), 1, "{third}");
}
