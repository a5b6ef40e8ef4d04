//! Properties of plans around down GPUs (`PlanOptions::down_gpus`, issue 13
//! item 9), for every policy, fresh and migration-aware:
//! - no slot of a down GPU takes any share, and every expert keeps a live
//!   replica (its shares sum to 1 over live slots);
//! - where every node's live slots hold its groups' experts, the plan is
//!   node-local and says so; a migration-aware plan keeps every group on
//!   the node the previous plan had it on, and the down GPUs' slots keep
//!   what they held (nothing is loaded onto a dead GPU);
//! - the reported bound is `model_bounds_down`'s and never above the plan.

use ballast_solver::planner::{Placement, PlanError, PlanOptions, Policy, Split};
use ballast_solver::{model_bounds_down, score, solve, LoadMatrix, Plan, Topology, TopologySpec};
use proptest::prelude::*;

const EPS: f64 = 1e-9;

/// Hierarchical-capable topologies up to 64 slots (and some that are not),
/// uniform or uneven speeds.
fn topologies() -> impl Strategy<Value = Topology> {
    (
        1usize..=3,
        2usize..=4,
        1usize..=4,
        1usize..=2,
        1usize..=4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map(
            "fits",
            |(n, g, s, groups_per_node, per_group, fast, odd)| {
                let k = groups_per_node * n + usize::from(odd && n > 1);
                let e = k * per_group;
                if n * g * s < e || n * g * s > 64 {
                    return None;
                }
                Topology::new(TopologySpec {
                    num_layers: 2,
                    num_logical_experts: e as i64,
                    num_groups: k as i64,
                    num_nodes: n as i64,
                    gpus_per_node: g as i64,
                    slots_per_gpu: s as i64,
                    gpu_speed: fast.then(|| (0..n * g).map(|i| 1.0 + (i % 3) as f64).collect()),
                    expert_bytes: None,
                    num_hidden_layers: None,
                    first_moe_layer: None,
                    mtp_layers: None,
                })
                .ok()
            },
        )
}

fn loads(t: &Topology) -> impl Strategy<Value = LoadMatrix> {
    let t = t.clone();
    let cells = t.num_layers() * t.num_logical_experts();
    prop::collection::vec(0u32..200, cells).prop_map(move |v| {
        let rows = v
            .chunks(t.num_logical_experts())
            .map(|r| r.iter().map(|&x| f64::from(x)).collect())
            .collect();
        LoadMatrix::new(rows, &t).expect("shaped for the topology")
    })
}

/// A topology, two loads and a set of down GPUs (possibly a whole node).
fn case() -> impl Strategy<Value = (Topology, LoadMatrix, LoadMatrix, Vec<usize>)> {
    topologies().prop_flat_map(|t| {
        let gpus = t.num_gpus();
        let down = prop::collection::btree_set(0..gpus, 1..gpus.max(2))
            .prop_map(|set| set.into_iter().collect::<Vec<_>>());
        (Just(t.clone()), loads(&t), loads(&t), down)
    })
}

fn options(policy: Policy, previous: Option<Plan>, down: &[usize]) -> PlanOptions {
    PlanOptions {
        policy,
        split: Split::Even,
        previous,
        down_gpus: down.to_vec(),
        ..PlanOptions::default()
    }
}

/// Every node's live slots hold the experts of its `K / N` groups.
fn node_local_possible(t: &Topology, down: &[usize]) -> bool {
    if !t.supports_hierarchical() {
        return false;
    }
    let hosted = t.num_groups() / t.num_nodes() * t.experts_per_group();
    (0..t.num_nodes()).all(|n| {
        let live = (0..t.gpus_per_node())
            .filter(|i| !down.contains(&(n * t.gpus_per_node() + i)))
            .count();
        live * t.slots_per_gpu() >= hosted
    })
}

/// The node holding each group's replicas in `row`, if each is on one node.
fn homes(t: &Topology, row: &[u32]) -> Option<Vec<usize>> {
    let mut home = vec![None; t.num_groups()];
    for (p, &e) in row.iter().enumerate() {
        let node = t.node_of_gpu(t.gpu_of_slot(p));
        if *home[t.group_of_expert(e as usize)].get_or_insert(node) != node {
            return None;
        }
    }
    home.into_iter().collect()
}

fn check_outage(
    t: &Topology,
    load: &LoadMatrix,
    down: &[usize],
    plan: &Plan,
) -> Result<(), TestCaseError> {
    let s = t.slots_per_gpu();
    let shares = plan
        .replica_share()
        .expect("plans around down GPUs carry shares");
    for (l, (row, share)) in plan.phy2log().iter().zip(shares).enumerate() {
        let mut live = vec![0.0; t.num_logical_experts()];
        for (p, (&e, &x)) in row.iter().zip(share).enumerate() {
            if down.contains(&(p / s)) {
                prop_assert_eq!(x, 0.0, "layer {} slot {} of a down GPU takes share", l, p);
            } else {
                live[e as usize] += x;
            }
        }
        for (e, sum) in live.iter().enumerate() {
            prop_assert!(
                (sum - 1.0).abs() < 1e-9,
                "expert {} has live share {}",
                e,
                sum
            );
        }
    }
    let loads = score::score(t, load, plan);
    prop_assert!(loads.model_imbalance.is_finite());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn plans_around_down_gpus_stay_node_local_and_load_no_down_gpu(
        (t, first, next, down) in case(),
        optimal in any::<bool>(),
    ) {
        let policy = if optimal { Policy::Optimal } else { Policy::Greedy };
        let live_slots = (t.num_gpus() - down.len()) * t.slots_per_gpu();
        let fresh = solve(&t, &next, &options(policy, None, &down));
        if live_slots < t.num_logical_experts() {
            let refused = matches!(fresh, Err(PlanError::Capacity { .. }));
            prop_assert!(refused, "{:?}", fresh.err());
            return Ok(());
        }
        let fresh = fresh.map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_outage(&t, &next, &down, &fresh.plan)?;
        let local = node_local_possible(&t, &down);
        if local {
            prop_assert!(score::score(&t, &next, &fresh.plan).is_node_local());
        }
        if t.supports_hierarchical() {
            let expected = if local { Placement::Hierarchical } else { Placement::Global };
            prop_assert_eq!(fresh.stats.placement, expected);
        }
        let bounds = model_bounds_down(&t, &next, &down);
        let bound = if fresh.stats.placement == Placement::Hierarchical {
            bounds.node_local.expect("node-local is possible")
        } else {
            bounds.even_split
        };
        prop_assert!((fresh.stats.bound - bound).abs() <= EPS * bound.max(1.0));
        prop_assert!(fresh.stats.bound <= fresh.stats.model_imbalance * (1.0 + EPS));

        // Migration-aware, from a plan made while every GPU was up.
        let before = solve(&t, &first, &options(policy, None, &[]))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let replan = solve(&t, &next, &options(policy, Some(before.plan.clone()), &down))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_outage(&t, &next, &down, &replan.plan)?;
        if local {
            prop_assert!(score::score(&t, &next, &replan.plan).is_node_local());
            let (s_count, g) = (t.slots_per_gpu(), t.gpus_per_node());
            for l in 0..t.num_layers() {
                let old = before.plan.layer(l);
                let new = replan.plan.layer(l);
                prop_assert_eq!(homes(&t, old), homes(&t, new), "layer {} moved a group", l);
                for &gpu in &down {
                    let slots = gpu * s_count..(gpu + 1) * s_count;
                    prop_assert_eq!(&old[slots.clone()], &new[slots], "layer {} reloaded down GPU {} (node {})", l, gpu, gpu / g);
                }
            }
        }
        prop_assert!(replan.stats.bound <= replan.stats.model_imbalance * (1.0 + EPS));

        // The GPUs come back: a plan of the whole cluster again.
        let back = solve(&t, &next, &options(policy, Some(replan.plan.clone()), &[]))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if t.supports_hierarchical() {
            prop_assert!(score::score(&t, &next, &back.plan).is_node_local());
        }
    }
}

/// Prefill-shaped but small: 2 nodes × 4 GPUs × 3 slots, 2 groups of 8
/// experts; one GPU down leaves its node 9 live slots for 8 experts.
fn small() -> Topology {
    Topology::from_json(
        r#"{"num_layers": 2, "num_logical_experts": 16, "num_groups": 2,
            "num_nodes": 2, "gpus_per_node": 4, "slots_per_gpu": 3}"#,
    )
    .unwrap()
}

#[test]
fn a_dead_gpu_moves_only_its_nodes_experts() {
    let t = small();
    let rows = vec![
        (1..=16).map(f64::from).collect::<Vec<_>>(),
        (1..=16).rev().map(|x| f64::from(x * x)).collect(),
    ];
    let load = LoadMatrix::new(rows, &t).unwrap();
    let before = solve(&t, &load, &options(Policy::Optimal, None, &[])).unwrap();
    let after = solve(
        &t,
        &load,
        &options(Policy::Optimal, Some(before.plan.clone()), &[5]),
    )
    .unwrap();
    check_outage(&t, &load, &[5], &after.plan).unwrap();
    assert!(score::score(&t, &load, &after.plan).is_node_local());
    assert_eq!(after.stats.placement, Placement::Hierarchical);
    // Same load: the node without a down GPU keeps its slots.
    let per_node = t.slots_per_node();
    for l in 0..t.num_layers() {
        let (old, new) = (before.plan.layer(l), after.plan.layer(l));
        assert_eq!(homes(&t, old), homes(&t, new));
        assert_eq!(
            old[..per_node],
            new[..per_node],
            "layer {l}: node 0 has no down GPU"
        );
    }
    let migrations = after.stats.migrations.unwrap();
    assert!(migrations > 0 && migrations <= per_node, "{migrations}");
}

#[test]
fn no_node_local_plan_when_a_node_cannot_hold_its_groups() {
    // One GPU down leaves node 0 three slots for its four experts: the
    // lightest moves whole to node 1, and the plan says global.
    let t = Topology::from_json(
        r#"{"num_layers": 1, "num_logical_experts": 8, "num_groups": 2,
            "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
    )
    .unwrap();
    let load = LoadMatrix::new(vec![vec![8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]], &t).unwrap();
    let out = solve(&t, &load, &options(Policy::Optimal, None, &[1])).unwrap();
    check_outage(&t, &load, &[1], &out.plan).unwrap();
    assert_eq!(out.stats.placement, Placement::Global);
    let row = out.plan.layer(0);
    let home = row[6..].iter().filter(|&&e| e < 4).collect::<Vec<_>>();
    assert!(!home.is_empty() && home.iter().all(|&&e| e == 3), "{row:?}");
    assert_eq!(model_bounds_down(&t, &load, &[1]).node_local, None);
    let err = solve(&t, &load, &options(Policy::OptimalHierarchical, None, &[1])).unwrap_err();
    assert!(matches!(err, PlanError::Unsupported(_)), "{err}");
    let err = solve(&t, &load, &options(Policy::Optimal, None, &[0, 1, 2])).unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::Capacity {
                live_slots: 3,
                experts: 8,
                ..
            }
        ),
        "{err}"
    );
    let err = solve(&t, &load, &options(Policy::Optimal, None, &[4])).unwrap_err();
    assert!(matches!(err, PlanError::InvalidOption(_)), "{err}");
}
