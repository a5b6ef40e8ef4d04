//! Plans from the service: parsing a plan document into per-layer
//! placements, and the long-poll loop that hands new ones to the compute
//! thread.

use std::sync::Arc;
use std::time::Duration;

use ballast_protocol::PlanDocument;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use ballast_solver::{Plan, Topology};

use super::backoff::Backoff;
use super::client::ServiceClient;
use crate::error::PlanError;
use crate::moe::{DispatchMode, Placement};

/// A plan document this node cannot use.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanDocError {
    #[error("malformed plan document: {0}")]
    Malformed(String),
    #[error("plan version {version} does not fit the cluster topology: {detail}")]
    Topology { version: i64, detail: String },
}

/// A validated plan for the whole cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanUpdate {
    /// Never negative: 0 is the initial placement, service plans count from 1.
    pub version: i64,
    plan: Plan,
    experts: usize,
    /// For `replica_scope`: slot `p` is on node `p / slots_per_node`.
    slots_per_node: usize,
}

impl PlanUpdate {
    /// Checks a service plan document (SPEC `plan.json` plus `version`)
    /// against the cluster topology.
    pub fn parse(doc: &PlanDocument, topology: &Topology) -> Result<Self, PlanDocError> {
        let version = match doc.version {
            Some(v) if v >= 0 => v,
            Some(v) => return Err(PlanDocError::Malformed(format!("version {v} is negative"))),
            None => return Err(PlanDocError::Malformed("missing field `version`".into())),
        };
        let plan = doc.plan(topology).map_err(|e| PlanDocError::Topology {
            version,
            detail: e.to_string(),
        })?;
        Ok(PlanUpdate {
            version,
            plan,
            experts: topology.num_logical_experts(),
            slots_per_node: topology.slots_per_node(),
        })
    }

    /// A plan made in this process (by `ballast_solver::solve`) for
    /// `topology`, as version `version` (negative versions count as 0).
    pub fn from_plan(version: i64, plan: Plan, topology: &Topology) -> Self {
        PlanUpdate {
            version: version.max(0),
            plan,
            experts: topology.num_logical_experts(),
            slots_per_node: topology.slots_per_node(),
        }
    }

    /// The placement a node runs before the service has published any plan
    /// (version 0): slot `p` holds expert `p mod E`, so every expert is
    /// present and the first `P - E` experts are replicated.
    pub fn initial(topology: &Topology) -> Self {
        PlanUpdate {
            version: 0,
            plan: Plan::linear(topology),
            experts: topology.num_logical_experts(),
            slots_per_node: topology.slots_per_node(),
        }
    }

    /// Logical experts of the model.
    pub fn num_experts(&self) -> usize {
        self.experts
    }

    /// Whether the plan has co-visit replicas (`replica_scope`).
    pub fn is_scoped(&self) -> bool {
        self.plan.replica_scope().is_some()
    }

    /// One placement per layer; `mode` decides whether `replica_share` is
    /// used (`share`) or ignored (`even`, `optimal`). A plan with
    /// `replica_scope` always keeps its shares and scope, whatever the mode:
    /// a co-visit replica's share is the most of its expert's tokens that
    /// visit its node anyway, so an even split could not be filled, and the
    /// per-batch optimum does not know which tokens a replica may take.
    pub fn placements(&self, mode: DispatchMode) -> Result<Vec<Placement>, PlanError> {
        let scope = self.plan.replica_scope();
        (0..self.plan.num_layers())
            .map(|layer| {
                let shares = match (mode, self.plan.replica_share()) {
                    (_, Some(s)) if scope.is_some() => Some(s[layer].clone()),
                    (DispatchMode::Share, Some(s)) => Some(s[layer].clone()),
                    _ => None,
                };
                let placement =
                    Placement::new(self.plan.layer(layer).to_vec(), self.experts, shares)?;
                match scope {
                    Some(scope) => placement.with_scope(&scope[layer], self.slots_per_node),
                    None => Ok(placement),
                }
            })
            .collect()
    }
}

/// Long-polls `plans/latest` and publishes each newer valid plan on `tx`,
/// until `stop` is set. `known` is the version the node starts with.
pub async fn watch_plans(
    client: ServiceClient,
    topology: Topology,
    mut known: Option<i64>,
    wait: Duration,
    backoff: Backoff,
    tx: watch::Sender<Option<Arc<PlanUpdate>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = ChaCha8Rng::from_rng(&mut rand::rng());
    let mut failures = 0;
    while !*stop.borrow() {
        let answer = tokio::select! {
            a = client.latest_plan(known, wait) => a,
            _ = stop.changed() => return,
        };
        match answer {
            Ok(None) => failures = 0,
            Ok(Some(doc)) => {
                failures = 0;
                match PlanUpdate::parse(&doc, &topology) {
                    Ok(update) if known.is_none_or(|k| update.version > k) => {
                        info!(version = update.version, "new plan");
                        known = Some(update.version);
                        tx.send_replace(Some(Arc::new(update)));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        // Skip this version rather than fetch it in a loop.
                        warn!(error = %err, "ignoring a plan this node cannot run");
                        if let Some(v) = doc.version.filter(|v| *v >= 0) {
                            known = Some(known.map_or(v, |k| k.max(v)));
                        } else {
                            failures += 1;
                        }
                    }
                }
            }
            Err(err) => {
                failures += 1;
                warn!(error = %err, "plan long-poll failed");
            }
        }
        if failures > 0 {
            let delay = backoff.delay(failures, &mut rng);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn typed(value: Value) -> PlanDocument {
        serde_json::from_value(value).unwrap()
    }

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_service_documents() {
        let doc = json!({
            "version": 3, "cluster": "c", "stats": {},
            "phy2log": [[0, 1, 0, 2, 3, 2], [3, 2, 1, 0, 1, 2]],
            "replica_share": [[0.25, 1.0, 0.75, 0.5, 1.0, 0.5], [1.0, 0.5, 0.5, 1.0, 0.5, 0.5]],
        });
        let update = PlanUpdate::parse(&typed(doc), &topology()).unwrap();
        assert_eq!(update.version, 3);
        let shared = update.placements(DispatchMode::Share).unwrap();
        assert_eq!(shared[0].share(0), 0.25);
        let even = update.placements(DispatchMode::Even).unwrap();
        assert_eq!(even[0].share(0), 0.5);
        assert_eq!(even[1].phy2log(), &[3, 2, 1, 0, 1, 2]);
    }

    #[test]
    fn scoped_plans_keep_shares_and_scope_in_every_mode() {
        // Node 0 has slots 0-2, node 1 slots 3-5; expert 0 (group 0, home
        // node 0) has a co-visit replica on node 1 (slot 5).
        let doc = json!({
            "version": 4,
            "phy2log": [[0, 1, 0, 2, 3, 0], [0, 1, 0, 2, 3, 2]],
            "replica_share": [[0.5, 1.0, 0.25, 1.0, 1.0, 0.25], [0.5, 1.0, 0.5, 0.5, 1.0, 0.5]],
            "replica_scope": [[-1, -1, -1, -1, -1, 1], [-1, -1, -1, -1, -1, -1]],
        });
        let update = PlanUpdate::parse(&typed(doc), &topology()).unwrap();
        assert!(update.is_scoped());
        for mode in [
            DispatchMode::Even,
            DispatchMode::Share,
            DispatchMode::Optimal,
        ] {
            let p = update.placements(mode).unwrap();
            assert_eq!(p[0].share(5), 0.25);
            assert_eq!(p[0].scope().unwrap().covisit_node(5), Some(1));
            assert_eq!(p[1].scope(), None);
        }
    }

    #[test]
    fn refuses_plans_for_another_topology() {
        let doc = json!({"version": 1, "phy2log": [[0, 1, 2, 3]]});
        assert!(matches!(
            PlanUpdate::parse(&typed(doc), &topology()),
            Err(PlanDocError::Topology { version: 1, .. })
        ));
        assert!(matches!(
            PlanUpdate::parse(&typed(json!({"phy2log": []})), &topology()),
            Err(PlanDocError::Malformed(_))
        ));
    }

    #[test]
    fn initial_placement_holds_every_expert() {
        let update = PlanUpdate::initial(&topology());
        assert_eq!(update.version, 0);
        let p = update.placements(DispatchMode::Share).unwrap();
        assert_eq!(p[1].phy2log(), &[0, 1, 2, 3, 0, 1]);
    }
}
