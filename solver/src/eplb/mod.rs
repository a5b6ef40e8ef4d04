//! DeepSeek's EPLB (Expert Parallelism Load Balancer), reproduced exactly.
//!
//! A Rust port of `rebalance_experts` from DeepSeek's `eplb.py`
//! (deepseek-ai/EPLB; vLLM's `rebalance_algo.py` and SGLang's
//! `eplb_algorithms/deepseek.py` are copies). It is the baseline Ballast's own
//! planners are measured against, so it follows the original step for step,
//! including its single-precision arithmetic and its tie-breaking, rather than
//! improving on it.
//!
//! # What EPLB does
//!
//! Each layer is planned on its own, from that layer's per-expert load
//! (token counts), converted to `f32` first as the original's
//! `weight.float()` does. With `E` experts in `K` groups, `N` nodes of `G`
//! GPUs and `P = N*G*S` slots:
//!
//! 1. **Groups to nodes** (`balanced_packing` of the group loads into `N`
//!    packs of `K/N` groups): groups sorted by load, heaviest first, each to
//!    the lightest node that still has room for a group. The node's experts
//!    are renumbered node-locally ("mlog" ids), in the order their groups
//!    arrived. When `K/N == 1` the original skips the sort: group `k` goes to
//!    node `k`.
//! 2. **Replicas within each node** (`replicate_experts` of the node's `E/N`
//!    experts to `P/N` physical experts): every expert gets one replica, then
//!    each redundant slot, one at a time, goes to the expert with the largest
//!    load per replica (`load / replicas`, the first such expert in mlog order
//!    on ties, as `torch.max` picks the first maximum).
//! 3. **Replicas to GPUs** (`balanced_packing` of the node's `P/N` replicas
//!    into `G` packs of `S`): each replica weighs its expert's load divided
//!    evenly among the expert's replicas; heaviest first, each to the lightest
//!    GPU of the node with a free slot (lowest GPU on ties). Again, `S == 1`
//!    skips the sort: replica `i` goes to GPU `i`.
//!
//! That is the **hierarchical** policy, used when `K % N == 0`. Otherwise
//! EPLB runs the **global** policy, which is the same procedure with one
//! group and one node: no group packing, replication over all `E` experts to
//! all `P` slots, and packing of the replicas onto all `N*G` GPUs.
//! [`EplbPolicy::Global`] forces global balancing on any topology the way
//! callers of EPLB do, by passing a single node. Slot `p` is on GPU `p / S`
//! and GPU `g` on node `g / G`, as in EPLB's output.
//!
//! # Faithfulness
//!
//! - **Arithmetic.** Loads are rounded to `f32`; per-replica loads are `f32`
//!   quotients and pack loads `f32` running sums in the original's order, so
//!   near-ties resolve as they do under PyTorch. Group loads are summed in
//!   `f64` and rounded once, which is exact for integer counts below `2^24`
//!   per group (PyTorch's vectorised sum may differ in the last bit on
//!   fractional loads).
//! - **Ties.** The lightest pack and the heaviest expert are the first
//!   ones on ties (Python's `min` and `torch.max` keep the first). The sorts
//!   reproduce PyTorch's CPU `sort(descending=True)`, which is *not* stable:
//!   it is libstdc++'s `std::sort` (introsort) over (value, index) pairs,
//!   ported step for step, so equally loaded experts come out in the same
//!   order and the same expert lands in the same slot as under PyTorch on
//!   Linux. Imbalance on the load the plan was made for does not depend on
//!   that order (equal weights are interchangeable in a greedy packing), but
//!   which expert sits where does, and so does the plan's imbalance on any
//!   other load (a stale plan) and the churn between plans.
//! - **GPU speeds.** EPLB knows nothing of GPU speeds: a topology's
//!   `gpu_speed` is ignored, and the plan is the one EPLB would make for equal
//!   GPUs ([`crate::score`] still divides by speed when judging it).
//!
//! `tests/eplb_reference.rs` checks the port against figures from running
//! `eplb.py` itself: imbalance on the load and on a drifted one (fresh and
//! stale plans), and the churn between plans, which depends on exactly which
//! expert sits in which slot.
//!
//! # Where EPLB is weak
//!
//! - **Greedy packing.** Both packings are the longest-processing-time
//!   heuristic with an exact-cardinality constraint, with no repair or
//!   search afterwards: once the light GPUs are full, the last replicas go
//!   wherever slots remain. The group-to-node step fixes node totals before
//!   replication, so an unlucky node assignment cannot be made up later. On
//!   the sample data (`data/eplb_reference.csv`) EPLB's mean layer imbalance
//!   is 1.170 against a node-local bound of 1.152 on the prefill zipf load,
//!   and 1.767 against 1.650 on `ep64`.
//! - **Even split only.** An expert's tokens are assumed to split evenly
//!   among its replicas; replica counts are chosen for the largest
//!   load-per-replica, not for the GPU loads they end up in, and no weighted
//!   split (`replica_share`) is produced.
//! - **Same-GPU duplicates.** Nothing stops two replicas of one expert landing
//!   on the same GPU. That wastes a slot: the GPU carries both shares, no
//!   better than one replica, while the slot could have held another expert.
//! - **No memory.** Every run starts from scratch; the previous plan is not
//!   consulted, so a small change in load moves most experts (on the sample
//!   data, 10 % drift makes 68–96 % of the slots of the hierarchical and
//!   forced-global plans load a new expert), and even the node of a group is
//!   not kept.
//!
//! # Speed
//!
//! Layers are planned in parallel (rayon). A 58-layer × 256-expert prefill
//! plan takes about 1.3 ms on one thread (`benches/eplb.rs`), against about
//! 280 ms for `eplb.py`.
//!
//! # Use
//!
//! ```
//! use ballast_solver::{eplb, score, LoadMatrix, Topology};
//!
//! let topology = Topology::from_json(r#"{"num_layers": 1, "num_logical_experts": 4,
//!     "num_groups": 2, "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#)?;
//! let load = LoadMatrix::from_json(r#"{"load": [[40, 10, 10, 20]]}"#, &topology)?;
//! let plan = eplb::rebalance_experts(&topology, &load).expect("the load fits the topology");
//! // Hierarchical: group {0, 1} on node 0, group {2, 3} on node 1; the
//! // heaviest expert of each node gets the redundant slot.
//! assert_eq!(plan.layer(0), &[0, 0, 1, 2, 3, 3]);
//! assert!(score::score(&topology, &load, &plan).is_node_local());
//! # Ok::<(), ballast_solver::ParseError>(())
//! ```

mod hierarchical;
mod packing;
mod replicate;
#[cfg(test)]
mod tests;
mod torch_sort;

use rayon::prelude::*;
use thiserror::Error;

use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

use hierarchical::rebalance_experts_hierarchical;

/// Which of EPLB's two policies to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EplbPolicy {
    /// What `rebalance_experts` does on this topology: hierarchical when the
    /// groups divide among the nodes (`num_groups % num_nodes == 0`),
    /// otherwise its global fallback (hierarchical with one group on one
    /// node).
    #[default]
    Auto,
    /// Global balancing on any topology, the way one forces it through
    /// EPLB's entry point: `rebalance_experts` with `num_nodes = 1`, the
    /// whole cluster as one node (the reference's `*_global` figures are
    /// made so). Replicas go anywhere. It differs from [`Auto`]'s fallback
    /// only in the order experts are considered — group by group, heaviest
    /// group first, instead of by expert id — so only in how ties resolve:
    /// replica counts and GPU loads agree unless two experts tie exactly.
    ///
    /// [`Auto`]: EplbPolicy::Auto
    Global,
}

/// Why EPLB could not run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EplbError {
    /// The load matrix was not shaped for this topology.
    #[error(
        "the load is {load_layers} layers x {load_experts} experts, \
         the topology has {layers} x {experts}"
    )]
    LoadMismatch {
        load_layers: usize,
        load_experts: usize,
        layers: usize,
        experts: usize,
    },
    /// EPLB produced an invalid plan: a bug, reported instead of a panic.
    #[error("internal error, please report: {0}")]
    Internal(String),
}

/// EPLB's full output: the plan, plus the replica ranks behind EPLB's
/// `log2phy` (`logcnt` is [`Plan::logcnt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EplbOutcome {
    /// `phy2log`, even split (no `replica_share`).
    pub plan: Plan,
    /// `phyrank[l][p]`: which replica of its expert slot `p` holds
    /// (`0..logcnt`), EPLB's numbering.
    pub phyrank: Vec<Vec<u32>>,
    /// True when [`EplbPolicy::Auto`] chose the hierarchical policy: every
    /// group's replicas on one node.
    pub hierarchical: bool,
}

impl EplbOutcome {
    /// `log2phy[l][e][r]`: the slot of replica `r` of expert `e`, padded with
    /// -1 to the largest replica count of the plan — EPLB's layout, ordered
    /// by replica rank (where [`Plan::log2phy`] orders by slot).
    pub fn log2phy(&self) -> Vec<Vec<Vec<i64>>> {
        let experts = self
            .plan
            .phy2log()
            .first()
            .map_or(0, |row| row.iter().max().map_or(0, |&e| e as usize + 1));
        let logcnt = self.plan.logcnt(experts);
        let width = logcnt.iter().flatten().copied().max().unwrap_or(1) as usize;
        self.plan
            .phy2log()
            .iter()
            .zip(&self.phyrank)
            .map(|(row, ranks)| {
                let mut table = vec![vec![-1i64; width]; experts];
                for (slot, (&e, &r)) in row.iter().zip(ranks).enumerate() {
                    table[e as usize][r as usize] = slot as i64;
                }
                table
            })
            .collect()
    }
}

/// EPLB's plan for `load` on `topology`: `rebalance_experts` with
/// [`EplbPolicy::Auto`].
pub fn rebalance_experts(topology: &Topology, load: &LoadMatrix) -> Result<Plan, EplbError> {
    rebalance(topology, load, EplbPolicy::Auto).map(|outcome| outcome.plan)
}

/// Runs EPLB with the given policy; layers are planned in parallel (rayon).
///
/// GPU speeds are ignored, as EPLB ignores them (see the module docs).
pub fn rebalance(
    topology: &Topology,
    load: &LoadMatrix,
    policy: EplbPolicy,
) -> Result<EplbOutcome, EplbError> {
    if load.num_layers() != topology.num_layers()
        || load.num_experts() != topology.num_logical_experts()
    {
        return Err(EplbError::LoadMismatch {
            load_layers: load.num_layers(),
            load_experts: load.num_experts(),
            layers: topology.num_layers(),
            experts: topology.num_logical_experts(),
        });
    }
    let hierarchical = policy == EplbPolicy::Auto && topology.supports_hierarchical();
    let (groups, nodes) = match policy {
        EplbPolicy::Auto if hierarchical => (topology.num_groups(), topology.num_nodes()),
        // `rebalance_experts`' own fallback.
        EplbPolicy::Auto => (1, 1),
        // `rebalance_experts(.., num_groups, num_nodes=1, ..)`.
        EplbPolicy::Global => (topology.num_groups(), 1),
    };
    let shape = Shape {
        num_physical_experts: topology.num_slots(),
        num_groups: groups,
        num_nodes: nodes,
        num_gpus: topology.num_gpus(),
    };
    let layers: Vec<(Vec<u32>, Vec<u32>)> = (0..topology.num_layers())
        .into_par_iter()
        .map(|l| {
            let weight: Vec<f32> = load.layer(l).iter().map(|&x| to_f32(x)).collect();
            let out = rebalance_experts_hierarchical(&weight, &shape);
            (out.phy2log, out.phyrank)
        })
        .collect();
    let (phy2log, phyrank) = layers.into_iter().unzip();
    // Every expert is placed in every layer of a valid topology; checked anyway.
    let plan = Plan::new(phy2log, None, topology)
        .map_err(|e| EplbError::Internal(format!("EPLB made an invalid plan: {e}")))?;
    Ok(EplbOutcome {
        plan,
        phyrank,
        hierarchical,
    })
}

/// The arguments of `rebalance_experts_hierarchical` besides the weights.
#[derive(Debug, Clone, Copy)]
struct Shape {
    num_physical_experts: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
}

/// `weight.float()`: round to `f32` (non-negative; `-0.0` becomes `0.0` so
/// that the total order used for sorting agrees with `<`).
fn to_f32(x: f64) -> f32 {
    x as f32 + 0.0
}
