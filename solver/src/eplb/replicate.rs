//! `replicate_experts`: one replica per expert, then each redundant replica
//! to the expert with the largest load per replica.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The replicas of one row of experts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replication {
    /// `phy2log[i]`: the expert of physical replica `i`; the first `num_log`
    /// are the experts themselves in order, then the redundant ones in the
    /// order they were granted.
    pub phy2log: Vec<usize>,
    /// `rank[i]`: which replica of its expert replica `i` is (`0..logcnt`).
    pub rank: Vec<usize>,
    /// `logcnt[e]`: replicas of expert `e` (at least 1).
    pub logcnt: Vec<usize>,
}

/// An expert's load per replica and index, ordered so that the greatest key
/// is the first expert with the largest load per replica (`torch.max` returns
/// the first maximum).
#[derive(Debug, Clone, Copy)]
struct ExpertKey {
    per_replica: f32,
    expert: usize,
}

impl Ord for ExpertKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Loads are non-negative and never NaN, so `total_cmp` agrees with `<`.
        self.per_replica
            .total_cmp(&other.per_replica)
            .then(other.expert.cmp(&self.expert))
    }
}

impl PartialOrd for ExpertKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ExpertKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ExpertKey {}

/// EPLB's `replicate_experts` for one row: `weight.len()` experts to
/// `num_phy` replicas. The load per replica is the `f32` quotient
/// `weight / logcnt`, as the original computes it.
///
/// Requires `num_phy >= weight.len() > 0`.
pub(super) fn replicate_experts(weight: &[f32], num_phy: usize) -> Replication {
    let num_log = weight.len();
    assert!(
        num_log > 0 && num_phy >= num_log,
        "{num_log} experts cannot fill {num_phy} replicas"
    );
    let mut phy2log: Vec<usize> = (0..num_log).collect();
    phy2log.reserve(num_phy - num_log);
    let mut rank = vec![0; num_log];
    rank.reserve(num_phy - num_log);
    let mut logcnt = vec![1usize; num_log];
    if num_phy > num_log {
        let mut heap: BinaryHeap<ExpertKey> = weight
            .iter()
            .enumerate()
            .map(|(expert, &w)| ExpertKey {
                per_replica: w,
                expert,
            })
            .collect();
        for _ in num_log..num_phy {
            let ExpertKey { expert, .. } = heap.pop().expect("every expert is in the heap");
            phy2log.push(expert);
            rank.push(logcnt[expert]);
            logcnt[expert] += 1;
            heap.push(ExpertKey {
                per_replica: weight[expert] / logcnt[expert] as f32,
                expert,
            });
        }
    }
    Replication {
        phy2log,
        rank,
        logcnt,
    }
}
