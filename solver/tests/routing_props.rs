//! Property tests of `ballast_solver::routing` against HiGHS models (good_lp)
//! on small random layers with random GPU speeds.
//!
//! Each case checks the router's answer independently: every token routed,
//! only to replicas of its expert (and on its node when required), in whole
//! tokens; the optimum equals the MILP's; the bottleneck certificate holds.

#[path = "../examples/support/mod.rs"]
mod support;

use std::sync::Mutex;
use std::time::Duration;

use good_lp::solvers::highs::highs;
use good_lp::{constraint, variable, variables, Expression, Solution, SolverModel, Variable};
use proptest::prelude::*;

use ballast_solver::routing::{
    score_optimal, BudgetRouting, Locality, Router, Routing, RoutingError, SearchLimits,
};
use ballast_solver::{score, LoadMatrix, Plan, Topology};

/// HiGHS runs one model at a time in this process (its thread pool is
/// global), always with one thread, as the library's own models do (HiGHS
/// refuses a model whose thread count differs from the first one's). Hold
/// it around budgeted routing too: that may solve a MILP.
static HIGHS: Mutex<()> = Mutex::new(());

/// A random layer: topology, plan row, speeds.
#[derive(Debug, Clone)]
struct Case {
    nodes: usize,
    gpus_per_node: usize,
    slots: usize,
    experts: usize,
    speeds: Vec<f64>,
    row: Vec<u32>,
}

impl Case {
    fn num_gpus(&self) -> usize {
        self.nodes * self.gpus_per_node
    }

    /// The topology, with `speeds` replaced by what it parsed to (JSON
    /// float parsing may move a value by one ulp, and exact checks need
    /// the very speeds the router uses).
    fn topology(&mut self) -> Topology {
        let speeds: Vec<String> = self.speeds.iter().map(|s| format!("{s:?}")).collect();
        let topology = Topology::from_json(&format!(
            r#"{{"num_layers": 1, "num_logical_experts": {}, "num_groups": 1,
                "num_nodes": {}, "gpus_per_node": {}, "slots_per_gpu": {},
                "gpu_speed": [{}]}}"#,
            self.experts,
            self.nodes,
            self.gpus_per_node,
            self.slots,
            speeds.join(",")
        ))
        .expect("valid topology");
        self.speeds = topology.gpu_speed().to_vec();
        topology
    }

    fn plan(&self, topology: &Topology) -> Plan {
        Plan::new(vec![self.row.clone()], None, topology).expect("valid plan")
    }

    fn gpu_of_slot(&self, slot: usize) -> usize {
        slot / self.slots
    }

    fn node_of_gpu(&self, gpu: usize) -> usize {
        gpu / self.gpus_per_node
    }

    /// Distinct GPUs holding expert `e`.
    fn gpus_of(&self, e: usize) -> Vec<usize> {
        let mut gpus: Vec<usize> = (0..self.row.len())
            .filter(|&p| self.row[p] as usize == e)
            .map(|p| self.gpu_of_slot(p))
            .collect();
        gpus.dedup();
        gpus
    }
}

fn case_strategy(max_gpus_per_node: usize, max_nodes: usize) -> impl Strategy<Value = Case> {
    sized_case_strategy(max_gpus_per_node, max_nodes, 4)
}

fn sized_case_strategy(
    max_gpus_per_node: usize,
    max_nodes: usize,
    max_slots: usize,
) -> impl Strategy<Value = Case> {
    (1..=max_nodes, 1..=max_gpus_per_node, 1..=max_slots)
        .prop_flat_map(|(nodes, gpus_per_node, slots)| {
            let num_slots = nodes * gpus_per_node * slots;
            let num_gpus = nodes * gpus_per_node;
            (
                Just((nodes, gpus_per_node, slots)),
                1..=num_slots,
                prop::collection::vec(
                    prop_oneof![Just(1.0), Just(0.5), Just(2.0), Just(3.0), 0.2f64..4.0],
                    num_gpus,
                ),
                prop::collection::vec(any::<u32>(), num_slots),
                Just((0..num_slots).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(
            |((nodes, gpus_per_node, slots), experts, speeds, fill, order)| {
                // The first `experts` positions of a random order place every
                // expert once; the other slots get random experts.
                let mut row = vec![0u32; order.len()];
                for (i, &p) in order.iter().enumerate() {
                    row[p] = if i < experts {
                        i as u32
                    } else {
                        fill[p] % experts as u32
                    };
                }
                Case {
                    nodes,
                    gpus_per_node,
                    slots,
                    experts,
                    speeds,
                    row,
                }
            },
        )
}

fn tokens_strategy(experts: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(prop_oneof![Just(0u64), 0u64..60, 0u64..400], experts)
}

/// min T s.t. Σ_g x[d][g] = t_d, Σ_d x[d][g] <= T s_g, x integer (or real).
/// `demands` lists (tokens, usable GPUs).
fn milp_min_max(speeds: &[f64], demands: &[(f64, Vec<usize>)], integer: bool) -> f64 {
    let _lock = HIGHS.lock().unwrap_or_else(|e| e.into_inner());
    let mut vars = variables!();
    let t = vars.add(variable().min(0.0));
    let mut gpu_load: Vec<Expression> = vec![Expression::from(0.0); speeds.len()];
    let mut assign: Vec<Vec<(usize, Variable)>> = Vec::new();
    for (_, gpus) in demands {
        let mut row = Vec::new();
        for &g in gpus {
            let def = if integer {
                variable().integer().min(0.0)
            } else {
                variable().min(0.0)
            };
            let x = vars.add(def);
            gpu_load[g] += x;
            row.push((g, x));
        }
        assign.push(row);
    }
    let mut model = vars
        .minimise(t)
        .using(highs)
        .set_threads(1)
        .set_mip_rel_gap(0.0)
        .expect("gap")
        .set_mip_abs_gap(0.0)
        .expect("gap");
    for ((tokens, _), row) in demands.iter().zip(&assign) {
        let sum: Expression = row.iter().map(|&(_, x)| x).sum();
        model = model.with(constraint!(sum == *tokens));
    }
    for (g, l) in gpu_load.into_iter().enumerate() {
        model = model.with(constraint!(l <= speeds[g] * t));
    }
    let solution = model.solve().expect("HiGHS solves a feasible model");
    if integer {
        // Evaluate the objective from HiGHS's (rounded) assignment, as ours is.
        let mut loads = vec![0.0; speeds.len()];
        for row in &assign {
            for &(g, x) in row {
                loads[g] += solution.value(x).round();
            }
        }
        loads
            .iter()
            .zip(speeds)
            .map(|(l, s)| l / s)
            .fold(0.0, f64::max)
    } else {
        solution.value(t)
    }
}

/// Whole tokens only on replicas of their expert, every token routed.
fn check_feasible(case: &Case, tokens: &[u64], routing: &Routing) {
    let mut per_expert = vec![0u64; case.experts];
    for (p, &x) in routing.slot_tokens().iter().enumerate() {
        per_expert[case.row[p] as usize] += x;
    }
    assert_eq!(per_expert, tokens, "every token routed to its own expert");
    for g in 0..case.num_gpus() {
        let sum: u64 = routing.slot_tokens()[g * case.slots..(g + 1) * case.slots]
            .iter()
            .sum();
        assert_eq!(routing.gpu_tokens()[g], sum);
    }
    let max = routing
        .gpu_tokens()
        .iter()
        .zip(&case.speeds)
        .map(|(&t, &s)| t as f64 / s)
        .fold(0.0, f64::max);
    assert_eq!(routing.max_load(), max);
}

/// The certificate: the bottleneck tokens are exactly those whose every
/// usable replica is inside the set, and below `max_load` the set is short.
fn check_certificate(speeds: &[f64], demands: &[(f64, Vec<usize>)], routing: &Routing) {
    let set = routing.bottleneck_gpus();
    let confined: f64 = demands
        .iter()
        .filter(|(_, gpus)| gpus.iter().all(|g| set.contains(&(*g as u32))))
        .map(|(t, _)| t)
        .sum();
    assert_eq!(confined as u64, routing.bottleneck_tokens());
    assert!(routing.check_bottleneck(speeds), "certificate fails");
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn integral_routing_is_feasible_and_optimal(
        (mut case, tokens) in case_strategy(4, 2)
            .prop_flat_map(|c| { let e = c.experts; (Just(c), tokens_strategy(e)) })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let mut router = Router::new(&topology, &plan, 0).unwrap();
        let mut routing = Routing::new();
        router.route(&tokens, &mut routing).unwrap();
        check_feasible(&case, &tokens, &routing);

        let demands: Vec<(f64, Vec<usize>)> = (0..case.experts)
            .filter(|&e| tokens[e] > 0)
            .map(|e| (tokens[e] as f64, case.gpus_of(e)))
            .collect();
        check_certificate(&case.speeds, &demands, &routing);
        let reference = milp_min_max(&case.speeds, &demands, true);
        prop_assert!(close(routing.max_load(), reference),
            "router {} vs HiGHS {}", routing.max_load(), reference);
    }

    #[test]
    fn same_node_sources_stay_on_their_node(
        (mut case, tokens) in case_strategy(3, 3).prop_flat_map(|c| {
            let n = c.num_gpus() * c.experts;
            (Just(c), prop::collection::vec(prop_oneof![Just(0u64), 0u64..40], n))
        })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let mut router = Router::with_locality(&topology, &plan, 0, Locality::SameNode).unwrap();
        let mut routing = Routing::new();
        let e_count = case.experts;
        // Sources may only send to experts with a replica on their node.
        let reachable = |src: usize, e: usize| {
            case.gpus_of(e).iter().any(|&g| case.node_of_gpu(g) == case.node_of_gpu(src))
        };
        let result = router.route_from_sources(&tokens, &mut routing);
        let unreachable = (0..tokens.len()).find(|&i| tokens[i] > 0 && !reachable(i / e_count, i % e_count));
        if let Some(i) = unreachable {
            prop_assert!(matches!(result, Err(RoutingError::Unreachable { .. })), "{i}: {result:?}");
            return Ok(());
        }
        result.unwrap();
        let mut per_source = vec![0u64; tokens.len()];
        let mut per_slot = vec![0u64; case.row.len()];
        for f in routing.source_flows() {
            let (src, slot) = (f.source_gpu as usize, f.slot as usize);
            prop_assert_eq!(case.node_of_gpu(src), case.node_of_gpu(case.gpu_of_slot(slot)));
            per_source[src * e_count + case.row[slot] as usize] += f.tokens;
            per_slot[slot] += f.tokens;
        }
        prop_assert_eq!(&per_source, &tokens);
        prop_assert_eq!(per_slot.as_slice(), routing.slot_tokens());

        // Demands are (node, expert) pairs restricted to the node's replicas.
        let mut demands = Vec::new();
        for node in 0..case.nodes {
            for e in 0..e_count {
                let t: u64 = (node * case.gpus_per_node..(node + 1) * case.gpus_per_node)
                    .map(|src| tokens[src * e_count + e])
                    .sum();
                if t > 0 {
                    let gpus = case.gpus_of(e).into_iter().filter(|&g| case.node_of_gpu(g) == node).collect();
                    demands.push((t as f64, gpus));
                }
            }
        }
        check_certificate(&case.speeds, &demands, &routing);
        let reference = milp_min_max(&case.speeds, &demands, true);
        prop_assert!(close(routing.max_load(), reference),
            "router {} vs HiGHS {}", routing.max_load(), reference);
    }

    #[test]
    fn optimal_score_is_the_lp_optimum(
        (mut case, load) in case_strategy(4, 2).prop_flat_map(|c| {
            let e = c.experts;
            (Just(c), prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..1000.0], e))
        })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let matrix = LoadMatrix::new(vec![load.clone()], &topology).unwrap();
        let optimal = score_optimal(&topology, &matrix, &plan);
        let demands: Vec<(f64, Vec<usize>)> = (0..case.experts)
            .filter(|&e| load[e] > 0.0)
            .map(|e| (load[e], case.gpus_of(e)))
            .collect();
        let reference = milp_min_max(&case.speeds, &demands, false);
        prop_assert!(close(optimal.layers[0].max_gpu_load, reference),
            "score_optimal {} vs HiGHS LP {}", optimal.layers[0].max_gpu_load, reference);
        let even = score::score(&topology, &matrix, &plan);
        prop_assert!(optimal.layers[0].max_gpu_load <= even.layers[0].max_gpu_load * (1.0 + 1e-12));
    }

    #[test]
    fn budgeted_routing_matches_the_milp(
        (mut case, tokens, budget) in case_strategy(3, 1).prop_flat_map(|c| {
            let (e, s) = (c.experts, c.slots);
            (Just(c), tokens_strategy(e), 1..=s)
        })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let mut router = Router::new(&topology, &plan, 0).unwrap();
        let result = {
            let _lock = HIGHS.lock().unwrap_or_else(|e| e.into_inner());
            router.route_with_budget(&tokens, budget, None, SearchLimits::default())
        };
        let reference = milp_with_budget(&case, &tokens, budget);
        let Some(reference) = reference else {
            prop_assert!(matches!(result,
                Err(RoutingError::BudgetInfeasible { .. } | RoutingError::BudgetTooSmall { .. })),
                "{result:?}");
            return Ok(());
        };
        let outcome = result.unwrap();
        check_budgeted(&case, &tokens, budget, &outcome);
        prop_assert!(outcome.is_proven_optimal());
        prop_assert!(close(outcome.routing.max_load(), reference),
            "budgeted {} vs HiGHS {}", outcome.routing.max_load(), reference);
    }

    /// Cut short — one search node and no MILP — the answer still brackets
    /// the optimum (lower bound <= MILP optimum <= its routing) and is a
    /// whole-token routing within budget; with the MILP and no search
    /// nodes beyond the first descent, it is proven and equal.
    #[test]
    fn budgeted_bounds_bracket_the_milp(
        (mut case, tokens, budget) in case_strategy(3, 1).prop_flat_map(|c| {
            let (e, s) = (c.experts, c.slots);
            (Just(c), tokens_strategy(e), 1..=s)
        })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let mut router = Router::new(&topology, &plan, 0).unwrap();
        let Some(reference) = milp_with_budget(&case, &tokens, budget) else {
            return Ok(());
        };
        let short = SearchLimits { max_nodes: 1, exact_time: Duration::ZERO };
        let outcome = router.route_with_budget(&tokens, budget, None, short).unwrap();
        check_budgeted(&case, &tokens, budget, &outcome);
        let slack = 1e-7 * reference.max(1.0);
        prop_assert!(outcome.lower_bound <= reference + slack,
            "lower bound {} above HiGHS {}", outcome.lower_bound, reference);
        prop_assert!(reference <= outcome.routing.max_load() + slack,
            "routing {} below HiGHS {}", outcome.routing.max_load(), reference);
        if outcome.is_proven_optimal() {
            prop_assert!(close(outcome.routing.max_load(), reference));
        }
        let exact = SearchLimits { max_nodes: 0, exact_time: Duration::from_secs(5) };
        let outcome = {
            let _lock = HIGHS.lock().unwrap_or_else(|e| e.into_inner());
            router.route_with_budget(&tokens, budget, None, exact).unwrap()
        };
        check_budgeted(&case, &tokens, budget, &outcome);
        prop_assert!(outcome.is_proven_optimal());
        prop_assert!(close(outcome.routing.max_load(), reference),
            "budgeted {} vs HiGHS {}", outcome.routing.max_load(), reference);
    }
}

/// A budgeted answer is a whole-token routing over its active slots, with
/// at most `budget` of them per GPU.
fn check_budgeted(case: &Case, tokens: &[u64], budget: usize, outcome: &BudgetRouting) {
    check_feasible(case, tokens, &outcome.routing);
    for g in 0..case.num_gpus() {
        let active = outcome.active[g * case.slots..(g + 1) * case.slots]
            .iter()
            .filter(|&&a| a)
            .count();
        assert!(active <= budget, "GPU {g} has {active} active slots");
    }
    for (p, &x) in outcome.routing.slot_tokens().iter().enumerate() {
        assert!(x == 0 || outcome.active[p], "tokens on inactive slot {p}");
    }
    assert!(outcome.lower_bound <= outcome.routing.max_load());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Bigger layers, no MILP: feasibility plus the certificate is a proof
    /// of optimality. One router serves several batches, interleaved with
    /// budgeted searches, as a worker would use it.
    #[test]
    fn large_layers_route_with_a_valid_certificate(
        (mut case, batches) in sized_case_strategy(8, 4, 9).prop_flat_map(|c| {
            let e = c.experts;
            (Just(c), prop::collection::vec(
                prop::collection::vec(prop_oneof![Just(0u64), 0u64..5000], e), 3))
        })
    ) {
        let topology = case.topology();
        let plan = case.plan(&topology);
        let mut router = Router::new(&topology, &plan, 0).unwrap();
        let mut routing = Routing::new();
        let mut previous: Option<Vec<bool>> = None;
        for tokens in &batches {
            router.route(tokens, &mut routing).unwrap();
            check_feasible(&case, tokens, &routing);
            let demands: Vec<(f64, Vec<usize>)> = (0..case.experts)
                .filter(|&e| tokens[e] > 0)
                .map(|e| (tokens[e] as f64, case.gpus_of(e)))
                .collect();
            check_certificate(&case.speeds, &demands, &routing);
            let budget = case.slots.saturating_sub(1).max(1);
            let limits = SearchLimits { max_nodes: 50, ..SearchLimits::default() };
            let result = {
                let _lock = HIGHS.lock().unwrap_or_else(|e| e.into_inner());
                router.route_with_budget(tokens, budget, previous.as_deref(), limits)
            };
            if let Ok(outcome) = result {
                check_feasible(&case, tokens, &outcome.routing);
                for (p, &x) in outcome.routing.slot_tokens().iter().enumerate() {
                    prop_assert!(x == 0 || outcome.active[p], "tokens on inactive slot {}", p);
                }
                prop_assert!(outcome.routing.max_load() >= routing.max_load());
                prop_assert!(outcome.lower_bound >= routing.max_load());
                prop_assert!(outcome.lower_bound <= outcome.routing.max_load());
                previous = Some(outcome.active);
            }
        }
    }
}

/// The dynamic-redundancy MILP: binary y[e][g] (replica active), integer
/// x[e][g] <= t_e y[e][g], Σ_e y[e][g] <= budget, min T. None if infeasible.
fn milp_with_budget(case: &Case, tokens: &[u64], budget: usize) -> Option<f64> {
    let _lock = HIGHS.lock().unwrap_or_else(|e| e.into_inner());
    let gpus = case.num_gpus();
    let mut vars = variables!();
    let t = vars.add(variable().min(0.0));
    let mut gpu_load: Vec<Expression> = vec![Expression::from(0.0); gpus];
    let mut gpu_active: Vec<Expression> = vec![Expression::from(0.0); gpus];
    let mut rows = Vec::new();
    for e in (0..case.experts).filter(|&e| tokens[e] > 0) {
        let mut row = Vec::new();
        for g in case.gpus_of(e) {
            let x = vars.add(variable().integer().min(0.0));
            let y = vars.add(variable().binary());
            gpu_load[g] += x;
            gpu_active[g] += y;
            row.push((g, x, y));
        }
        rows.push((tokens[e] as f64, row));
    }
    let mut model = vars
        .minimise(t)
        .using(highs)
        .set_threads(1)
        .set_mip_rel_gap(0.0)
        .expect("gap")
        .set_mip_abs_gap(0.0)
        .expect("gap");
    for (tokens, row) in &rows {
        let sum: Expression = row.iter().map(|&(_, x, _)| x).sum();
        model = model.with(constraint!(sum == *tokens));
        for &(_, x, y) in row {
            model = model.with(constraint!(x <= *tokens * y));
        }
    }
    for g in 0..gpus {
        let load = std::mem::take(&mut gpu_load[g]);
        let active = std::mem::take(&mut gpu_active[g]);
        model = model.with(constraint!(load <= case.speeds[g] * t));
        model = model.with(constraint!(active <= budget as f64));
    }
    let solution = model.solve().ok()?;
    let mut loads = vec![0.0; gpus];
    for (_, row) in &rows {
        for &(g, x, _) in row {
            loads[g] += solution.value(x).round();
        }
    }
    Some(
        loads
            .iter()
            .zip(&case.speeds)
            .map(|(l, s)| l / s)
            .fold(0.0, f64::max),
    )
}

/// Full-size layers from the repo's sample data (prefill, 32 GPUs, a global
/// plan whose replicas link GPUs across nodes): the LP score and the
/// whole-token router agree with HiGHS.
#[test]
fn sample_layers_match_highs() {
    let topology = support::read_topology("prefill");
    let load = support::read_load("E256_zipf0.8", &topology);
    let (experts, slots) = (topology.num_logical_experts(), topology.num_slots());
    let per_gpu = topology.slots_per_gpu();
    // Experts scattered over the slots; the spare slots replicate the
    // heaviest experts of each layer, wherever they fall.
    let rows: Vec<Vec<u32>> = load
        .layers()
        .map(|layer| {
            let mut heavy: Vec<usize> = (0..experts).collect();
            heavy.sort_by(|&a, &b| layer[b].total_cmp(&layer[a]));
            let mut order: Vec<u32> = (0..experts as u32)
                .map(|e| (e * 97) % experts as u32)
                .collect();
            order.extend(heavy.iter().take(slots - experts).map(|&e| e as u32));
            (0..slots).map(|p| order[(p * 37) % slots]).collect()
        })
        .collect();
    let plan = Plan::new(rows, None, &topology).unwrap();
    let optimal = score_optimal(&topology, &load, &plan);
    let speeds = topology.gpu_speed().to_vec();
    for layer in [0, 17, 41] {
        let row = plan.layer(layer);
        let gpus_of = |e: usize| {
            let mut g: Vec<usize> = (0..slots)
                .filter(|&p| row[p] as usize == e)
                .map(|p| p / per_gpu)
                .collect();
            g.dedup();
            g
        };
        let real: Vec<(f64, Vec<usize>)> = (0..experts)
            .map(|e| (load.layer(layer)[e], gpus_of(e)))
            .collect();
        let lp = milp_min_max(&speeds, &real, false);
        let ours = optimal.layers[layer].max_gpu_load;
        assert!(
            close(ours, lp),
            "layer {layer}: score_optimal {ours} vs HiGHS LP {lp}"
        );

        // A batch of whole tokens: 1/16 of the layer's load, rounded.
        let tokens: Vec<u64> = load
            .layer(layer)
            .iter()
            .map(|&l| (l / 16.0).round() as u64)
            .collect();
        let mut router = Router::new(&topology, &plan, layer).unwrap();
        let mut routing = Routing::new();
        router.route(&tokens, &mut routing).unwrap();
        let whole: Vec<(f64, Vec<usize>)> = (0..experts)
            .filter(|&e| tokens[e] > 0)
            .map(|e| (tokens[e] as f64, gpus_of(e)))
            .collect();
        check_certificate(&speeds, &whole, &routing);
        let milp = milp_min_max(&speeds, &whole, true);
        assert!(
            close(routing.max_load(), milp),
            "layer {layer}: router {} vs HiGHS {milp}",
            routing.max_load()
        );
    }
}
