//! The `optimal` dispatch mode: each batch's per-expert token counts are
//! routed to replicas by [`ballast_solver::routing::Router`], which minimizes
//! the largest GPU load exactly (issue 4), and the batch is then cut by
//! those slot counts ([`dispatch_counts`]).
//!
//! The router holds the layer's replica graph and scratch space, so one
//! [`OptimalDispatcher`] is built per layer and plan and reused per batch.

use ballast_solver::routing::{Router, Routing};
use ballast_solver::{Plan, Topology, TopologySpec};

use crate::error::{ConfigError, MoeError};
use crate::moe::dispatch::{dispatch_counts, Dispatch};
use crate::moe::gate::TopK;
use crate::moe::placement::Placement;

/// Routes batches of one layer optimally under one placement.
#[derive(Debug)]
pub struct OptimalDispatcher {
    placement: Placement,
    router: Router,
    scratch: Routing,
}

impl OptimalDispatcher {
    /// A dispatcher for `placement` on a cluster of `gpus` GPUs with
    /// `slots_per_gpu` slots each (slot `p` on GPU `p / slots_per_gpu`).
    /// GPUs are taken as equally fast and tokens may use any replica.
    pub fn new(
        placement: Placement,
        gpus: usize,
        slots_per_gpu: usize,
    ) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::new("placement", reason);
        if gpus == 0 || slots_per_gpu == 0 || placement.slots() != gpus * slots_per_gpu {
            return Err(invalid(format!(
                "{} slots do not fill {gpus} GPUs of {slots_per_gpu} slots",
                placement.slots()
            )));
        }
        // A one-layer, one-node, one-group topology: the router only needs
        // which GPU holds which replica (groups and nodes matter to planners).
        let count = |n: usize| i64::try_from(n).map_err(|_| invalid(format!("{n} is too large")));
        let topology = Topology::new(TopologySpec {
            num_layers: 1,
            num_logical_experts: count(placement.num_experts())?,
            num_groups: 1,
            num_nodes: 1,
            gpus_per_node: count(gpus)?,
            slots_per_gpu: count(slots_per_gpu)?,
            gpu_speed: None,
            expert_bytes: None,
            num_hidden_layers: None,
            first_moe_layer: None,
            mtp_layers: None,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let plan = Plan::new(vec![placement.phy2log().to_vec()], None, &topology)
            .map_err(|e| invalid(e.to_string()))?;
        let router = Router::new(&topology, &plan, 0).map_err(|e| invalid(e.to_string()))?;
        Ok(OptimalDispatcher {
            placement,
            router,
            scratch: Routing::new(),
        })
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Routes `routing`'s assignments so that the busiest GPU gets as few as
    /// any assignment to replicas allows.
    pub fn dispatch(&mut self, routing: &TopK) -> Result<Dispatch, MoeError> {
        let counts = routing.expert_counts();
        self.router.route(&counts, &mut self.scratch)?;
        Ok(dispatch_counts(
            routing,
            &self.placement,
            self.scratch.slot_tokens(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::moe::config::{small_spec, MoeConfig};
    use crate::moe::dispatch::dispatch;
    use crate::moe::gate::select;
    use proptest::prelude::*;

    /// A skewed routing of `tokens` tokens over 16 experts.
    fn routing(tokens: usize, seed: u64) -> TopK {
        let config = MoeConfig::new(small_spec()).unwrap();
        let scores = Matrix::from_fn(tokens, 16, |t, e| {
            let h = (t as u64 * 2654435761 + e as u64 * 40503 + seed * 97) % 1000;
            // Low-numbered experts are hotter.
            (0.01 + h as f32 / 1001.0) / (1.0 + e as f32 / 4.0)
        });
        select(&config, &scores, &[0.0; 16])
    }

    fn max_gpu(d: &Dispatch, slots_per_gpu: usize) -> usize {
        d.gpu_counts(slots_per_gpu).into_iter().max().unwrap_or(0)
    }

    #[test]
    fn moves_tokens_off_the_busiest_gpu() {
        // 4 GPUs x 5 slots; expert 0 (the hottest) on GPUs 0 and 3.
        let row: Vec<u32> = (0..16).chain([0, 1, 2, 3]).collect();
        let placement = Placement::new(row, 16, None).unwrap();
        let r = routing(200, 3);
        let even = dispatch(&r, &placement);
        let mut optimal = OptimalDispatcher::new(placement, 4, 5).unwrap();
        let d = optimal.dispatch(&r).unwrap();
        assert_eq!(d.slot_counts().iter().sum::<usize>(), 200 * 4);
        assert!(
            max_gpu(&d, 5) < max_gpu(&even, 5),
            "{:?} vs {:?}",
            d.gpu_counts(5),
            even.gpu_counts(5)
        );
    }

    #[test]
    fn rejects_a_placement_that_does_not_fill_the_gpus() {
        let placement = Placement::new((0..16).collect(), 16, None).unwrap();
        assert_eq!(
            OptimalDispatcher::new(placement, 3, 5).unwrap_err().field,
            "placement"
        );
    }

    proptest! {
        /// The optimal mode never loads the busiest GPU more than the even
        /// split or the plan's shares do, and it is a valid dispatch.
        #[test]
        fn never_worse_than_even_split(
            tokens in 0usize..120,
            seed in 0u64..1000,
            extra in prop::collection::vec(0u32..16, 4),
        ) {
            let mut row = perm_row(seed);
            row.extend(extra);
            let placement = Placement::new(row.clone(), 16, None).unwrap();
            let r = routing(tokens, seed);
            let even = dispatch(&r, &placement);
            let mut optimal = OptimalDispatcher::new(placement.clone(), 4, 5).unwrap();
            let d = optimal.dispatch(&r).unwrap();
            prop_assert!(max_gpu(&d, 5) <= max_gpu(&even, 5));
            for t in 0..tokens {
                for (i, &e) in r.experts_of(t).iter().enumerate() {
                    prop_assert_eq!(row[d.target(t, i).0], e);
                }
            }
        }
    }

    /// A seeded permutation of the 16 experts, so replicas land anywhere.
    fn perm_row(seed: u64) -> Vec<u32> {
        let mut row: Vec<u32> = (0..16).collect();
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        for i in (1..row.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            row.swap(i, (state >> 33) as usize % (i + 1));
        }
        row
    }
}
