//! Planning around down GPUs (`PlanOptions::down_gpus`).
//!
//! A down GPU takes no tokens, but it is still a GPU of its node: the node
//! simply has one GPU fewer, as if that GPU's speed were 0. Placement rules
//! keep holding for the GPUs that are left:
//!
//! 1. **Experts to nodes**, per layer. Under hierarchical placement every
//!    group stays on its *home* node, the node that holds all its replicas
//!    in the previous plan (moving a group would reload all its replicas);
//!    without a node-local previous layer, groups are split among nodes by
//!    the node-local bound's split over the live GPUs' speeds, so a degraded
//!    node takes lighter groups. Under global placement all live GPUs form
//!    one unit.
//! 2. **Each unit is planned alone**: a node's experts on its live GPUs is a
//!    one-node topology with fewer GPUs (and their speeds), which every
//!    policy already plans, migration-aware against the node's part of the
//!    previous plan. Units run in parallel.
//! 3. **Mapped back**: the live GPUs' slots take the units' plans; a down
//!    GPU's slots take share 0 and keep what they held when that is still
//!    an expert its node hosts (nothing to reload when the GPU returns, and
//!    still node-local), else hold its node's experts. The plan therefore
//!    always carries `replica_share`.
//!
//! When a node's live slots cannot hold its groups' experts, no node-local
//! plan exists (prefill: 8 GPUs × 9 slots host 64 experts; one GPU down
//! leaves 63 slots). The node then keeps as many of its experts as its live
//! slots hold and its lightest others move whole (all replicas) to the nodes
//! with the most free live slots: the fewest experts off their node. Such a
//! plan reports global placement, and its bound is the even-split bound.
//!
//! The reported bound is [`crate::bound::model_bounds_down`]'s, valid for
//! any plan that loads only live GPUs under the plan's placement rule.

use rayon::prelude::*;

use super::stats::{LayerFacts, ReplanFacts};
use super::{
    plan_greedy, plan_optimal, LayerStatus, Placement, PlanError, PlanOptions, Planned, Policy,
};
use crate::bound::{LiveGpus, Replication, SplitScratch, SplitSetup};
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::score;
use crate::topology::{Topology, TopologySpec};

/// A plan around down GPUs and the placement it keeps.
pub(super) struct Outcome {
    pub planned: Planned,
    /// `Global` when some expert had to leave its group's node.
    pub placement: Placement,
}

/// The live GPUs that plan together, and the experts each hosts per layer.
struct Units {
    /// Live GPUs of each unit, ascending.
    gpus: Vec<Vec<usize>>,
    /// Per layer, the unit hosting each expert.
    unit_of: Vec<Vec<usize>>,
    /// Per layer, the unit each expert's group belongs to (its unit but for
    /// experts that had to leave their node).
    home_of: Vec<Vec<usize>>,
    /// Some expert left its group's node.
    spilled: bool,
}

/// Plans `load` on `topology` with no load on `live.down`'s GPUs. `previous`
/// is already checked against `topology`; `policy`/`placement` are resolved.
pub(super) fn plan(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
    policy: Policy,
    placement: Placement,
    previous: Option<&Plan>,
    live: &LiveGpus,
) -> Result<Outcome, PlanError> {
    let units = assign(topology, load, placement, previous, live);
    let hosted: Vec<Vec<Vec<u32>>> = (0..units.gpus.len())
        .map(|u| {
            units
                .unit_of
                .iter()
                .map(|row| {
                    (0..row.len())
                        .filter(|&e| row[e] == u)
                        .map(|e| e as u32)
                        .collect()
                })
                .collect()
        })
        .collect();
    let planned: Vec<Option<(Planned, Topology)>> = (0..units.gpus.len())
        .into_par_iter()
        .map(|u| {
            plan_unit(
                topology,
                load,
                options,
                policy,
                previous,
                &units.gpus[u],
                &hosted[u],
            )
        })
        .collect::<Result<_, _>>()?;

    let (l_count, s) = (topology.num_layers(), topology.slots_per_gpu());
    let mut rows = vec![vec![0u32; topology.num_slots()]; l_count];
    let mut shares = vec![vec![0.0; topology.num_slots()]; l_count];
    for (u, unit) in planned.iter().enumerate() {
        let Some(((plan, _, _), unit_topology)) = unit else {
            continue;
        };
        for l in 0..l_count {
            let local = plan.layer(l);
            let local_shares = plan.layer_shares(l, unit_topology.num_logical_experts());
            for (i, &gpu) in units.gpus[u].iter().enumerate() {
                for j in 0..s {
                    rows[l][gpu * s + j] = hosted[u][l][local[i * s + j] as usize];
                    shares[l][gpu * s + j] = local_shares[i * s + j];
                }
            }
        }
    }
    fill_down_slots(topology, placement, previous, live, &units, &mut rows);
    if let Some(previous) = previous {
        keep_unmoved(
            topology,
            load,
            previous,
            &units,
            &hosted,
            &mut rows,
            &mut shares,
        );
    }
    let plan = Plan::new(rows, Some(shares), topology)
        .map_err(|e| PlanError::Internal(format!("plan around down GPUs: {e}")))?;

    let facts = layer_facts(topology, load, placement, live, &units, &planned);
    // Like a plan of the whole cluster, only the optimal policy re-plans.
    let replan = previous
        .filter(|_| policy.is_optimal())
        .map(|previous| replan_facts(topology, load, options, previous, &planned));
    let placement = if units.spilled {
        Placement::Global
    } else {
        placement
    };
    Ok(Outcome {
        planned: (plan, facts, replan),
        placement,
    })
}

/// Which live GPUs plan together, and which unit hosts each expert.
fn assign(
    topology: &Topology,
    load: &LoadMatrix,
    placement: Placement,
    previous: Option<&Plan>,
    live: &LiveGpus,
) -> Units {
    let e_count = topology.num_logical_experts();
    let is_live = |g: &usize| !live.down[*g];
    if placement == Placement::Global {
        return Units {
            gpus: vec![(0..topology.num_gpus()).filter(is_live).collect()],
            unit_of: vec![vec![0; e_count]; topology.num_layers()],
            home_of: vec![vec![0; e_count]; topology.num_layers()],
            spilled: false,
        };
    }
    let g = topology.gpus_per_node();
    let gpus: Vec<Vec<usize>> = (0..topology.num_nodes())
        .map(|n| (n * g..(n + 1) * g).filter(is_live).collect())
        .collect();
    let capacity: Vec<usize> = gpus
        .iter()
        .map(|u| u.len() * topology.slots_per_gpu())
        .collect();
    // The live split when node-local placement is possible; otherwise the
    // full cluster's (groups still go to nodes in equal numbers).
    let setup = SplitSetup::live(topology, &live.down).or_else(|| SplitSetup::new(topology));
    let hosted = topology.num_groups() / topology.num_nodes() * topology.experts_per_group();
    // Experts each node gives away, and where they go: the same for every
    // layer, so every unit plans the same number of experts in each.
    let mut count = vec![hosted; gpus.len()];
    let mut moves: Vec<(usize, usize)> = Vec::new();
    for n in 0..gpus.len() {
        while count[n] > capacity[n] {
            let to = (0..gpus.len())
                .max_by_key(|&m| (capacity[m].saturating_sub(count[m]), std::cmp::Reverse(m)))
                .unwrap_or(n);
            if capacity[to] <= count[to] {
                // Checked by the caller: the live slots hold every expert.
                break;
            }
            count[n] -= 1;
            count[to] += 1;
            moves.push((n, to));
        }
    }
    let mut replication = Replication::default();
    let mut scratch = SplitScratch::default();
    let (unit_of, home_of): (Vec<Vec<usize>>, Vec<Vec<usize>>) = load
        .layers()
        .enumerate()
        .map(|(l, row)| {
            let node_of_group = previous
                .and_then(|p| home_nodes(topology, p.layer(l)))
                .or_else(|| {
                    setup
                        .as_ref()
                        .map(|s| s.split(row, &mut replication, &mut scratch).node_of_group)
                })
                .unwrap_or_else(|| {
                    let per_node = topology.num_groups() / topology.num_nodes();
                    (0..topology.num_groups())
                        .map(|k| (k / per_node) as u32)
                        .collect()
                });
            let home_of: Vec<usize> = (0..e_count)
                .map(|e| node_of_group[topology.group_of_expert(e)] as usize)
                .collect();
            let mut unit_of = home_of.clone();
            for &(from, to) in &moves {
                // The lightest expert still on `from` that is its own.
                let pick = (0..e_count)
                    .filter(|&e| unit_of[e] == from && home_of[e] == from)
                    .min_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
                if let Some(e) = pick {
                    unit_of[e] = to;
                }
            }
            (unit_of, home_of)
        })
        .unzip();
    Units {
        gpus,
        unit_of,
        home_of,
        spilled: !moves.is_empty(),
    }
}

/// The node each group sits on in `row`, when every group sits on one node
/// and every node hosts `K / N` groups (as node-local plans do).
fn home_nodes(topology: &Topology, row: &[u32]) -> Option<Vec<u32>> {
    let per_node_slots = topology.slots_per_node();
    let mut home = vec![u32::MAX; topology.num_groups()];
    for (slot, &e) in row.iter().enumerate() {
        let group = topology.group_of_expert(e as usize);
        let node = (slot / per_node_slots) as u32;
        if home[group] == u32::MAX {
            home[group] = node;
        } else if home[group] != node {
            return None;
        }
    }
    let per_node = topology.num_groups() / topology.num_nodes();
    let mut groups = vec![0usize; topology.num_nodes()];
    for &n in &home {
        groups[n as usize] += 1;
    }
    groups.iter().all(|&c| c == per_node).then_some(home)
}

/// Plans one unit: its `hosted` experts (per layer, ascending) on its live
/// `gpus` as a one-node topology. `None` for a unit without live GPUs.
fn plan_unit(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
    policy: Policy,
    previous: Option<&Plan>,
    gpus: &[usize],
    hosted: &[Vec<u32>],
) -> Result<Option<(Planned, Topology)>, PlanError> {
    let experts = hosted.first().map_or(0, Vec::len);
    if gpus.is_empty() || experts == 0 {
        return Ok(None);
    }
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        PlanError::Internal(format!("unit of GPUs {gpus:?}: {what}: {e}"))
    };
    let s = topology.slots_per_gpu();
    let unit = Topology::new(TopologySpec {
        num_layers: topology.num_layers() as i64,
        num_logical_experts: experts as i64,
        num_groups: 1,
        num_nodes: 1,
        gpus_per_node: gpus.len() as i64,
        slots_per_gpu: s as i64,
        gpu_speed: Some(gpus.iter().map(|&g| topology.gpu_speed()[g]).collect()),
        ..topology.to_spec()
    })
    .map_err(|e| internal("topology", &e))?;
    let rows: Vec<Vec<f64>> = hosted
        .iter()
        .enumerate()
        .map(|(l, experts)| {
            let row = load.layer(l);
            experts.iter().map(|&e| row[e as usize]).collect()
        })
        .collect();
    let unit_load = LoadMatrix::new(rows, &unit).map_err(|e| internal("load", &e))?;
    let unit_previous = previous
        .map(|p| {
            let rows = hosted
                .iter()
                .enumerate()
                .map(|(l, experts)| {
                    let slots: Vec<u32> = gpus
                        .iter()
                        .flat_map(|&g| p.layer(l)[g * s..(g + 1) * s].iter().copied())
                        .collect();
                    patch(&slots, experts, unit_load.layer(l))
                })
                .collect();
            Plan::new(rows, None, &unit)
        })
        .transpose()
        .map_err(|e| internal("previous plan", &e))?;
    let optimal = policy.is_optimal();
    let planned = if optimal {
        let unit_options = PlanOptions {
            previous: None,
            down_gpus: Vec::new(),
            ..options.clone()
        };
        plan_optimal(
            &unit,
            &unit_load,
            &unit_options,
            Placement::Hierarchical,
            unit_previous.as_ref(),
        )?
    } else {
        plan_greedy(&unit, &unit_load, policy, Placement::Hierarchical)?
    };
    Ok(Some((planned, unit)))
}

/// The unit's part of the previous plan as a valid plan of the unit: its
/// slots in local numbering, where a slot holding an expert the unit no
/// longer hosts, or a copy that must make room for an expert with no slot
/// left (its replicas were all on down GPUs), takes a missing expert, then
/// the expert with the heaviest replicas. Each such change is a migration
/// the unit could not avoid.
fn patch(slots: &[u32], experts: &[u32], weights: &[f64]) -> Vec<u32> {
    let n = experts.len();
    let mut local: Vec<Option<u32>> = slots
        .iter()
        .map(|e| experts.binary_search(e).ok().map(|i| i as u32))
        .collect();
    let mut count = vec![0u32; n];
    for &x in local.iter().flatten() {
        count[x as usize] += 1;
    }
    let mut missing: Vec<usize> = (0..n).filter(|&x| count[x] == 0).collect();
    missing.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    for x in missing {
        let slot = local.iter().position(Option::is_none).or_else(|| {
            // The copy of the expert with the most replicas (lightest on ties).
            (0..local.len())
                .filter(|&p| local[p].is_some_and(|y| count[y as usize] > 1))
                .max_by(|&p, &q| {
                    let (a, b) = (
                        local[p].unwrap_or(0) as usize,
                        local[q].unwrap_or(0) as usize,
                    );
                    count[a]
                        .cmp(&count[b])
                        .then(weights[b].total_cmp(&weights[a]))
                        .then(q.cmp(&p))
                })
        });
        if let Some(p) = slot {
            if let Some(y) = local[p] {
                count[y as usize] -= 1;
            }
            local[p] = Some(x as u32);
            count[x] += 1;
        }
    }
    local
        .into_iter()
        .map(|x| {
            x.unwrap_or_else(|| {
                let heaviest = (0..n)
                    .max_by(|&a, &b| {
                        (weights[a] / f64::from(count[a].max(1)))
                            .total_cmp(&(weights[b] / f64::from(count[b].max(1))))
                            .then(b.cmp(&a))
                    })
                    .unwrap_or(0);
                count[heaviest] += 1;
                heaviest as u32
            })
        })
        .collect()
}

/// Puts back a unit's part of the previous plan, in each layer where it
/// still holds exactly the unit's experts and its busiest GPU stays at or
/// below the layer's busiest GPU in the new plan: keeping it then costs no
/// balance and saves every move the unit's own re-plan made. Each unit
/// re-plans against its own fresh plan's balance, which a unit that is not
/// the layer's bottleneck (a node without down GPUs) need not reach.
fn keep_unmoved(
    topology: &Topology,
    load: &LoadMatrix,
    previous: &Plan,
    units: &Units,
    hosted: &[Vec<Vec<u32>>],
    rows: &mut [Vec<u32>],
    shares: &mut [Vec<f64>],
) {
    let s = topology.slots_per_gpu();
    let speed = topology.gpu_speed();
    for (l, (row, share)) in rows.iter_mut().zip(shares.iter_mut()).enumerate() {
        let weights = load.layer(l);
        let level = score::gpu_loads(topology, weights, row, share)
            .into_iter()
            .fold(0.0, f64::max);
        let old = previous.layer(l);
        for (gpus, experts) in units.gpus.iter().zip(hosted) {
            let experts = &experts[l];
            let slots = || gpus.iter().flat_map(|&g| g * s..(g + 1) * s);
            let mut count = vec![0u32; experts.len()];
            let mut own = true;
            for p in slots() {
                match experts.binary_search(&old[p]) {
                    Ok(i) => count[i] += 1,
                    Err(_) => own = false,
                }
            }
            if !own || count.contains(&0) || slots().all(|p| row[p] == old[p]) {
                continue;
            }
            let replica = |p: usize| {
                let i = experts.binary_search(&old[p]).unwrap_or(0);
                (weights[old[p] as usize], f64::from(count[i]))
            };
            let busiest = gpus
                .iter()
                .map(|&g| {
                    (g * s..(g + 1) * s)
                        .map(|p| replica(p).0 / replica(p).1)
                        .sum::<f64>()
                        / speed[g]
                })
                .fold(0.0, f64::max);
            if busiest <= level {
                for p in slots() {
                    row[p] = old[p];
                    share[p] = 1.0 / replica(p).1;
                }
            }
        }
    }
}

/// Gives every slot of a down GPU an expert: what it held, while its node
/// still hosts that expert or its group, else one of the node's experts in
/// turn (any expert when no live GPU is left on the node).
fn fill_down_slots(
    topology: &Topology,
    placement: Placement,
    previous: Option<&Plan>,
    live: &LiveGpus,
    units: &Units,
    rows: &mut [Vec<u32>],
) {
    let (s, g) = (topology.slots_per_gpu(), topology.gpus_per_node());
    let e_count = topology.num_logical_experts();
    for (l, row) in rows.iter_mut().enumerate() {
        for gpu in (0..topology.num_gpus()).filter(|&gpu| live.down[gpu]) {
            let unit = match placement {
                Placement::Hierarchical | Placement::Covisit => gpu / g,
                Placement::Global => 0,
            };
            let own: Vec<u32> = (0..e_count)
                .filter(|&e| units.unit_of[l][e] == unit)
                .map(|e| e as u32)
                .collect();
            let has_live = !units.gpus[unit].is_empty();
            for j in 0..s {
                let slot = gpu * s + j;
                let held = previous.map(|p| p.layer(l)[slot]);
                row[slot] = match held {
                    Some(e)
                        if !has_live
                            || units.unit_of[l][e as usize] == unit
                            || units.home_of[l][e as usize] == unit =>
                    {
                        e
                    }
                    _ if has_live && !own.is_empty() => own[(gpu * s + j) % own.len()],
                    _ => (slot % e_count) as u32,
                };
            }
        }
    }
}

/// Per-layer facts of the assembled plan: the bound over live GPUs under
/// the placement kept, the units' worst claimed load, and their status.
fn layer_facts(
    topology: &Topology,
    load: &LoadMatrix,
    placement: Placement,
    live: &LiveGpus,
    units: &Units,
    planned: &[Option<(Planned, Topology)>],
) -> Vec<LayerFacts> {
    let setup = (placement == Placement::Hierarchical && !units.spilled)
        .then(|| SplitSetup::live(topology, &live.down))
        .flatten();
    let mut replication = Replication::default();
    let mut scratch = SplitScratch::default();
    load.layers()
        .enumerate()
        .map(|(l, row)| {
            let even = live.even_split_load(row, &mut replication);
            let bound_load = match &setup {
                Some(setup) => setup
                    .split(row, &mut replication, &mut scratch)
                    .bound_load
                    .max(even),
                None => even,
            };
            let unit_facts = || planned.iter().flatten().map(|((_, f, _), _)| &f[l]);
            let objective_load = unit_facts()
                .map(|f| f.objective_load.unwrap_or(f.bound_load))
                .fold(0.0, f64::max);
            let status = if unit_facts().any(|f| f.status == Some(LayerStatus::TimeLimit)) {
                LayerStatus::TimeLimit
            } else {
                LayerStatus::Heuristic
            };
            LayerFacts {
                bound_load,
                // Greedy units claim nothing beyond their plans.
                objective_load: unit_facts()
                    .all(|f| f.objective_load.is_some())
                    .then_some(objective_load),
                status: Some(status),
                ms: unit_facts().map(|f| f.ms).sum(),
            }
        })
        .collect()
}

/// The re-plan's figures for the whole cluster: the previous plan as it
/// scores now, the units' fresh loads (the worst unit per layer) and, under
/// pricing, the trade of transfer against compute time. The units' floors
/// on migrations count against their patched previous plans, so none is
/// claimed for the whole.
fn replan_facts(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
    previous: &Plan,
    planned: &[Option<(Planned, Topology)>],
) -> ReplanFacts {
    let l_count = topology.num_layers();
    let stale_loads: Vec<f64> = (0..l_count)
        .map(|l| score::score_layer(topology, load.layer(l), previous, l).max_gpu_load)
        .collect();
    let fresh_loads: Vec<f64> = (0..l_count)
        .map(|l| {
            planned
                .iter()
                .flatten()
                .map(|((_, facts, replan), _)| match replan {
                    Some(r) => r.fresh_loads[l],
                    None => facts[l].objective_load.unwrap_or(facts[l].bound_load),
                })
                .fold(0.0, f64::max)
        })
        .collect();
    ReplanFacts {
        tolerance: options.balance_tolerance,
        stale_loads,
        fresh_loads,
        price: None,
        migrations_bound: None,
    }
}
