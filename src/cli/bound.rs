//! `ballast bound`: the lower bounds on imbalance for a load (no plan needed).

use std::path::PathBuf;

use ballast_solver::bound::{model_bounds, ModelBounds};
use clap::Args;

use super::error::{CliError, Problem};
use super::{io, ratio, Report};

#[derive(Debug, Args)]
pub struct BoundArgs {
    /// Cluster shape (topology.json).
    #[arg(long)]
    pub topology: PathBuf,
    /// Per-layer, per-expert load: JSON, or CSV when the name ends in .csv.
    #[arg(long)]
    pub load: PathBuf,
    /// Print one JSON object (model and per-layer bounds) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BoundArgs) -> Result<Report, CliError> {
    let topology = io::read_topology(&args.topology)?;
    let load = io::read_load(&args.load, &topology)?;
    let bounds = model_bounds(&topology, &load);
    if args.json {
        let mut text = serde_json::to_string(&bounds)
            .map_err(|e| CliError::new(&args.load, Problem::Encode(e)))?;
        text.push('\n');
        return Ok(Report {
            stdout: text,
            warnings: Vec::new(),
        });
    }
    Ok(Report::from_lines(summary(&bounds)))
}

fn summary(bounds: &ModelBounds) -> Vec<String> {
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        format!("layers {}..{}", ratio(lo), ratio(hi))
    };
    let mut lines = vec![format!(
        "even-split bound {}  ({})",
        ratio(bounds.even_split),
        range(&mut bounds.layers.iter().map(|l| l.even_split))
    )];
    lines.push(match bounds.node_local {
        Some(model) => format!(
            "node-local bound {}  ({}){}",
            ratio(model),
            range(&mut bounds.layers.iter().filter_map(|l| l.node_local)),
            if bounds.node_split_exact {
                ""
            } else {
                "  [group->node split not exact: weaker bound]"
            }
        ),
        None => "node-local bound: none (num_groups is not a multiple of num_nodes)".to_owned(),
    });
    if let Some(model) = bounds.covisit {
        lines.push(format!(
            "co-visit bound {}  ({})",
            ratio(model),
            range(&mut bounds.layers.iter().filter_map(|l| l.covisit))
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use ballast_solver::bound::LayerBounds;

    use super::*;

    #[test]
    fn summary_shows_model_figures_and_layer_range() {
        let bounds = ModelBounds {
            even_split: 1.01,
            node_local: Some(1.05),
            node_split_exact: true,
            covisit: None,
            layers: vec![
                LayerBounds {
                    even_split: 1.0,
                    node_local: Some(1.02),
                    covisit: None,
                },
                LayerBounds {
                    even_split: 1.02,
                    node_local: Some(1.08),
                    covisit: None,
                },
            ],
        };
        let lines = summary(&bounds);
        assert_eq!(lines[0], "even-split bound 1.0100  (layers 1.0000..1.0200)");
        assert_eq!(lines[1], "node-local bound 1.0500  (layers 1.0200..1.0800)");
        let global = ModelBounds {
            node_local: None,
            layers: vec![LayerBounds {
                even_split: 1.0,
                node_local: None,
                covisit: None,
            }],
            ..bounds
        };
        assert!(summary(&global)[1].starts_with("node-local bound: none"));
    }
}
