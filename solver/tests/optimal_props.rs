//! Properties of the optimal policy (issue 3):
//! - it is never worse than the greedy policy, layer by layer;
//! - no layer scores above the objective the planner reports for it, and the
//!   reported bound is never above the plan;
//! - the lower bounds are never above the exhaustive optimum of tiny
//!   instances (every phy2log row enumerated);
//! - re-plans are valid, report their migrations exactly and stay within the
//!   balance tolerance of a fresh plan.

use std::time::Duration;

use ballast_solver::planner::{PlanOptions, Policy, Split};
use ballast_solver::{model_bounds, score, solve, LoadMatrix, Plan, Topology, TopologySpec};
use proptest::prelude::*;

const EPS: f64 = 1e-9;

fn topology(
    n: usize,
    g: usize,
    s: usize,
    k: usize,
    e: usize,
    speeds: Option<Vec<f64>>,
) -> Option<Topology> {
    Topology::new(TopologySpec {
        num_layers: 2,
        num_logical_experts: e as i64,
        num_groups: k as i64,
        num_nodes: n as i64,
        gpus_per_node: g as i64,
        slots_per_gpu: s as i64,
        gpu_speed: speeds,
        expert_bytes: Some(1 << 20),
        num_hidden_layers: None,
        first_moe_layer: None,
        mtp_layers: None,
    })
    .ok()
}

/// Topologies up to 60 slots, with and without node-local placement and
/// with uneven GPU speeds.
fn topologies() -> impl Strategy<Value = Topology> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=4,
        1usize..=4,
        1usize..=3,
        0usize..3,
    )
        .prop_filter_map("fits", |(n, g, s, groups_per_node, per_group, speed)| {
            let k = groups_per_node * n;
            let e = k * per_group;
            if n * g * s < e || n * g * s > 60 {
                return None;
            }
            let speeds = match speed {
                0 => None,
                1 => Some((0..n * g).map(|i| 1.0 + (i % 2) as f64).collect()),
                _ => Some(
                    (0..n * g)
                        .map(|i| if i % g == 0 { 2.0 } else { 1.0 })
                        .collect(),
                ),
            };
            topology(n, g, s, k, e, speeds)
        })
}

fn loads(t: &Topology) -> impl Strategy<Value = LoadMatrix> {
    let (layers, experts) = (t.num_layers(), t.num_logical_experts());
    let t = t.clone();
    prop::collection::vec(prop::collection::vec(0u32..200, experts), layers).prop_map(move |rows| {
        let rows = rows
            .into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect();
        LoadMatrix::new(rows, &t).expect("shaped for the topology")
    })
}

fn case() -> impl Strategy<Value = (Topology, LoadMatrix, LoadMatrix)> {
    topologies().prop_flat_map(|t| {
        let (a, b) = (loads(&t), loads(&t));
        (Just(t), a, b)
    })
}

fn options(policy: Policy, split: Split) -> PlanOptions {
    PlanOptions {
        policy,
        split,
        ..PlanOptions::default()
    }
}

/// The smallest largest GPU load over every even-split plan of one layer,
/// by enumerating all `E^P` slot rows. With `hierarchical`, only plans that
/// keep each group on one node, `K / N` groups per node (the rule the
/// node-local bound and the planners follow).
fn exhaustive_optimum(t: &Topology, row: &[f64], hierarchical: bool) -> f64 {
    let (p, e) = (t.num_slots(), t.num_logical_experts());
    let mut slots = vec![0usize; p];
    let mut best = f64::INFINITY;
    loop {
        let mut counts = vec![0usize; e];
        slots.iter().for_each(|&x| counts[x] += 1);
        let node_local = !hierarchical || {
            let mut home: Vec<Option<usize>> = vec![None; t.num_groups()];
            let one_node = (0..p).all(|q| {
                let node = t.node_of_gpu(t.gpu_of_slot(q));
                *home[t.group_of_expert(slots[q])].get_or_insert(node) == node
            });
            let per_node = t.num_groups() / t.num_nodes();
            one_node
                && (0..t.num_nodes())
                    .all(|n| home.iter().filter(|&&h| h == Some(n)).count() == per_node)
        };
        if counts.iter().all(|&c| c > 0) && node_local {
            let max = (0..t.num_gpus())
                .map(|g| {
                    (g * t.slots_per_gpu()..(g + 1) * t.slots_per_gpu())
                        .map(|q| row[slots[q]] / counts[slots[q]] as f64)
                        .sum::<f64>()
                        / t.gpu_speed()[g]
                })
                .fold(0.0, f64::max);
            best = best.min(max);
        }
        // Next row in lexicographic order.
        let Some(i) = (0..p).rev().find(|&i| slots[i] + 1 < e) else {
            return best;
        };
        slots[i] += 1;
        slots[i + 1..].iter_mut().for_each(|x| *x = 0);
    }
}

fn tiny() -> impl Strategy<Value = (Topology, LoadMatrix)> {
    (1usize..=2, 1usize..=2, 1usize..=3, 1usize..=2, 1usize..=2)
        .prop_filter_map("tiny", |(n, g, s, groups_per_node, per_group)| {
            let k = groups_per_node * n;
            let e = k * per_group;
            let p = n * g * s;
            (p >= e && p <= 8 && e <= 4)
                .then(|| topology(n, g, s, k, e, None))
                .flatten()
        })
        .prop_flat_map(|t| {
            let l = loads(&t);
            (Just(t), l)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_worse_than_greedy_nor_above_its_objective(
        (t, load, _) in case(),
        weighted in any::<bool>(),
        patient in any::<bool>(),
    ) {
        let split = if weighted { Split::Weighted } else { Split::Even };
        let greedy = solve(&t, &load, &options(Policy::Greedy, Split::Even)).unwrap();
        let optimal = PlanOptions {
            time_limit: patient.then(|| Duration::from_secs(1)),
            ..options(Policy::Optimal, split)
        };
        let optimal = solve(&t, &load, &optimal).unwrap();
        let scored = score::score(&t, &load, &optimal.plan);
        if t.supports_hierarchical() {
            prop_assert_eq!(scored.groups_off_node, 0);
        }
        for (l, (o, g)) in optimal.stats.layers.iter().zip(&greedy.stats.layers).enumerate() {
            prop_assert!(o.imbalance <= g.imbalance * (1.0 + EPS) + EPS, "layer {l}: {} > greedy {}", o.imbalance, g.imbalance);
            prop_assert!((o.imbalance - scored.layers[l].imbalance).abs() <= EPS * o.imbalance.max(1.0));
            prop_assert!(o.imbalance <= o.objective * (1.0 + EPS) + EPS, "layer {l}: {} > objective {}", o.imbalance, o.objective);
            prop_assert!(o.bound <= o.imbalance * (1.0 + EPS) + EPS, "layer {l}: bound {} > {}", o.bound, o.imbalance);
        }
    }

    #[test]
    fn bounds_never_exceed_the_exhaustive_optimum((t, load) in tiny()) {
        let bounds = model_bounds(&t, &load);
        // An explicit time limit also runs the exact even-split model, whose
        // dual bound can raise the reported bound.
        let patient = PlanOptions {
            time_limit: Some(Duration::from_secs(2)),
            ..options(Policy::Optimal, Split::Even)
        };
        let optimal = solve(&t, &load, &patient).unwrap();
        for l in 0..t.num_layers() {
            let row = load.layer(l);
            let ideal = score::ideal_load(&t, row);
            if ideal <= 0.0 {
                continue;
            }
            let global = exhaustive_optimum(&t, row, false) / ideal;
            let ruled = exhaustive_optimum(&t, row, t.supports_hierarchical()) / ideal;
            prop_assert!(optimal.stats.layers[l].bound <= ruled * (1.0 + EPS), "reported bound {} > optimum {ruled}", optimal.stats.layers[l].bound);
            prop_assert!(bounds.layers[l].even_split <= global * (1.0 + EPS), "even bound {} > optimum {global}", bounds.layers[l].even_split);
            if let Some(node_local) = bounds.layers[l].node_local {
                let local = exhaustive_optimum(&t, row, true) / ideal;
                prop_assert!(node_local <= local * (1.0 + EPS), "node-local bound {node_local} > optimum {local}");
                prop_assert!(optimal.stats.layers[l].imbalance >= local * (1.0 - EPS), "plan beats the exhaustive optimum");
            }
        }
    }

    #[test]
    fn replans_are_valid_counted_and_within_tolerance((t, first, next) in case(), weighted in any::<bool>()) {
        let split = if weighted { Split::Weighted } else { Split::Even };
        let before = solve(&t, &first, &options(Policy::Optimal, split)).unwrap();
        let fresh = solve(&t, &next, &options(Policy::Optimal, split)).unwrap();
        let mut again = options(Policy::Optimal, split);
        again.previous = Some(before.plan.clone());
        let replanned = solve(&t, &next, &again).unwrap();
        let moved = score::migrations(&t, &before.plan, &replanned.plan);
        prop_assert_eq!(replanned.stats.migrations, Some(moved));
        prop_assert_eq!(replanned.stats.bytes_moved, Some(moved as u64 * (1 << 20)));
        let bound = replanned.stats.replan.as_ref().and_then(|r| r.migrations_bound);
        prop_assert!(bound.is_some_and(|b| b <= moved), "migrations bound {bound:?} > {moved}");
        let scored = score::score(&t, &next, &replanned.plan);
        if t.supports_hierarchical() {
            prop_assert_eq!(scored.groups_off_node, 0);
        }
        let limit = fresh.stats.model_imbalance * (1.0 + again.balance_tolerance);
        prop_assert!(scored.model_imbalance <= limit * (1.0 + EPS) + EPS, "{} > {limit}", scored.model_imbalance);
        prop_assert_eq!(replanned.plan.replica_share().is_some(), weighted);
        let kept = Plan::new(replanned.plan.phy2log().to_vec(), replanned.plan.replica_share().map(<[Vec<f64>]>::to_vec), &t);
        prop_assert!(kept.is_ok());
    }
}

#[test]
fn keeping_the_plan_costs_nothing_when_the_load_is_unchanged() {
    let t = Topology::from_json(include_str!("../../data/topologies/small.json")).unwrap();
    let load =
        LoadMatrix::from_json(include_str!("../../data/loads/E64_lognorm0.8.json"), &t).unwrap();
    let first = solve(&t, &load, &PlanOptions::default()).unwrap();
    let again = PlanOptions {
        previous: Some(first.plan.clone()),
        ..PlanOptions::default()
    };
    let replanned = solve(&t, &load, &again).unwrap();
    assert_eq!(replanned.stats.migrations, Some(0));
    let replan = replanned.stats.replan.as_ref().expect("re-plan stats");
    assert_eq!(replan.migrations_bound, Some(0));
    assert!(replanned.stats.model_imbalance <= first.stats.model_imbalance * (1.0 + 1e-12));
}
