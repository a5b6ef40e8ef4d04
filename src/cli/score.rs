//! `ballast score`: how a plan does on a load (SPEC metrics).

use std::path::PathBuf;

use ballast_solver::covisit::{cross_node_traffic, CrossNodeTraffic};
use ballast_solver::score::{self, Score};
use clap::Args;
use serde::Serialize;

use super::error::{CliError, Problem};
use super::{io, ratio, transfers_text, Report};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Cluster shape (topology.json).
    #[arg(long)]
    pub topology: PathBuf,
    /// Per-layer, per-expert load: JSON, or CSV when the name ends in .csv.
    #[arg(long)]
    pub load: PathBuf,
    /// The plan to score (plan.json).
    #[arg(long)]
    pub plan: PathBuf,
    /// The plan it replaces: also count migrations.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// How each layer's load reaches the replicas: `even` (the plan's split,
    /// as engines do today) or `optimal` (the best possible routing, SPEC).
    #[arg(long, value_enum, default_value_t = Routing::Even)]
    pub routing: Routing,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    Even,
    Optimal,
}

/// The `--json` object: the score's fields plus the derived ones.
#[derive(Debug, Serialize)]
struct ScoreReport<'a> {
    #[serde(flatten)]
    score: &'a Score,
    node_local: bool,
    routing: Routing,
    #[serde(skip_serializing_if = "Option::is_none")]
    migrations: Option<usize>,
    /// Plans with co-visit replicas only.
    #[serde(skip_serializing_if = "Option::is_none")]
    covisit: Option<CovisitReport>,
    cross_node: CrossNode,
}

/// Cross-node transfers per token and layer the plan implies on this load:
/// derived from its co-visit counts (`ballast_solver::covisit::traffic`),
/// or why they cannot be.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum CrossNode {
    Known {
        #[serde(flatten)]
        traffic: CrossNodeTraffic,
        /// Low and high agree (one group per node).
        exact: bool,
        /// Counted at the experts' home nodes: co-visit replicas can only
        /// lower the real figure, so for a co-visit plan `high` is the bound
        /// that holds.
        at_home_nodes: bool,
    },
    Unknown {
        unknown: String,
    },
}

impl CrossNode {
    fn of(
        topology: &ballast_solver::Topology,
        load: &ballast_solver::LoadMatrix,
        plan: &ballast_solver::Plan,
    ) -> Self {
        match cross_node_traffic(topology, load, plan) {
            Ok(traffic) => CrossNode::Known {
                exact: traffic.nodes_per_token.is_exact(),
                at_home_nodes: plan.replica_scope().is_some(),
                traffic,
            },
            Err(why) => CrossNode::Unknown {
                unknown: why.to_string(),
            },
        }
    }

    fn summary(&self) -> String {
        match self {
            CrossNode::Known {
                traffic,
                at_home_nodes,
                ..
            } => format!(
                "cross-node transfers per token and layer {}; read off the co-visit counts, tokens starting on every node alike",
                transfers_text(&traffic.transfers_per_token, *at_home_nodes)
            ),
            CrossNode::Unknown { unknown } => format!("cross-node transfers: unknown ({unknown})"),
        }
    }
}

/// How a plan with co-visit replicas did under the rule.
#[derive(Debug, Serialize)]
struct CovisitReport {
    /// The load carried co-visit counts, so each co-visit replica took at
    /// most the safe share of this load (else the plan's shares as given).
    rule_applied: bool,
    /// Fraction of token assignments served by co-visit replicas.
    served_fraction: f64,
    /// Cross-node transfers per token the co-visit replicas add: none, since
    /// each serves only tokens already visiting its node (the worker's
    /// dispatch measures the transfers themselves).
    added_transfers_per_token: f64,
}

pub fn run(args: &ScoreArgs) -> Result<Report, CliError> {
    let topology = io::read_topology(&args.topology)?;
    let load = io::read_load(&args.load, &topology)?;
    let plan = io::read_plan(&args.plan, &topology)?;
    let previous = args
        .previous
        .as_deref()
        .map(|path| io::read_plan(path, &topology))
        .transpose()?;

    // A co-visit plan's shares already route as well as its caps allow;
    // routing that ignored them would break the rule.
    let scoped = plan.replica_scope().is_some();
    let score = match args.routing {
        Routing::Optimal if !scoped => {
            ballast_solver::routing::score_optimal(&topology, &load, &plan)
        }
        _ => score::score(&topology, &load, &plan),
    };
    let covisit = scoped.then(|| CovisitReport {
        rule_applied: load.has_covisit(),
        served_fraction: ballast_solver::covisit::served_by_covisit(&topology, &load, &plan),
        added_transfers_per_token: 0.0,
    });
    let report = ScoreReport {
        score: &score,
        node_local: score.is_node_local(),
        routing: args.routing,
        migrations: previous.map(|prev| score::migrations(&topology, &prev, &plan)),
        covisit,
        cross_node: CrossNode::of(&topology, &load, &plan),
    };
    if args.json {
        let mut text = serde_json::to_string(&report)
            .map_err(|e| CliError::new(&args.plan, Problem::Encode(e)))?;
        text.push('\n');
        return Ok(Report {
            stdout: text,
            warnings: Vec::new(),
        });
    }
    Ok(Report::from_lines(summary(&report)))
}

fn summary(report: &ScoreReport) -> Vec<String> {
    let score = report.score;
    let mut lines = vec![
        format!("model imbalance {}", ratio(score.model_imbalance)),
        format!(
            "layer imbalance mean {}  max {}",
            ratio(score.mean_layer_imbalance),
            ratio(score.max_layer_imbalance)
        ),
        format!("same-GPU duplicates {}", score.same_gpu_duplicates),
        if report.node_local {
            "node-local: yes".to_owned()
        } else {
            format!(
                "node-local: no ({} groups off node, summed over layers)",
                score.groups_off_node
            )
        },
    ];
    if let Some(migrations) = report.migrations {
        lines.push(format!("migrations {migrations}"));
    }
    lines.push(report.cross_node.summary());
    if let Some(c) = &report.covisit {
        lines.push(if c.rule_applied {
            format!(
                "co-visit replicas: {:.2}% of token assignments, within this load's safe shares; no added cross-node transfer",
                c.served_fraction * 100.0
            )
        } else {
            "co-visit replicas: the load has no co-visit counts, so their shares are taken as given".to_owned()
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use ballast_solver::score::LayerScore;

    use super::*;

    #[test]
    fn json_carries_the_spec_fields() {
        let score = Score::from_layers(
            vec![LayerScore::new(12.0, 10.0), LayerScore::new(10.0, 10.0)],
            0,
            3,
        );
        let report = ScoreReport {
            score: &score,
            node_local: true,
            routing: Routing::Even,
            migrations: Some(4),
            covisit: None,
            cross_node: CrossNode::Unknown {
                unknown: "the load has no co-visit counts".into(),
            },
        };
        let value = serde_json::to_value(&report).unwrap();
        assert!((value["model_imbalance"].as_f64().unwrap() - 1.1).abs() < 1e-12);
        assert!((value["mean_layer_imbalance"].as_f64().unwrap() - 1.1).abs() < 1e-12);
        assert!((value["max_layer_imbalance"].as_f64().unwrap() - 1.2).abs() < 1e-12);
        assert_eq!(value["same_gpu_duplicates"], 3);
        assert_eq!(value["node_local"], true);
        assert_eq!(value["migrations"], 4);
        assert_eq!(value["layers"].as_array().unwrap().len(), 2);
        let lines = summary(&report);
        assert_eq!(lines[0], "model imbalance 1.1000");
        assert!(lines.contains(&"migrations 4".to_owned()));
    }

    #[test]
    fn without_previous_there_is_no_migration_figure() {
        let score = Score::from_layers(vec![LayerScore::new(10.0, 10.0)], 2, 0);
        let report = ScoreReport {
            score: &score,
            node_local: false,
            routing: Routing::Optimal,
            migrations: None,
            covisit: None,
            cross_node: CrossNode::Unknown {
                unknown: "the load has no co-visit counts".into(),
            },
        };
        assert!(serde_json::to_value(&report)
            .unwrap()
            .get("migrations")
            .is_none());
        assert!(summary(&report)[3].contains("2 groups off node"));
    }
}
