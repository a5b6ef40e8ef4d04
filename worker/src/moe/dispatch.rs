//! Sending each token→expert assignment to a physical replica.
//!
//! [`dispatch`] applies a layer's [`Placement`] to a batch: each expert's
//! assignments, in token order, are cut into contiguous runs whose lengths
//! are the largest-remainder apportionment of the placement's split — exact
//! counts, deterministic, and at most one token off the ideal.
//! [`dispatch_counts`] takes the per-slot token counts of a per-batch router
//! instead (e.g. `ballast_solver::routing`'s optimal routing, see
//! [`optimal`](crate::moe::optimal)); [`DispatchMode`] is a worker's choice
//! among them.

use crate::error::PlanError;
use crate::moe::gate::TopK;
use crate::moe::placement::Placement;

/// How a batch's assignments are split among an expert's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchMode {
    /// Evenly, ignoring any `replica_share` in the plan.
    Even,
    /// By the plan's `replica_share` (evenly where the plan has none).
    Share,
    /// Exactly optimal per batch: the smallest possible largest GPU load.
    Optimal,
}

/// Where each assignment of a batch goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    top_k: usize,
    /// Physical slot of assignment `t·top_k + i`.
    slot_of: Vec<u32>,
    /// Row of that assignment within its slot's token list.
    row_of: Vec<u32>,
    /// Tokens sent to each slot, in order.
    slot_tokens: Vec<Vec<u32>>,
}

impl Dispatch {
    /// The physical slot and row serving token `t`'s `i`-th expert.
    pub fn target(&self, t: usize, i: usize) -> (usize, usize) {
        let a = t * self.top_k + i;
        (self.slot_of[a] as usize, self.row_of[a] as usize)
    }

    /// Tokens slot `p` processes, in row order.
    pub fn tokens_of(&self, p: usize) -> &[u32] {
        &self.slot_tokens[p]
    }

    /// Physical slots in the layer.
    pub fn slots(&self) -> usize {
        self.slot_tokens.len()
    }

    /// Token→expert assignments dispatched.
    pub fn assignments(&self) -> usize {
        self.slot_of.len()
    }

    /// Tokens per physical slot.
    pub fn slot_counts(&self) -> Vec<usize> {
        self.slot_tokens.iter().map(Vec::len).collect()
    }

    /// Tokens per GPU, for `slots_per_gpu` consecutive slots per GPU.
    pub fn gpu_counts(&self, slots_per_gpu: usize) -> Vec<usize> {
        self.slot_counts()
            .chunks(slots_per_gpu.max(1))
            .map(|c| c.iter().sum())
            .collect()
    }
}

/// Splits `n` items by `weights` (summing to 1): floors of the quotas, then
/// one more to the largest remainders, ties to the earlier entry.
fn apportion(n: usize, weights: &[f64]) -> Vec<usize> {
    let quotas: Vec<f64> = weights.iter().map(|w| w * n as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let assigned: usize = counts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (quotas[b] - quotas[b].floor())
            .total_cmp(&(quotas[a] - quotas[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(n.saturating_sub(assigned)) {
        counts[i] += 1;
    }
    counts
}

/// Assigns every token→expert pair of `routing` to a replica under
/// `placement`, splitting each expert's tokens by the placement's shares.
///
/// # Panics
/// If `routing` names an expert `placement` does not have (both come from
/// the same validated layer configuration).
pub fn dispatch(routing: &TopK, placement: &Placement) -> Dispatch {
    assign(routing, placement, |expert, tokens| {
        let shares: Vec<f64> = placement
            .replicas_of(expert)
            .iter()
            .map(|&p| placement.share(p))
            .collect();
        apportion(tokens, &shares)
    })
}

/// Like [`dispatch`], with the number of tokens each slot takes given
/// (`slot_counts`, one per physical slot); they must add up to each expert's
/// tokens in the batch.
///
/// # Panics
/// As [`dispatch`].
pub fn dispatch_counts(
    routing: &TopK,
    placement: &Placement,
    slot_counts: &[u64],
) -> Result<Dispatch, PlanError> {
    if slot_counts.len() != placement.slots() {
        return Err(PlanError::Length {
            what: "slot token counts",
            expected: placement.slots(),
            actual: slot_counts.len(),
        });
    }
    let expert_tokens = routing.expert_counts();
    for (expert, &expected) in expert_tokens.iter().enumerate() {
        let actual: u64 = placement
            .replicas_of(expert)
            .iter()
            .map(|&p| slot_counts[p])
            .sum();
        if actual != expected {
            return Err(PlanError::CountSum {
                expert,
                expected: expected as usize,
                actual,
            });
        }
    }
    Ok(assign(routing, placement, |expert, _| {
        placement
            .replicas_of(expert)
            .iter()
            .map(|&p| slot_counts[p] as usize)
            .collect()
    }))
}

/// Cuts each expert's assignments (in token order) into contiguous runs, one
/// per replica in slot order, of the lengths `split(expert, tokens)` returns.
fn assign(
    routing: &TopK,
    placement: &Placement,
    split: impl Fn(usize, usize) -> Vec<usize>,
) -> Dispatch {
    let top_k = routing.top_k();
    let assignments = routing.tokens() * top_k;
    let mut per_expert: Vec<Vec<usize>> = vec![Vec::new(); placement.num_experts()];
    for t in 0..routing.tokens() {
        for (i, &e) in routing.experts_of(t).iter().enumerate() {
            per_expert[e as usize].push(t * top_k + i);
        }
    }
    let mut slot_of = vec![0u32; assignments];
    let mut row_of = vec![0u32; assignments];
    let mut slot_tokens = vec![Vec::new(); placement.slots()];
    for (e, list) in per_expert.iter().enumerate() {
        let mut next = list.iter();
        for (&p, count) in placement.replicas_of(e).iter().zip(split(e, list.len())) {
            for &a in next.by_ref().take(count) {
                slot_of[a] = p as u32;
                row_of[a] = slot_tokens[p].len() as u32;
                slot_tokens[p].push((a / top_k) as u32);
            }
        }
    }
    Dispatch {
        top_k,
        slot_of,
        row_of,
        slot_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::moe::config::{small_spec, MoeConfig};
    use crate::moe::gate::select;
    use proptest::prelude::*;

    #[test]
    fn apportion_is_exact_and_close_to_quotas() {
        assert_eq!(apportion(10, &[0.5, 0.5]), vec![5, 5]);
        assert_eq!(apportion(7, &[1.0 / 3.0; 3]), vec![3, 2, 2]);
        assert_eq!(apportion(10, &[0.25, 0.75]), vec![3, 7]);
        assert_eq!(apportion(0, &[0.3, 0.7]), vec![0, 0]);
        assert_eq!(apportion(5, &[0.0, 1.0]), vec![0, 5]);
    }

    fn routing(tokens: usize, seed: u64) -> TopK {
        let config = MoeConfig::new(small_spec()).unwrap();
        let scores = Matrix::from_fn(tokens, 16, |t, e| {
            let h = (t as u64 * 2654435761 + e as u64 * 40503 + seed * 97) % 1000;
            0.01 + h as f32 / 1001.0
        });
        select(&config, &scores, &[0.0; 16])
    }

    #[test]
    fn even_split_and_shares_give_expected_counts() {
        let r = routing(64, 1);
        let counts = r.expert_counts();
        // Expert 0 twice (slots 0 and 16), the others once.
        let mut row: Vec<u32> = (0..16).collect();
        row.push(0);
        let even = dispatch(&r, &Placement::new(row.clone(), 16, None).unwrap());
        let c = even.slot_counts();
        assert_eq!(c[0] + c[16], counts[0] as usize);
        assert!(c[0].abs_diff(c[16]) <= 1);
        let mut shares = vec![1.0; 17];
        shares[0] = 0.25;
        shares[16] = 0.75;
        let weighted = dispatch(&r, &Placement::new(row, 16, Some(shares)).unwrap());
        let c = weighted.slot_counts();
        assert_eq!(c[16], apportion(counts[0] as usize, &[0.25, 0.75])[1]);
        assert_eq!(weighted.gpu_counts(17), vec![64 * 4]);
    }

    #[test]
    fn given_slot_counts_are_followed_exactly() {
        let r = routing(64, 2);
        let counts = r.expert_counts();
        let mut row: Vec<u32> = (0..16).collect();
        row.push(3);
        let placement = Placement::new(row, 16, None).unwrap();
        // Expert 3's tokens all go to its second replica (slot 16).
        let mut slot_counts: Vec<u64> = counts.clone();
        slot_counts.push(counts[3]);
        slot_counts[3] = 0;
        let d = dispatch_counts(&r, &placement, &slot_counts).unwrap();
        assert_eq!(
            d.slot_counts()
                .iter()
                .map(|&c| c as u64)
                .collect::<Vec<_>>(),
            slot_counts
        );
        slot_counts[16] += 1;
        assert!(matches!(
            dispatch_counts(&r, &placement, &slot_counts),
            Err(PlanError::CountSum { expert: 3, .. })
        ));
        assert!(matches!(
            dispatch_counts(&r, &placement, &counts),
            Err(PlanError::Length { .. })
        ));
    }

    proptest! {
        /// Every assignment lands on a replica of its expert, and each slot's
        /// token list is consistent with the per-assignment targets.
        #[test]
        fn dispatch_is_a_consistent_partition(tokens in 0usize..40, seed in 0u64..100, extra in prop::collection::vec(0u32..16, 0..10)) {
            let r = routing(tokens, seed);
            let mut row: Vec<u32> = (0..16).collect();
            row.extend(extra);
            let placement = Placement::new(row.clone(), 16, None).unwrap();
            let d = dispatch(&r, &placement);
            prop_assert_eq!(d.slot_counts().iter().sum::<usize>(), tokens * 4);
            for t in 0..tokens {
                for (i, &e) in r.experts_of(t).iter().enumerate() {
                    let (p, row_in_slot) = d.target(t, i);
                    prop_assert_eq!(row[p], e);
                    prop_assert_eq!(d.tokens_of(p)[row_in_slot] as usize, t);
                }
            }
            for e in 0..16 {
                let counts: Vec<usize> = placement.replicas_of(e).iter().map(|&p| d.slot_counts()[p]).collect();
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "uneven split {:?}", counts);
            }
        }
    }
}
