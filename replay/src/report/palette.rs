//! How each run looks, the same in every chart: its label (`optimal every
//! 4`) and colour. A policy owns a hue; its runs shade from dark (the
//! shortest interval) to light (`never`), so a sweep reads as one family
//! even with hundreds of runs. EPLB, the baseline, takes the reds, which
//! no other policy uses.

use plotters::style::RGBColor;

use crate::record::RunSummary;

/// One run's label and colour.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunStyle {
    pub label: String,
    pub color: RGBColor,
    pub eplb: bool,
}

/// Hues of the policies other than EPLB, in order of first appearance
/// (the Tableau 10 colours without red).
const HUES: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// EPLB's hues (a second EPLB policy, e.g. `eplb:mode=global`, gets the
/// second).
const EPLB_HUES: [RGBColor; 2] = [RGBColor(200, 30, 45), RGBColor(130, 20, 70)];

/// The oracle's colour (drawn dashed).
pub(super) const ORACLE: RGBColor = RGBColor(20, 20, 20);

/// The lightest shade a sweep reaches: this share of white mixed in.
const LIGHTEST: f64 = 0.6;

/// True for DeepSeek's EPLB (`eplb`, `eplb:mode=...`): the policy name is
/// the `--policy` argument.
pub(super) fn is_eplb(name: &str) -> bool {
    name == "eplb" || name.starts_with("eplb:")
}

/// `optimal:previous every 4`, `static never`.
pub(super) fn run_label(run: &RunSummary) -> String {
    match run.interval {
        Some(n) => format!("{} every {n}", run.name),
        None => format!("{} never", run.name),
    }
}

/// Sort key of an interval: shortest first, `never` last.
pub(super) fn interval_order(interval: Option<u32>) -> u64 {
    interval.map_or(u64::MAX, u64::from)
}

/// The distinct policy names, in order of first appearance.
pub(super) fn policy_names(runs: &[RunSummary]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        if !names.contains(&run.name.as_str()) {
            names.push(&run.name);
        }
    }
    names
}

/// A policy's own colour (its darkest shade).
pub(super) fn policy_hue(names: &[&str], name: &str) -> RGBColor {
    let eplb = is_eplb(name);
    let rank = names
        .iter()
        .filter(|n| is_eplb(n) == eplb)
        .position(|n| *n == name)
        .unwrap_or(0);
    if eplb {
        EPLB_HUES[rank % EPLB_HUES.len()]
    } else {
        HUES[rank % HUES.len()]
    }
}

/// Every run's style, in summary order.
pub(super) fn run_styles(runs: &[RunSummary]) -> Vec<RunStyle> {
    let names = policy_names(runs);
    runs.iter()
        .map(|run| {
            let hue = policy_hue(&names, &run.name);
            let mut siblings: Vec<u64> = runs
                .iter()
                .filter(|r| r.name == run.name)
                .map(|r| interval_order(r.interval))
                .collect();
            siblings.sort_unstable();
            siblings.dedup();
            let rank = siblings
                .iter()
                .position(|&i| i == interval_order(run.interval))
                .unwrap_or(0);
            let share = if siblings.len() > 1 {
                LIGHTEST * rank as f64 / (siblings.len() - 1) as f64
            } else {
                0.0
            };
            RunStyle {
                label: run_label(run),
                color: towards_white(hue, share),
                eplb: is_eplb(&run.name),
            }
        })
        .collect()
}

/// `color` with `share` of white mixed in.
fn towards_white(color: RGBColor, share: f64) -> RGBColor {
    let mix = |c: u8| (f64::from(c) + (255.0 - f64::from(c)) * share).round() as u8;
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, interval: Option<u32>) -> RunSummary {
        super::super::tests::run(name, interval, 1.3, 0.1)
    }

    #[test]
    fn a_sweep_shades_one_hue_and_eplb_takes_red() {
        let runs = [
            run("optimal", Some(4)),
            run("optimal", Some(1)),
            run("optimal", None),
            run("eplb", Some(1)),
            run("eplb:mode=global", Some(1)),
            run("static:planner=eplb", None),
        ];
        let styles = run_styles(&runs);
        assert_eq!(styles[1].color, HUES[0]);
        assert_eq!(styles[2].color, towards_white(HUES[0], LIGHTEST));
        assert!(styles[0].color.0 > styles[1].color.0 && styles[0].color.0 < styles[2].color.0);
        assert_eq!(styles[3].color, EPLB_HUES[0]);
        assert_eq!(styles[4].color, EPLB_HUES[1]);
        assert!(styles[3].eplb && styles[4].eplb && !styles[5].eplb);
        assert_eq!(styles[5].color, HUES[1]);
        assert_eq!(styles[0].label, "optimal every 4");
        assert_eq!(styles[2].label, "optimal never");
    }
}
