//! The report's text: the overview line and the summary table (one row per
//! run, the figures of `summary.json`), with every string from the data
//! escaped and every missing or non-finite figure shown as "—".

use std::fmt::Write;

use crate::record::{RunSummary, Summary};

/// What a figure that does not exist (`None`, NaN) reads as.
pub(super) const MISSING: &str = "—";

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` with `digits` decimals, or "—".
pub(super) fn fixed(value: f64, digits: usize) -> String {
    if value.is_finite() {
        format!("{value:.digits$}")
    } else {
        MISSING.to_owned()
    }
}

fn fixed_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| MISSING.to_owned(), |v| fixed(v, digits))
}

/// A fraction as a percentage with two decimals.
fn percent(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.2} %", fraction * 100.0)
    } else {
        MISSING.to_owned()
    }
}

/// Bytes in decimal units, three significant digits.
fn bytes(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return MISSING.to_owned();
    }
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut scaled = value;
    let mut unit = 0;
    while scaled >= 1000.0 && unit < UNITS.len() - 1 {
        scaled /= 1000.0;
        unit += 1;
    }
    let digits = if unit == 0 || scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$} {}", UNITS[unit])
}

/// The line under the title: how much history, how big a model.
pub(super) fn overview(summary: &Summary) -> String {
    let mut text = format!(
        "{} windows replayed ({} scored: each against the plan made from the windows before it); \
         {} runs; {} slots in the model",
        summary.windows,
        summary.scored_windows,
        summary.policies.len(),
        summary.total_slots,
    );
    if let Some(expert) = summary.expert_bytes {
        let _ = write!(text, "; {} per expert", bytes(expert as f64));
    }
    if let Some(bandwidth) = summary.link_bandwidth {
        let _ = write!(text, "; {}/s into each GPU", bytes(bandwidth));
    }
    format!("<p class=\"overview\">{}.</p>\n", escape(&text))
}

/// The summary table, one row per run in summary order.
pub(super) fn summary_table(summary: &Summary) -> String {
    let runs = &summary.policies;
    let with_bytes =
        summary.expert_bytes.is_some() || runs.iter().any(|r| r.bytes_per_window.is_some());
    let with_eplb = runs.iter().any(|r| r.eplb_at_equal_budget.is_some());
    let with_transfers = runs.iter().any(|r| r.transfers_per_token.is_some());
    let mut html = String::from("<section id=\"summary\">\n<h2>Summary</h2>\n");
    if runs.is_empty() {
        html.push_str("<p class=\"note\">No policy was replayed.</p>\n</section>\n");
        return html;
    }
    html.push_str("<div class=\"table-wrap\"><table>\n<thead><tr>");
    let mut headers = vec![
        ("name", "policy"),
        ("", "interval"),
        ("", "experienced imbalance"),
        ("", "with optimal routing"),
        ("", "oracle"),
        ("", "re-loaded slots / window"),
    ];
    if with_bytes {
        headers.push(("", "bytes / window"));
    }
    headers.push(("", "plan ms"));
    if with_transfers {
        headers.push(("", "cross-node transfers / token"));
    }
    if with_eplb {
        headers.push(("", "EPLB at equal budget"));
        headers.push(("", "vs EPLB"));
    }
    for (class, header) in headers {
        if class.is_empty() {
            let _ = write!(html, "<th>{}</th>", escape(header));
        } else {
            let _ = write!(html, "<th class=\"{class}\">{}</th>", escape(header));
        }
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for run in runs {
        let interval = run
            .interval
            .map_or_else(|| "never".to_owned(), |n| n.to_string());
        let _ = write!(
            html,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&run.name),
            interval,
            fixed(run.experienced_imbalance, 4),
            fixed(run.experienced_imbalance_optimal_routing, 4),
            fixed(run.oracle_imbalance, 4),
            percent(run.reloaded_slots_per_window),
        );
        if with_bytes {
            let _ = write!(
                html,
                "<td>{}</td>",
                run.bytes_per_window
                    .map_or_else(|| MISSING.to_owned(), bytes)
            );
        }
        let _ = write!(html, "<td>{}</td>", fixed(run.plan_ms, 1));
        if with_transfers {
            let _ = write!(html, "<td>{}</td>", transfers(run));
        }
        if with_eplb {
            let ratio = run.vs_eplb_at_equal_budget.filter(|r| r.is_finite());
            let class = match ratio {
                Some(r) if r < 1.0 => " class=\"better\"",
                Some(r) if r > 1.0 => " class=\"worse\"",
                _ => "",
            };
            let _ = write!(
                html,
                "<td>{}</td><td{class}>{}</td>",
                fixed_opt(run.eplb_at_equal_budget, 4),
                fixed_opt(ratio, 3),
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table></div>\n");
    if with_eplb {
        html.push_str(
            "<p class=\"note\">EPLB at equal budget: EPLB's experienced imbalance at the run's \
             re-load rate, interpolated over EPLB's interval sweep; vs EPLB below 1 is better.</p>\n",
        );
    }
    if with_transfers {
        html.push_str(
            "<p class=\"note\">Cross-node transfers per token and layer, read off the windows' \
             co-visit counts: the estimate, or the provable range where there is none; \
             &le; for co-visit plans (counted at the home nodes, which co-visit replicas only \
             lower).</p>\n",
        );
    }
    html.push_str("</section>\n");
    html
}

/// A run's cross-node transfers per token for the table.
fn transfers(run: &RunSummary) -> String {
    let Some(t) = run.transfers_per_token else {
        return MISSING.to_owned();
    };
    let figure = match t.estimate {
        Some(estimate) => fixed(estimate, 3),
        None if t.is_exact() => fixed(t.low, 3),
        None => format!("{}–{}", fixed(t.low, 3), fixed(t.high, 3)),
    };
    if run.covisit_served.is_some() {
        format!("&le; {figure}")
    } else {
        figure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn missing_figures_read_as_a_dash() {
        assert_eq!(fixed(f64::NAN, 4), MISSING);
        assert_eq!(fixed(f64::INFINITY, 4), MISSING);
        assert_eq!(fixed(1.23456, 3), "1.235");
        assert_eq!(percent(f64::NAN), MISSING);
        assert_eq!(percent(0.0441), "4.41 %");
        assert_eq!(fixed_opt(None, 2), MISSING);
    }

    #[test]
    fn bytes_use_decimal_units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1_500.0), "1.50 kB");
        assert_eq!(bytes(44_040_192.0), "44.0 MB");
        assert_eq!(bytes(3.2e12), "3.20 TB");
        assert_eq!(bytes(f64::NAN), MISSING);
    }
}
