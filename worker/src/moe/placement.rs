//! One layer's plan as dispatch reads it: `phy2log[p]`, the logical expert
//! in physical slot `p`, and how an expert's tokens are split among its
//! replicas (evenly, or by `replica_share`), checked once when parsed.

use crate::error::PlanError;

/// One layer's physical placement of logical experts.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    phy2log: Vec<u32>,
    shares: Vec<f64>,
    replicas: Vec<Vec<usize>>,
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
        })
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
}
