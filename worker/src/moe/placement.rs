//! One layer's plan as dispatch reads it: `phy2log[p]`, the logical expert
//! in physical slot `p`, and how an expert's tokens are split among its
//! replicas (evenly, or by `replica_share`), checked once when parsed.
//! With `replica_scope` ([`Placement::with_scope`]) some slots are co-visit
//! replicas that may only take tokens already visiting their node.

use crate::error::PlanError;

/// One layer's physical placement of logical experts.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    phy2log: Vec<u32>,
    shares: Vec<f64>,
    replicas: Vec<Vec<usize>>,
    scope: Option<Scope>,
}

/// Which tokens each slot may take (SPEC `replica_scope`).
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// Per slot: `None` for a home replica (any token, scope -1), `Some(n)`
    /// for a co-visit replica on node `n` (tokens that already visit `n`).
    slot_node: Vec<Option<u32>>,
    /// Slots per node: slot `p` is on node `p / slots_per_node`.
    slots_per_node: usize,
    /// Per expert: the distinct nodes of its home replicas, ascending.
    home_nodes: Vec<Vec<u32>>,
}

impl Scope {
    /// The node a co-visit slot is restricted to; `None` for a home replica.
    pub fn covisit_node(&self, p: usize) -> Option<u32> {
        self.slot_node[p]
    }

    /// The nodes holding `expert`'s home replicas.
    pub fn home_nodes(&self, expert: usize) -> &[u32] {
        &self.home_nodes[expert]
    }

    pub fn slots_per_node(&self) -> usize {
        self.slots_per_node
    }
}

/// Share sums within this distance of 1 are accepted (and renormalized).
const SHARE_TOLERANCE: f64 = 1e-6;

impl Placement {
    /// Parses a `phy2log` row for `num_experts` experts, with `shares`
    /// (`replica_share`, one per slot) or an even split when `None`.
    pub fn new(
        phy2log: Vec<u32>,
        num_experts: usize,
        shares: Option<Vec<f64>>,
    ) -> Result<Self, PlanError> {
        let mut replicas = vec![Vec::new(); num_experts];
        for (slot, &expert) in phy2log.iter().enumerate() {
            match replicas.get_mut(expert as usize) {
                Some(r) => r.push(slot),
                None => {
                    return Err(PlanError::UnknownExpert {
                        slot,
                        expert,
                        num_experts,
                    })
                }
            }
        }
        if let Some(expert) = replicas.iter().position(Vec::is_empty) {
            return Err(PlanError::MissingExpert { expert });
        }
        let shares = match shares {
            None => phy2log
                .iter()
                .map(|&e| 1.0 / replicas[e as usize].len() as f64)
                .collect(),
            Some(shares) => Self::check_shares(shares, &replicas, phy2log.len())?,
        };
        Ok(Placement {
            phy2log,
            shares,
            replicas,
            scope: None,
        })
    }

    /// Adds `replica_scope` (one entry per slot: -1, or the slot's own node,
    /// for `slots_per_node` consecutive slots per node). Every expert must
    /// keep a home replica (-1): a token that visits none of the co-visit
    /// replicas' nodes has nowhere else to go. A scope of all -1 is no scope.
    pub fn with_scope(mut self, scope: &[i64], slots_per_node: usize) -> Result<Self, PlanError> {
        if scope.len() != self.slots() {
            return Err(PlanError::Length {
                what: "replica_scope",
                expected: self.slots(),
                actual: scope.len(),
            });
        }
        let slots_per_node = slots_per_node.max(1);
        let mut slot_node = Vec::with_capacity(scope.len());
        for (slot, &value) in scope.iter().enumerate() {
            let node = slot / slots_per_node;
            slot_node.push(match value {
                -1 => None,
                v if usize::try_from(v).is_ok_and(|v| v == node) => Some(node as u32),
                _ => return Err(PlanError::BadScope { slot, value, node }),
            });
        }
        if slot_node.iter().all(Option::is_none) {
            self.scope = None;
            return Ok(self);
        }
        let mut home_nodes = Vec::with_capacity(self.replicas.len());
        for (expert, slots) in self.replicas.iter().enumerate() {
            let mut nodes: Vec<u32> = slots
                .iter()
                .filter(|&&p| slot_node[p].is_none())
                .map(|&p| (p / slots_per_node) as u32)
                .collect();
            if nodes.is_empty() {
                return Err(PlanError::NoHomeReplica { expert });
            }
            nodes.sort_unstable();
            nodes.dedup();
            home_nodes.push(nodes);
        }
        self.scope = Some(Scope {
            slot_node,
            slots_per_node,
            home_nodes,
        });
        Ok(self)
    }

    /// The plan's `replica_scope`, when it has co-visit replicas.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    fn check_shares(
        mut shares: Vec<f64>,
        replicas: &[Vec<usize>],
        slots: usize,
    ) -> Result<Vec<f64>, PlanError> {
        if shares.len() != slots {
            return Err(PlanError::Length {
                what: "replica_share",
                expected: slots,
                actual: shares.len(),
            });
        }
        if let Some(slot) = shares.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(PlanError::BadShare {
                slot,
                value: shares[slot],
            });
        }
        for (expert, slots) in replicas.iter().enumerate() {
            let sum: f64 = slots.iter().map(|&p| shares[p]).sum();
            if (sum - 1.0).abs() > SHARE_TOLERANCE {
                return Err(PlanError::ShareSum { expert, sum });
            }
            slots.iter().for_each(|&p| shares[p] /= sum);
        }
        Ok(shares)
    }

    /// Physical slots in this layer.
    pub fn slots(&self) -> usize {
        self.phy2log.len()
    }

    pub fn num_experts(&self) -> usize {
        self.replicas.len()
    }

    pub fn phy2log(&self) -> &[u32] {
        &self.phy2log
    }

    /// The slots holding `expert`, in slot order.
    pub fn replicas_of(&self, expert: usize) -> &[usize] {
        &self.replicas[expert]
    }

    /// The fraction of its expert's tokens slot `p` takes.
    pub fn share(&self, p: usize) -> f64 {
        self.shares[p]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_rejects_bad_rows() {
        assert_eq!(
            Placement::new(vec![0, 1, 5], 3, None),
            Err(PlanError::UnknownExpert {
                slot: 2,
                expert: 5,
                num_experts: 3
            })
        );
        assert_eq!(
            Placement::new(vec![0, 0, 2], 3, None),
            Err(PlanError::MissingExpert { expert: 1 })
        );
        assert!(matches!(
            Placement::new(vec![0, 1, 1], 2, Some(vec![1.0, 0.5])),
            Err(PlanError::Length { .. })
        ));
        assert!(matches!(
            Placement::new(vec![0, 1, 1], 2, Some(vec![1.0, -0.5, 1.5])),
            Err(PlanError::BadShare { slot: 1, .. })
        ));
        assert!(matches!(
            Placement::new(vec![0, 1, 1], 2, Some(vec![1.0, 0.5, 0.6])),
            Err(PlanError::ShareSum { expert: 1, .. })
        ));
    }

    #[test]
    fn scope_is_checked_and_records_home_nodes() {
        // Two nodes of 3 slots: expert 0 at home on node 0, with a co-visit
        // replica on node 1 (slot 5).
        let row = vec![0, 1, 2, 3, 1, 0];
        let p = Placement::new(row.clone(), 4, None).unwrap();
        let scoped = p.clone().with_scope(&[-1, -1, -1, -1, -1, 1], 3).unwrap();
        let scope = scoped.scope().unwrap();
        assert_eq!(scope.covisit_node(5), Some(1));
        assert_eq!(scope.covisit_node(0), None);
        assert_eq!(scope.home_nodes(0), &[0]);
        assert_eq!(scope.home_nodes(1), &[0, 1]);
        // A scope on another node than the slot's.
        assert_eq!(
            p.clone().with_scope(&[-1, -1, 1, -1, -1, -1], 3),
            Err(PlanError::BadScope {
                slot: 2,
                value: 1,
                node: 0
            })
        );
        // Expert 2 with only a co-visit replica.
        assert_eq!(
            p.clone().with_scope(&[-1, -1, 0, -1, -1, -1], 3),
            Err(PlanError::NoHomeReplica { expert: 2 })
        );
        assert!(matches!(
            p.clone().with_scope(&[-1; 5], 3),
            Err(PlanError::Length { .. })
        ));
        assert_eq!(p.clone().with_scope(&[-1; 6], 3).unwrap().scope(), None);
    }
}
