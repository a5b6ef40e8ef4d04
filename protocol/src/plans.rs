//! Plans: the plan document (SPEC `plan.json` plus what the service adds),
//! its `stats`, the plan history, rebalance results and plan diffs.

use ballast_solver::{ParseError, Plan, Topology, TopologySpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `GET /v1/clusters/{cluster}/plans/latest` and `/plans/{version}` (and
/// each SSE `plan` event): SPEC `plan.json` plus version metadata. It
/// carries its topology, so any version can be exported or diffed alone.
///
/// Without `log2phy`/`logcnt`: they derive from `phy2log` and are ten times
/// its size, which every poller would download; the `?format=` exports
/// carry them.
///
/// The service always writes every field. Reading is lenient about all but
/// the placement, so any SPEC `plan.json` (just `phy2log`, maybe
/// `replica_share` and `version`) reads too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanDocument {
    /// The logical expert of every slot, per layer.
    #[serde(alias = "physical_to_logical_map")]
    pub phy2log: Vec<Vec<u32>>,
    /// Each slot's share of its expert's tokens, when the plan is weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_share: Option<Vec<Vec<f64>>>,
    /// Per slot: -1 (any token of its expert) or the slot's node, whose
    /// visitors alone it serves (co-visit replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_scope: Option<Vec<Vec<i64>>>,
    #[serde(default)]
    pub cluster: String,
    /// `null` for a dry-run candidate, which is never published.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub lineage: i64,
    #[serde(default)]
    pub created_at: String,
    /// Why it was published (`initial`, `forced`, `excluded_workers`,
    /// `gain_pays`).
    #[serde(default)]
    pub reason: String,
    /// The topology the plan was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologySpec>,
    #[serde(default)]
    pub stats: PlanStats,
}

/// JSON text of a body that cannot fail to serialize: its map keys are all
/// strings, and serde_json writes non-finite numbers as `null`.
fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plan bodies always serialize")
}

impl PlanDocument {
    /// The document as stored and served.
    pub fn to_json(&self) -> String {
        json_text(self)
    }

    /// The placement, checked against `topology`.
    pub fn plan(&self, topology: &Topology) -> Result<Plan, ParseError> {
        let plan = Plan::new(self.phy2log.clone(), self.replica_share.clone(), topology)?;
        match &self.replica_scope {
            Some(scope) => plan.with_scope(scope.clone(), topology),
            None => Ok(plan),
        }
    }
}

/// A plan's `stats`: the solver's figures for the plan
/// ([`ballast_solver::PlanStats`]; SPEC fixes `policy`, `solve_ms`,
/// `model_imbalance`, `bound`, `layers`) with the service's decision figures
/// ([`PlanFigures`]) over them.
///
/// Kept as an object rather than re-declared field by field: it is built
/// only from the two typed halves ([`PlanStats::new`]), and documents stored
/// by older versions carry other solver fields that must still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanStats(Map<String, Value>);

impl PlanStats {
    /// The solver's stats with `figures` merged over them (a figure the
    /// solver also reports, `migrations`, is the service's).
    pub fn new(solver: &ballast_solver::PlanStats, figures: &PlanFigures) -> Self {
        let mut stats = match serde_json::to_value(solver) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Ok(Value::Object(extra)) = serde_json::to_value(figures) {
            stats.extend(extra);
        }
        PlanStats(stats)
    }

    /// The stats as stored beside the plan.
    pub fn to_json(&self) -> String {
        json_text(self)
    }

    /// One figure by name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// Every figure.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// The figures behind a planner decision: the `figures` of a rebalance
/// result, and part of every published plan's `stats`. The policy's own
/// figures ([`ballast_policy::Figures`]) travel as they are, beside the
/// version they were measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFigures {
    /// The plan the candidate would replace.
    pub base_version: Option<i64>,
    #[serde(flatten)]
    pub decision: ballast_policy::Figures,
}

/// `GET /v1/clusters/{cluster}/plans`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanList {
    pub cluster: String,
    /// The cluster's current lineage.
    pub lineage: i64,
    pub plans: Vec<PlanSummary>,
}

/// One plan in [`PlanList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub version: i64,
    pub lineage: i64,
    pub created_at: String,
    pub reason: String,
    /// `null` when the stored stats do not read.
    pub stats: Option<PlanStats>,
}

/// `POST /v1/clusters/{cluster}/rebalance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebalanceResult {
    pub cluster: String,
    pub dry_run: bool,
    pub published: bool,
    /// The version published; with `unchanged`, the version in force.
    pub version: Option<i64>,
    /// The candidate equals the plan in force (`phy2log` and
    /// `replica_share`), so nothing was published (in a dry run: nothing
    /// would be). Absent from older services' answers.
    #[serde(default)]
    pub unchanged: bool,
    /// The planner's verdict (`forced`, `below_threshold`, ...), or
    /// `unchanged`.
    pub reason: String,
    pub detail: String,
    pub figures: PlanFigures,
    /// A dry run's candidate (never published).
    pub candidate: Option<PlanDocument>,
}

/// `GET /v1/clusters/{cluster}/plans/{version}/diff?from=V`: what each GPU
/// must load and evict to go from plan `from` to plan `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDiff {
    pub cluster: String,
    pub from: i64,
    pub to: i64,
    /// Experts loaded in all.
    pub migrations: usize,
    /// `migrations x expert_bytes`, when the topology gives `expert_bytes`.
    pub bytes: Option<u64>,
    /// GPUs with changes only.
    pub gpus: Vec<GpuDiff>,
}

/// One GPU's changes in [`PlanDiff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDiff {
    pub gpu: usize,
    pub worker: String,
    pub loads: usize,
    pub evictions: usize,
    pub bytes: Option<u64>,
    /// Layers with changes only.
    pub layers: Vec<LayerDiff>,
}

/// One layer's changes on one GPU: experts to load and to evict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDiff {
    pub layer: usize,
    pub load: Vec<u32>,
    pub evict: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_plan_json_reads() {
        let doc: PlanDocument =
            serde_json::from_str(r#"{"version": 1, "phy2log": [[0, 1, 2, 3]]}"#).unwrap();
        assert_eq!(doc.version, Some(1));
        assert!(doc.topology.is_none() && doc.stats.fields().is_empty());
        let doc: PlanDocument =
            serde_json::from_str(r#"{"physical_to_logical_map": [[1, 0]]}"#).unwrap();
        assert_eq!(doc.phy2log, vec![vec![1, 0]]);
        assert_eq!(doc.version, None);
    }

    #[test]
    fn stats_are_the_solvers_with_the_figures_over_them() {
        use ballast_solver::{solve, LoadMatrix, PlanOptions, Policy};
        let topology = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let load = LoadMatrix::new(vec![vec![5.0, 1.0, 1.0, 1.0]], &topology).unwrap();
        let options = PlanOptions {
            policy: Policy::Greedy,
            ..PlanOptions::default()
        };
        let outcome = solve(&topology, &load, &options).unwrap();
        let figures = PlanFigures {
            base_version: None,
            decision: ballast_policy::Figures {
                current_imbalance: None,
                predicted_imbalance: 1.5,
                migrations: Some(4),
                migrated_bytes: None,
                net_gain: None,
                solve_seconds: 0.1,
                load_windows: 2,
                excluded_gpus: vec![],
                policy_fallback: None,
            },
        };
        let stats = PlanStats::new(&outcome.stats, &figures);
        assert_eq!(stats.get("policy").unwrap(), "greedy");
        assert_eq!(stats.get("migrations").unwrap(), 4);
        assert!(stats.get("base_version").unwrap().is_null());
        assert!(stats.get("layers").unwrap().is_array());
    }
}
