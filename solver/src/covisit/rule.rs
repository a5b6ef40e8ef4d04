//! What a co-visit plan does on load it was not fitted to: each co-visit
//! replica takes its share of its expert's tokens only up to the safe
//! co-visit count of *this* load, and what it cannot take goes to the
//! expert's home replicas in proportion to their shares. The worker's
//! dispatch does the same, so this is the imbalance a cluster experiences.

use crate::load::LoadMatrix;
use crate::plan::{Plan, ANY_TOKEN};
use crate::score::{self, gpu_loads, LayerScore, Score};
use crate::topology::Topology;

use super::safe_share;

/// Per-slot token counts of one layer under the rule, and how many tokens
/// co-visit replicas took.
fn slot_tokens(
    topology: &Topology,
    row: &[f64],
    covisit: &[f64],
    phy2log: &[u32],
    shares: &[f64],
    scope: &[i64],
) -> (Vec<f64>, f64) {
    let (k, n) = (topology.num_groups(), topology.num_nodes());
    let slots_per_node = topology.slots_per_node();
    // A group's home: the node of its experts' any-token replicas.
    let mut home_of_group = vec![u32::MAX; k];
    for (slot, (&e, &sc)) in phy2log.iter().zip(scope).enumerate() {
        let g = topology.group_of_expert(e as usize);
        if sc == ANY_TOKEN && home_of_group[g] == u32::MAX {
            home_of_group[g] = (slot / slots_per_node) as u32;
        }
    }
    let mut tokens: Vec<f64> = phy2log
        .iter()
        .zip(shares)
        .map(|(&e, &share)| row[e as usize] * share)
        .collect();
    // Demand of the scoped replicas per (expert, node).
    let mut demand = vec![0.0; row.len() * n];
    for (slot, (&e, &sc)) in phy2log.iter().zip(scope).enumerate() {
        if sc != ANY_TOKEN {
            demand[e as usize * n + slot / slots_per_node] += tokens[slot];
        }
    }
    let mut spill = vec![0.0; row.len()];
    let mut taken = 0.0;
    let mut kept = vec![1.0; row.len() * n];
    for (e, &w) in row.iter().enumerate() {
        for node in 0..n {
            let d = demand[e * n + node];
            if d <= 0.0 {
                continue;
            }
            let groups = (0..k).filter(|&g| home_of_group[g] == node as u32);
            let cap = safe_share(&covisit[e * k..(e + 1) * k], groups, w);
            let take = d.min(cap);
            kept[e * n + node] = take / d;
            spill[e] += d - take;
            taken += take;
        }
    }
    let mut home_share = vec![0.0; row.len()];
    let mut home_slots = vec![0u32; row.len()];
    for (slot, (&e, &sc)) in phy2log.iter().zip(scope).enumerate() {
        let e = e as usize;
        if sc == ANY_TOKEN {
            home_share[e] += shares[slot];
            home_slots[e] += 1;
        } else {
            tokens[slot] *= kept[e * n + slot / slots_per_node];
        }
    }
    for (slot, (&e, &sc)) in phy2log.iter().zip(scope).enumerate() {
        let e = e as usize;
        if sc != ANY_TOKEN || spill[e] <= 0.0 {
            continue;
        }
        tokens[slot] += if home_share[e] > 0.0 {
            spill[e] * shares[slot] / home_share[e]
        } else {
            spill[e] / f64::from(home_slots[e])
        };
    }
    // An expert without a home replica keeps its spill on its scoped ones
    // (only plans made under other rules look like this).
    for (e, &s) in spill.iter().enumerate() {
        if s > 0.0 && home_slots[e] == 0 {
            let scoped: f64 = phy2log
                .iter()
                .zip(&tokens)
                .filter(|(&x, _)| x as usize == e)
                .map(|(_, t)| t)
                .sum();
            for (slot, &x) in phy2log.iter().enumerate() {
                if x as usize == e {
                    tokens[slot] += if scoped > 0.0 {
                        s * tokens[slot] / scoped
                    } else {
                        0.0
                    };
                }
            }
            taken -= s;
        }
    }
    (tokens, taken)
}

/// Per-GPU load of one layer of a scoped plan under the rule.
pub fn gpu_loads_under_rule(
    topology: &Topology,
    row: &[f64],
    covisit: &[f64],
    plan: &Plan,
    layer: usize,
) -> Vec<f64> {
    let shares = plan.layer_shares(layer, topology.num_logical_experts());
    let Some(scope) = plan.replica_scope() else {
        return gpu_loads(topology, row, plan.layer(layer), &shares);
    };
    let (tokens, _) = slot_tokens(
        topology,
        row,
        covisit,
        plan.layer(layer),
        &shares,
        &scope[layer],
    );
    tokens
        .chunks_exact(topology.slots_per_gpu())
        .zip(topology.gpu_speed())
        .map(|(slots, speed)| slots.iter().sum::<f64>() / speed)
        .collect()
}

/// [`score::score`] of a scoped plan under the rule; plans without scope,
/// or loads without co-visit counts, score as usual (their shares taken as
/// given).
pub fn score_under_rule(topology: &Topology, load: &LoadMatrix, plan: &Plan) -> Score {
    let (Some(_), true) = (plan.replica_scope(), load.has_covisit()) else {
        return score::score_plain(topology, load, plan);
    };
    let layers = (0..topology.num_layers())
        .map(|l| {
            let row = load.layer(l);
            let covisit = load.covisit_layer(l).unwrap_or_default();
            let loads = gpu_loads_under_rule(topology, row, covisit, plan, l);
            let max = loads.iter().copied().fold(0.0, f64::max);
            LayerScore::new(max, score::ideal_load(topology, row))
        })
        .collect();
    Score::from_layers(
        layers,
        score::groups_off_node(topology, plan),
        score::same_gpu_duplicates(topology, plan),
    )
}

/// The fraction of token assignments co-visit replicas serve under the
/// rule (0 for plans without scope or loads without co-visit counts).
pub fn served_by_covisit(topology: &Topology, load: &LoadMatrix, plan: &Plan) -> f64 {
    let Some(scope) = plan.replica_scope() else {
        return 0.0;
    };
    let (mut taken, mut total) = (0.0, 0.0);
    for (l, layer_scope) in scope.iter().enumerate() {
        let Some(covisit) = load.covisit_layer(l) else {
            return 0.0;
        };
        let row = load.layer(l);
        let shares = plan.layer_shares(l, topology.num_logical_experts());
        taken += slot_tokens(topology, row, covisit, plan.layer(l), &shares, layer_scope).1;
        total += row.iter().sum::<f64>();
    }
    if total > 0.0 {
        taken / total
    } else {
        0.0
    }
}
