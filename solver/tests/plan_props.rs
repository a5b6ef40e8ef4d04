//! Properties of the greedy planner on random small topologies and loads:
//! any valid input gives a valid plan whose reported figures are true.

use ballast_solver::planner::Placement;
use ballast_solver::{
    model_bounds, score, solve, LoadMatrix, Plan, PlanError, PlanOptions, PlanOutcome, Policy,
    Topology, TopologySpec,
};
use proptest::prelude::*;

/// Relative tolerance for comparing figures computed in different orders.
const EPS: f64 = 1e-9;

#[derive(Debug, Clone)]
struct Input {
    topology: Topology,
    load: LoadMatrix,
}

/// Topologies with 1–4 nodes × 1–4 GPUs, `K % N` zero or not, optional
/// random GPU speeds, and enough slots for every expert.
fn topology() -> impl Strategy<Value = Topology> {
    (
        1usize..=4,
        1usize..=4,
        1usize..=4,
        1usize..=3,
        0usize..=2,
        1usize..=3,
        any::<bool>(),
    )
        .prop_flat_map(
            |(nodes, gpus, per_group, groups_per_node, odd, layers, fast)| {
                // `odd` > 0 makes K % N != 0 when there is more than one node.
                let groups = (nodes * groups_per_node + odd).max(1);
                let experts = groups * per_group;
                let min_slots = experts.div_ceil(nodes * gpus);
                let speeds = prop::collection::vec(0.25f64..4.0, nodes * gpus);
                (
                    Just((nodes, gpus, groups, experts, layers)),
                    min_slots..=min_slots + 3,
                    prop::option::of(speeds),
                    Just(fast),
                )
            },
        )
        .prop_map(
            |((nodes, gpus, groups, experts, layers), slots, speeds, fast)| {
                Topology::new(TopologySpec {
                    num_layers: layers as i64,
                    num_logical_experts: experts as i64,
                    num_groups: groups as i64,
                    num_nodes: nodes as i64,
                    gpus_per_node: gpus as i64,
                    slots_per_gpu: slots as i64,
                    gpu_speed: speeds.filter(|_| fast),
                    expert_bytes: None,
                    num_hidden_layers: None,
                    first_moe_layer: None,
                    mtp_layers: None,
                })
                .expect("strategy builds valid topologies")
            },
        )
}

/// Loads from flat to heavily skewed, with zeros.
fn input() -> impl Strategy<Value = Input> {
    topology()
        .prop_flat_map(|topology| {
            let cells = topology.num_layers() * topology.num_logical_experts();
            let value = prop_oneof![
                2 => Just(0.0),
                5 => 0.0f64..100.0,
                2 => (0u32..20).prop_map(|k| 2f64.powi(k as i32)),
            ];
            (Just(topology), prop::collection::vec(value, cells))
        })
        .prop_map(|(topology, values)| {
            let rows = values
                .chunks(topology.num_logical_experts())
                .map(<[f64]>::to_vec)
                .collect();
            let load = LoadMatrix::new(rows, &topology).expect("strategy builds valid loads");
            Input { topology, load }
        })
}

/// Model imbalance straight from the SPEC definition, with plain loops.
fn naive_model_imbalance(topology: &Topology, load: &LoadMatrix, outcome: &PlanOutcome) -> f64 {
    let (mut max_sum, mut ideal_sum) = (0.0, 0.0);
    for layer in 0..topology.num_layers() {
        let row = load.layer(layer);
        let phy2log = outcome.plan.layer(layer);
        let mut replicas = vec![0.0; topology.num_logical_experts()];
        for &e in phy2log {
            replicas[e as usize] += 1.0;
        }
        let mut gpu = vec![0.0; topology.num_gpus()];
        for (slot, &e) in phy2log.iter().enumerate() {
            gpu[slot / topology.slots_per_gpu()] += row[e as usize] / replicas[e as usize];
        }
        let max = gpu
            .iter()
            .zip(topology.gpu_speed())
            .map(|(l, s)| l / s)
            .fold(0.0, f64::max);
        max_sum += max;
        ideal_sum += row.iter().sum::<f64>() / topology.gpu_speed().iter().sum::<f64>();
    }
    if ideal_sum > 0.0 {
        max_sum / ideal_sum
    } else {
        1.0
    }
}

/// Same-GPU duplicates no plan with the same replica counts can avoid.
fn unavoidable_duplicates(topology: &Topology, outcome: &PlanOutcome) -> usize {
    let scope = match outcome.stats.placement {
        Placement::Hierarchical => topology.gpus_per_node(),
        Placement::Global | Placement::Covisit => topology.num_gpus(),
    } as u32;
    outcome
        .plan
        .logcnt(topology.num_logical_experts())
        .iter()
        .flatten()
        .map(|&c| c.saturating_sub(scope) as usize)
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= EPS * a.abs().max(b.abs()).max(1.0)
}

fn check(input: &Input, policy: Policy) -> Result<(), TestCaseError> {
    let Input { topology, load } = input;
    let options = PlanOptions {
        policy,
        ..PlanOptions::default()
    };
    let outcome = match solve(topology, load, &options) {
        Err(PlanError::HierarchicalImpossible { .. }) => {
            prop_assert!(!topology.supports_hierarchical());
            prop_assert_eq!(policy, Policy::GreedyHierarchical);
            return Ok(());
        }
        other => other.map_err(|e| TestCaseError::fail(e.to_string()))?,
    };
    let stats = &outcome.stats;
    let expected = match policy {
        Policy::GreedyGlobal => Placement::Global,
        _ if topology.supports_hierarchical() => Placement::Hierarchical,
        _ => Placement::Global,
    };
    prop_assert_eq!(stats.placement, expected);

    // Every slot holds a known expert and every expert has a slot.
    let counts = outcome.plan.logcnt(topology.num_logical_experts());
    for (layer, row) in outcome.plan.phy2log().iter().enumerate() {
        prop_assert_eq!(row.len(), topology.num_slots());
        prop_assert!(
            counts[layer].iter().all(|&c| c >= 1),
            "layer {} misses an expert",
            layer
        );
    }

    let scored = score::score(topology, load, &outcome.plan);
    if stats.placement == Placement::Hierarchical {
        prop_assert_eq!(scored.groups_off_node, 0);
    }
    prop_assert!(close(
        stats.model_imbalance,
        naive_model_imbalance(topology, load, &outcome)
    ));
    prop_assert!(close(stats.model_imbalance, scored.model_imbalance));
    prop_assert_eq!(stats.same_gpu_duplicates, scored.same_gpu_duplicates);
    prop_assert_eq!(
        stats.same_gpu_duplicates,
        unavoidable_duplicates(topology, &outcome)
    );

    // The bound is a bound, and the one `model_bounds` reports.
    prop_assert!(stats.bound <= stats.model_imbalance * (1.0 + EPS));
    // Optimal routing never loses to the plan's own split, and no routing
    // beats perfect balance.
    let routed = &stats.optimal_routing;
    prop_assert!(routed.model_imbalance <= stats.model_imbalance * (1.0 + EPS));
    prop_assert!(routed.max_layer_imbalance <= stats.max_layer_imbalance * (1.0 + EPS));
    prop_assert!(routed.model_imbalance >= 1.0 - EPS);
    for layer in &stats.layers {
        prop_assert!(layer.bound <= layer.imbalance * (1.0 + EPS), "{:?}", layer);
    }
    let bounds = model_bounds(topology, load);
    let same_rule = match stats.placement {
        Placement::Hierarchical => bounds.node_local.unwrap_or(f64::NAN),
        Placement::Global => bounds.even_split,
        Placement::Covisit => bounds.covisit.unwrap_or(f64::NAN),
    };
    prop_assert!(
        close(stats.bound, same_rule),
        "{} vs {}",
        stats.bound,
        same_rule
    );
    if let Some(node_local) = bounds.node_local {
        prop_assert!(bounds.even_split <= node_local * (1.0 + EPS));
    }

    // One slot per GPU, equal speeds, global: the bound is reached.
    if topology.slots_per_gpu() == 1
        && topology.has_uniform_speed()
        && stats.placement == Placement::Global
    {
        prop_assert!(close(stats.model_imbalance, stats.bound));
    }
    Ok(())
}

/// xorshift64*: a small deterministic generator for random plans.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A random node-local plan: groups dealt to nodes, each node's slots filled
/// with its experts once and random extras, in random order.
fn random_node_local_plan(topology: &Topology, rng: &mut Rng) -> Plan {
    let per_group = topology.experts_per_group();
    let per_node = topology.num_groups() / topology.num_nodes();
    let rows = (0..topology.num_layers())
        .map(|_| {
            let mut groups: Vec<usize> = (0..topology.num_groups()).collect();
            rng.shuffle(&mut groups);
            groups
                .chunks(per_node)
                .flat_map(|hosted| {
                    let experts: Vec<u32> = hosted
                        .iter()
                        .flat_map(|g| (g * per_group..(g + 1) * per_group).map(|e| e as u32))
                        .collect();
                    let mut slots = experts.clone();
                    while slots.len() < topology.slots_per_node() {
                        slots.push(experts[rng.below(experts.len())]);
                    }
                    rng.shuffle(&mut slots);
                    slots
                })
                .collect()
        })
        .collect();
    Plan::new(rows, None, topology).expect("random plans place every expert")
}

/// A random plan with no placement rule.
fn random_plan(topology: &Topology, rng: &mut Rng) -> Plan {
    let experts = topology.num_logical_experts();
    let rows = (0..topology.num_layers())
        .map(|_| {
            let mut slots: Vec<u32> = (0..experts as u32).collect();
            while slots.len() < topology.num_slots() {
                slots.push(rng.below(experts) as u32);
            }
            rng.shuffle(&mut slots);
            slots
        })
        .collect();
    Plan::new(rows, None, topology).expect("random plans place every expert")
}

// 256 cases by default; PROPTEST_CASES raises it.
proptest! {
    /// The bounds hold for any plan under their rules, not just ours.
    #[test]
    fn bounds_hold_for_random_plans(input in input(), seed in 1u64..) {
        let Input { topology, load } = &input;
        let bounds = model_bounds(topology, load);
        let mut rng = Rng(seed);
        for _ in 0..4 {
            let any = score::score(topology, load, &random_plan(topology, &mut rng));
            prop_assert!(bounds.even_split <= any.model_imbalance * (1.0 + EPS));
            for (bound, layer) in bounds.layers.iter().zip(&any.layers) {
                prop_assert!(bound.even_split <= layer.imbalance * (1.0 + EPS));
            }
            if let Some(node_local) = bounds.node_local {
                let plan = random_node_local_plan(topology, &mut rng);
                let local = score::score(topology, load, &plan);
                prop_assert!(node_local <= local.model_imbalance * (1.0 + EPS));
                for (bound, layer) in bounds.layers.iter().zip(&local.layers) {
                    let node_local = bound.node_local.unwrap_or(f64::NAN);
                    prop_assert!(node_local <= layer.imbalance * (1.0 + EPS));
                }
            }
        }
    }

    #[test]
    fn greedy_plans_are_valid(input in input()) {
        check(&input, Policy::Greedy)?;
    }

    #[test]
    fn forced_placements_are_valid(input in input()) {
        check(&input, Policy::GreedyGlobal)?;
        check(&input, Policy::GreedyHierarchical)?;
    }
}

/// Past 20 groups the split is greedy and the bound weaker, but the plan is
/// as valid and the bound still a bound.
#[test]
fn many_groups_fall_back_to_a_greedy_split() {
    let topology = Topology::from_json(
        r#"{"num_layers": 3, "num_logical_experts": 64, "num_groups": 32,
            "num_nodes": 4, "gpus_per_node": 2, "slots_per_gpu": 10}"#,
    )
    .unwrap();
    let rows = (0..3)
        .map(|l| {
            (0..64)
                .map(|e| ((e * 7 + l * 13) % 23) as f64 * 10.0 + 1.0)
                .collect()
        })
        .collect();
    let load = LoadMatrix::new(rows, &topology).unwrap();
    assert!(!model_bounds(&topology, &load).node_split_exact);
    let input = Input { topology, load };
    check(&input, Policy::Greedy).unwrap();
    check(&input, Policy::GreedyGlobal).unwrap();
}
