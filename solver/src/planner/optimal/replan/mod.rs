//! Re-planning against the plan in force (`--previous`).
//!
//! Every layer gets a ladder of candidate plans, each a different trade
//! between balance and migrations:
//!
//! * the previous plan unchanged (no migrations), when it follows the
//!   placement rule;
//! * the fresh plan with its nodes and GPUs renamed to match the previous
//!   plan best ([`relabel`]);
//! * the trade-off curve of the previous group split, and of every other
//!   split the group model picks below ([`mod@frontier`]): for each migration
//!   count, the lowest max load a beam search over swaps and recounts finds,
//!   combined over units. Keeping groups in place is where cheap re-plans
//!   live (a moved group costs every slot it held), and the curves offer the
//!   choice below every step the repairs take;
//! * repairs of the previous plan to several targets `T*·(1 + ℓ)`, `T*` the
//!   fresh plan's max load: groups stay on their node unless the exact
//!   group model ([`GroupModel`]) says moving them is the cheapest way to
//!   let every node reach the target (a moved group costs all the slots it
//!   held); each node is then repaired ([`Repairer`]), or replaced by a fresh
//!   node plan renamed to fit when the repair falls short;
//! * repairs of every split met above towards that split's own bound (the
//!   worst node bound under it): a split that keeps groups usually cannot
//!   reach the fresh targets at all.
//!
//! A choice of one candidate per layer is then made for the whole model:
//! * **lexicographic** (default): the fewest migrations with
//!   `Σ_l max_l ≤ (1 + tolerance) · Σ_l T*_l`, i.e. model imbalance within
//!   the tolerance of the fresh plan's: a multiple-choice knapsack, solved
//!   exactly by dynamic programming over the migration count;
//! * **priced**: each layer independently minimises transfer time (moved
//!   bytes over link bandwidth) minus the compute time its balance saves
//!   over the serving horizon, compared with keeping the previous plan.
//!
//! A patient run (explicit time limit) then re-places each chosen candidate
//! node by node with the exact min-moves model ([`mod@min_moves`]), never
//! letting a GPU exceed the candidate's max load.

use std::cell::RefCell;
use std::collections::HashMap;

mod frontier;
mod group_assign;
mod min_moves;
mod relabel;
mod repair;

pub(super) use frontier::work_per_curve;
pub(crate) use repair::Repairer;

use frontier::frontier;
use group_assign::GroupModel;
use min_moves::min_moves;

use crate::bound::Replication;
use crate::knapsack;
use crate::migration::row_migrations;
use crate::planner::optimal::budget::Budget;
use crate::planner::optimal::fresh::even_search::{self, Effort};
use crate::planner::optimal::fresh::{weighted, LayerSolution};
use crate::planner::optimal::packing::EvenPacking;
use crate::planner::optimal::problem::{water_fill, NodeProblem};
use crate::planner::optimal::unit::{Layout, Unit};
use crate::planner::policy::{Placement, Split};
use crate::tolerance;

/// Relative targets above the fresh max load the repairs aim for.
const LEVELS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.03,
    0.04, 0.06, 0.08,
];

/// Relative targets above a split's own bound its walk aims for, loose to
/// tight (coarser than [`LEVELS`]: the trade-off curve fills the gaps).
const SPLIT_LEVELS: [f64; 7] = [0.04, 0.02, 0.01, 0.005, 0.0025, 0.001, 0.0];

/// A load limit (times the fresh max load) no split exceeds: the group
/// model under it keeps every group where it was.
const UNLIMITED: f64 = 1.0e3;

/// One repair target and the groups each unit hosts for it.
type Step = (f64, Vec<Vec<u32>>);

/// Time limit of one share LP (they take milliseconds).
const SHARE_LP_SECONDS: f64 = 1.0;

/// Share LPs already solved for a layer, by unit and slot contents: most
/// units come out of several ladder steps unchanged.
type ShareCache = HashMap<(usize, Vec<u32>), (Vec<f64>, f64)>;

/// What moving experts costs and what balance is worth, for priced re-plans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationPricing {
    /// Bandwidth available for copying expert weights, bytes per second.
    pub link_bytes_per_s: f64,
    /// Seconds of MoE compute the new plan will serve before the next re-plan
    /// (at the previous plan's speed): the horizon over which balance pays.
    pub serve_seconds: f64,
}

/// One candidate plan for one layer.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub row: Vec<u32>,
    pub shares: Option<Vec<f64>>,
    pub max_load: f64,
    pub migrations: usize,
}

/// Per-run context of the re-planner.
pub(crate) struct Replanner<'t> {
    pub layout: Layout<'t>,
    pub split: Split,
    pub tolerance: f64,
    /// Work each trade-off curve may spend ([`work_per_curve`]).
    pub curve_work: usize,
}

impl Replanner<'_> {
    /// The candidate ladder of one layer; the fresh candidate comes first.
    pub(crate) fn ladder(
        &self,
        index: usize,
        row: &[f64],
        prev: &[u32],
        fresh: &LayerSolution,
        budget: &Budget,
    ) -> Vec<Candidate> {
        let mut ladder = vec![self.relabelled_fresh(prev, fresh)];
        let mut cache = ShareCache::default();
        if self.follows_placement(prev) {
            let unchanged = self.finish(row, prev.to_vec(), prev, &mut cache, budget);
            ladder.push(unchanged);
        }
        let mut levels: Vec<f64> = LEVELS.to_vec();
        levels.push(self.tolerance);
        levels.sort_by(|a, b| b.total_cmp(a));
        levels.dedup();
        // Targets relative to the fresh plan pick the group split (the exact
        // group model moves groups only when the target demands it); every
        // split met, the previous one included (the model with no load limit
        // keeps all groups), is also repaired towards its own bound: a split
        // that keeps groups in place usually cannot reach the fresh plan's
        // targets, and its best trade-offs lie between its bound and the
        // loosest fresh target. Each walk has its own repairers (a repair
        // depends on the targets it went through), so every walk adds
        // trade-offs and none is lost. Under weighted split the even-split
        // curves are scored again with each unit's share LP: dearer (prefill
        // re-plans take 1.0-1.9 s instead of 0.8-1.3 s), but on the samples
        // they reach the proven migration floor on the small model (10.05 %
        // of slots without them, 9.62 % with).
        let mut walks: Vec<Vec<Step>> = vec![Vec::new()];
        let mut splits: Vec<(Vec<Vec<u32>>, f64)> = Vec::new();
        let unlimited = fresh.max_load * UNLIMITED;
        let (kept, _) = self.assign(row, prev, fresh, unlimited);
        ladder.extend(self.curve(row, prev, &kept, &mut cache, budget));
        for tau in
            std::iter::once(unlimited).chain(levels.iter().map(|l| fresh.max_load * (1.0 + l)))
        {
            let (hosts, worst) = self.assign(row, prev, fresh, tau);
            if let Some(worst) = worst {
                if !splits.iter().any(|(h, _)| *h == hosts) {
                    splits.push((hosts.clone(), worst));
                }
            }
            if tau < unlimited {
                walks[0].push((tau, hosts));
            }
        }
        let loosest = fresh.max_load * (1.0 + levels[0]);
        for (hosts, _) in splits.iter().filter(|(hosts, _)| *hosts != kept) {
            if budget.remaining() <= 0.0 {
                break;
            }
            ladder.extend(self.curve(row, prev, hosts, &mut cache, budget));
        }
        for (hosts, worst) in splits {
            let mut walk: Vec<Step> = SPLIT_LEVELS
                .iter()
                .map(|level| worst * (1.0 + level))
                .filter(|&tau| tau < loosest)
                .map(|tau| (tau, hosts.clone()))
                .collect();
            walk.dedup_by(|a, b| a.0 == b.0);
            walks.push(walk);
        }
        for (w, steps) in walks.iter().enumerate() {
            let seed = (index * 31 + w * 1009) as u64;
            ladder.extend(self.walk(row, prev, fresh, steps, seed, &mut cache, budget));
        }
        ladder
    }

    /// Candidates along the trade-off curve of the split `hosts` (groups
    /// per unit): each unit's [`frontier()`], combined over units so that
    /// each migration count gets the lowest layer max load.
    fn curve(
        &self,
        row: &[f64],
        prev: &[u32],
        hosts: &[Vec<u32>],
        cache: &mut ShareCache,
        budget: &Budget,
    ) -> Vec<Candidate> {
        let layout = self.layout;
        let s = layout.topology.slots_per_gpu();
        let units: Vec<Unit> = hosts.iter().map(|g| self.unit_of(row, g)).collect();
        // (migrations, max load, point of each unit so far), Pareto-pruned.
        let mut combined: Vec<(usize, f64, Vec<usize>)> = vec![(0, 0.0, Vec::new())];
        let mut curves = Vec::with_capacity(units.len());
        for (u, unit) in units.iter().enumerate() {
            let problem = unit.problem(layout.speeds(u), s);
            let old: Vec<Option<u32>> = prev[layout.slots(u)]
                .iter()
                .map(|&e| unit.local(e))
                .collect();
            let (start, history) = repair::start(problem, &old);
            let points = frontier(start, &history, self.curve_work, budget.deadline());
            if points.is_empty() {
                return Vec::new();
            }
            let mut next: Vec<(usize, f64, Vec<usize>)> = Vec::new();
            for (m, load, picks) in &combined {
                for (k, q) in points.iter().enumerate() {
                    let mut picks = picks.clone();
                    picks.push(k);
                    next.push((m + q.migrations, load.max(q.max_load), picks));
                }
            }
            next.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            combined.clear();
            for point in next {
                if combined.last().is_none_or(|q| point.1 < q.1) {
                    combined.push(point);
                }
            }
            curves.push(points);
        }
        let mut out = Vec::with_capacity(combined.len());
        for (_, _, picks) in combined {
            let mut row_out = vec![0u32; layout.topology.num_slots()];
            for (u, &k) in picks.iter().enumerate() {
                for (dst, &e) in row_out[layout.slots(u)].iter_mut().zip(&curves[u][k].slots) {
                    *dst = units[u].global(e);
                }
            }
            out.push(self.finish(row, row_out, prev, cache, budget));
        }
        out
    }

    /// Repairs the previous plan through `steps` (targets from loose to
    /// tight, each with its groups per unit): one candidate per step.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        row: &[f64],
        prev: &[u32],
        fresh: &LayerSolution,
        steps: &[Step],
        seed: u64,
        cache: &mut ShareCache,
        budget: &Budget,
    ) -> Vec<Candidate> {
        let layout = self.layout;
        let t = layout.topology;
        let s = t.slots_per_gpu();
        let mut ladder = Vec::with_capacity(steps.len());
        // One repairer per (unit, groups) pair met on the ladder, walked
        // from the loosest target to the tightest.
        let mut keys: Vec<(usize, &[u32])> = Vec::new();
        for (_, level) in steps {
            for (u, groups) in level.iter().enumerate() {
                if !keys.contains(&(u, groups.as_slice())) {
                    keys.push((u, groups));
                }
            }
        }
        let units: Vec<Unit> = keys
            .iter()
            .map(|&(_, groups)| self.unit_of(row, groups))
            .collect();
        let olds: Vec<Vec<Option<u32>>> = keys
            .iter()
            .zip(&units)
            .map(|(&(u, _), unit)| {
                prev[layout.slots(u)]
                    .iter()
                    .map(|&e| unit.local(e))
                    .collect()
            })
            .collect();
        let problems: Vec<NodeProblem> = keys
            .iter()
            .zip(&units)
            .map(|(&(u, _), unit)| unit.problem(layout.speeds(u), s))
            .collect();
        let mut repairers: Vec<Repairer> = problems
            .iter()
            .zip(&olds)
            .map(|(p, old)| Repairer::new(*p, old))
            .collect();
        let mut fallbacks: Vec<Option<Vec<u32>>> = vec![None; keys.len()];
        for (level, (tau, level_hosts)) in steps.iter().enumerate() {
            let tau = *tau;
            if budget.remaining() <= 0.0 {
                break;
            }
            let mut out = vec![0u32; t.num_slots()];
            for (u, groups) in level_hosts.iter().enumerate() {
                let k = keys
                    .iter()
                    .position(|&key| key == (u, groups.as_slice()))
                    .unwrap_or(0);
                let repaired = repairers[k].reach(tau, budget.deadline());
                let range = layout.slots(u);
                let mut local = repaired.slots;
                if repaired.max_load > tau * (1.0 + tolerance::REACHED) {
                    let fallback = fallbacks[k].get_or_insert_with(|| {
                        self.fresh_unit(problems[k], &units[k], fresh, tau, seed + level as u64)
                    });
                    // Rename the fallback's GPUs onto the old ones it overlaps most.
                    let (old_of_new, _) =
                        relabel::match_gpus(fallback, &local_old(&olds[k]), layout.speeds(u), s);
                    let renamed = relabel::permute_gpus(fallback, &inverse(&old_of_new), s);
                    let max_load = EvenPacking::from_slots(problems[k], renamed.clone()).max_load();
                    if max_load <= tau * (1.0 + tolerance::REACHED) || max_load < repaired.max_load
                    {
                        local = renamed;
                    }
                }
                for (dst, &e) in out[range].iter_mut().zip(&local) {
                    *dst = units[k].global(e);
                }
            }
            ladder.push(self.finish(row, out, prev, cache, budget));
        }
        ladder
    }

    /// Re-places a chosen candidate unit by unit with the exact min-moves
    /// model (counts fixed, every GPU at most the candidate's max load, so the
    /// layer's balance cannot get worse); keeps whatever is better.
    pub(crate) fn refine(
        &self,
        row: &[f64],
        prev: &[u32],
        chosen: Candidate,
        budget: &Budget,
        seconds: f64,
    ) -> Candidate {
        let layout = self.layout;
        let s = layout.topology.slots_per_gpu();
        if chosen.migrations == 0 || seconds <= 0.0 {
            return chosen;
        }
        let started = std::time::Instant::now();
        let mut out = chosen.row.clone();
        let units = layout.units();
        for u in 0..units {
            let range = layout.slots(u);
            if row_migrations(&out[range.clone()], &prev[range.clone()], s) == 0 {
                continue;
            }
            let unit = Unit::of_slots(&out[range.clone()], row);
            let problem = unit.problem(layout.speeds(u), s);
            let start = unit.local_slots(&out[range.clone()]);
            let old: Vec<Option<u32>> =
                prev[range.clone()].iter().map(|&e| unit.local(e)).collect();
            let left = ((seconds - started.elapsed().as_secs_f64()) / (units - u) as f64)
                .min(budget.remaining());
            if let Some(better) = min_moves(problem, &start, &old, chosen.max_load, left) {
                for (dst, &e) in out[range].iter_mut().zip(&better) {
                    *dst = unit.global(e);
                }
            }
        }
        let refined = self.finish(row, out, prev, &mut ShareCache::default(), budget);
        let no_worse = refined.max_load <= chosen.max_load * (1.0 + tolerance::ROUNDING);
        if no_worse && refined.migrations < chosen.migrations {
            refined
        } else {
            chosen
        }
    }

    /// The fresh plan renamed to the previous plan's nodes and GPUs.
    fn relabelled_fresh(&self, prev: &[u32], fresh: &LayerSolution) -> Candidate {
        let t = self.layout.topology;
        let s = t.slots_per_gpu();
        let source = relabel::relabel(
            &fresh.row,
            prev,
            t.gpu_speed(),
            self.layout.gpus_per_unit(),
            s,
        );
        let new_row = relabel::permute_gpus(&fresh.row, &source, s);
        let shares = fresh
            .shares
            .as_ref()
            .map(|sh| relabel::permute_gpus(sh, &source, s));
        Candidate {
            migrations: row_migrations(&new_row, prev, s),
            row: new_row,
            shares,
            max_load: fresh.max_load,
        }
    }

    /// Whether `prev` keeps every group on one node (always true globally).
    fn follows_placement(&self, prev: &[u32]) -> bool {
        let t = self.layout.topology;
        self.layout.placement == Placement::Global || group_nodes(t, prev).is_some()
    }

    /// Scores a finished row: max load (with the best shares under weighted
    /// split) and migrations.
    fn finish(
        &self,
        row: &[f64],
        out: Vec<u32>,
        prev: &[u32],
        cache: &mut ShareCache,
        budget: &Budget,
    ) -> Candidate {
        let layout = self.layout;
        let t = layout.topology;
        let s = t.slots_per_gpu();
        let mut shares = (self.split == Split::Weighted).then(|| vec![0.0; out.len()]);
        let mut max_load: f64 = 0.0;
        for u in 0..layout.units() {
            let range = layout.slots(u);
            let unit = Unit::of_slots(&out[range.clone()], row);
            let problem = unit.problem(layout.speeds(u), s);
            let local = unit.local_slots(&out[range.clone()]);
            let unit_max = match shares.as_mut() {
                None => EvenPacking::from_slots(problem, local).max_load(),
                Some(shares) => {
                    let (unit_shares, m) = cache
                        .entry((u, out[range.clone()].to_vec()))
                        .or_insert_with(|| {
                            let even = weighted::even_shares(problem, &local);
                            weighted::shares_lp(
                                problem,
                                &local,
                                SHARE_LP_SECONDS.min(budget.remaining()),
                            )
                            .unwrap_or_else(|| {
                                let m = weighted::weighted_loads(problem, &local, &even)
                                    .into_iter()
                                    .fold(0.0, f64::max);
                                (even, m)
                            })
                        });
                    shares[range].copy_from_slice(unit_shares);
                    *m
                }
            };
            max_load = max_load.max(unit_max);
        }
        Candidate {
            migrations: row_migrations(&out, prev, s),
            row: out,
            shares,
            max_load,
        }
    }

    /// Groups per unit for target `tau` and the split's worst node bound: the
    /// exact group model, or the fresh split (no bound) when it has no
    /// answer. Global placement has one unit of all.
    fn assign(
        &self,
        row: &[f64],
        prev: &[u32],
        fresh: &LayerSolution,
        tau: f64,
    ) -> (Vec<Vec<u32>>, Option<f64>) {
        let t = self.layout.topology;
        if self.layout.placement == Placement::Global {
            return (vec![(0..t.num_groups() as u32).collect()], None);
        }
        let fresh_nodes = group_nodes(t, &fresh.row).unwrap_or_default();
        let prev_nodes = majority_nodes(t, prev);
        let epg = t.experts_per_group();
        let held: Vec<f64> = (0..t.num_groups())
            .map(|g| prev.iter().filter(|&&e| e as usize / epg == g).count() as f64)
            .collect();
        let gpus = t.gpus_per_node();
        let scratch = RefCell::new((Replication::default(), Vec::new()));
        let load = |node: usize, mask: u32| -> f64 {
            let mut guard = scratch.borrow_mut();
            let (replication, weights) = &mut *guard;
            weights.clear();
            (0..t.num_groups())
                .filter(|g| mask & (1 << g) != 0)
                .for_each(|g| weights.extend_from_slice(&row[g * epg..(g + 1) * epg]));
            let speeds = &t.gpu_speed()[node * gpus..(node + 1) * gpus];
            let mean = weights.iter().sum::<f64>() / speeds.iter().sum::<f64>();
            let max_replica = replication.run(weights, t.slots_per_node());
            mean.max(max_replica / speeds.iter().copied().fold(0.0, f64::max))
        };
        let move_cost = |g: usize, node: usize| if prev_nodes[g] == node { 0.0 } else { held[g] };
        let model = GroupModel {
            groups: t.num_groups(),
            nodes: t.num_nodes(),
            load: &load,
            move_cost: &move_cost,
            limit: tau,
        };
        let (node_of_group, worst) = match model.solve() {
            Some(a) => (a.node_of_group, Some(a.worst)),
            None => (fresh_nodes, None),
        };
        let mut hosts = vec![Vec::new(); t.num_nodes()];
        for (g, &n) in node_of_group.iter().enumerate() {
            hosts[n as usize].push(g as u32);
        }
        (hosts, worst)
    }

    /// The unit hosting `groups` (ascending).
    fn unit_of(&self, row: &[f64], groups: &[u32]) -> Unit {
        let epg = self.layout.topology.experts_per_group() as u32;
        let experts: Vec<u32> = groups
            .iter()
            .flat_map(|&g| g * epg..(g + 1) * epg)
            .collect();
        Unit::new(experts, row)
    }

    /// A fresh placement of a unit's experts (local ids): taken from the
    /// fresh layer when it has a node with the same experts, searched anew
    /// otherwise.
    fn fresh_unit(
        &self,
        problem: NodeProblem,
        unit: &Unit,
        fresh: &LayerSolution,
        tau: f64,
        seed: u64,
    ) -> Vec<u32> {
        let layout = self.layout;
        for u in 0..layout.units() {
            let slots = &fresh.row[layout.slots(u)];
            let mut distinct = slots.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct == unit.experts && layout.speeds(u) == problem.speeds {
                return unit.local_slots(slots);
            }
        }
        let counts = water_fill(problem.weights, problem.num_slots(), problem.count_cap());
        let mut packing = EvenPacking::lpt(problem, &counts);
        let effort = Effort {
            deadline: std::time::Instant::now(),
            max_kicks: 0,
            patience: 0,
        };
        even_search::improve(&mut packing, tau, &effort, seed);
        packing.into_slots()
    }
}

/// Local ids of a unit's old slots, with departed experts as a value no
/// current slot holds (so they count as changed).
fn local_old(old: &[Option<u32>]) -> Vec<u32> {
    old.iter().map(|e| e.unwrap_or(u32::MAX)).collect()
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// The node of every group when each group sits on exactly one node.
fn group_nodes(t: &crate::topology::Topology, row: &[u32]) -> Option<Vec<u32>> {
    let per_node = t.slots_per_node();
    let mut node_of = vec![u32::MAX; t.num_groups()];
    for (slot, &e) in row.iter().enumerate() {
        let g = t.group_of_expert(e as usize);
        let node = (slot / per_node) as u32;
        match node_of[g] {
            u32::MAX => node_of[g] = node,
            n if n != node => return None,
            _ => {}
        }
    }
    Some(node_of)
}

/// The node holding most of each group's slots (ties: lowest node).
fn majority_nodes(t: &crate::topology::Topology, row: &[u32]) -> Vec<usize> {
    let per_node = t.slots_per_node();
    let mut count = vec![vec![0usize; t.num_nodes()]; t.num_groups()];
    for (slot, &e) in row.iter().enumerate() {
        count[t.group_of_expert(e as usize)][slot / per_node] += 1;
    }
    count
        .iter()
        .map(|c| (0..c.len()).fold(0, |best, n| if c[n] > c[best] { n } else { best }))
        .collect()
}

/// Lexicographic choice: per layer the candidate index, fewest migrations
/// with Σ max loads within `(1 + tolerance)` of Σ fresh max loads (a
/// [`crate::knapsack`]). Every layer's cheapest candidate that is no heavier
/// than its fresh one together meet the budget, so no optimum moves more
/// than they do, which bounds the table.
pub(crate) fn choose_within(ladders: &[Vec<Candidate>], tolerance: f64) -> Vec<usize> {
    let budget: f64 = ladders.iter().map(|l| l[0].max_load).sum::<f64>() * (1.0 + tolerance);
    let most: usize = ladders
        .iter()
        .map(|l| {
            l.iter()
                .filter(|c| c.max_load <= l[0].max_load)
                .map(|c| c.migrations)
                .min()
                .unwrap_or(0)
        })
        .sum();
    let items: Vec<Vec<(f64, usize)>> = ladders
        .iter()
        .map(|l| l.iter().map(|c| (c.max_load, c.migrations)).collect())
        .collect();
    // Only rounding can leave no choice (the fresh one is in the table).
    knapsack::fewest_migrations(&items, budget, most).unwrap_or_else(|| vec![0; ladders.len()])
}

/// Priced choice: per layer the candidate with the least transfer time minus
/// saved compute time (`stale` = each layer's max load under the previous
/// plan, the reference the savings are measured from).
pub(crate) fn choose_priced(
    ladders: &[Vec<Candidate>],
    stale: &[f64],
    seconds_per_migration: f64,
    serve_seconds: f64,
) -> Vec<usize> {
    let stale_sum: f64 = stale.iter().sum::<f64>().max(1e-300);
    ladders
        .iter()
        .zip(stale)
        .map(|(ladder, &stale_max)| {
            let net = |c: &Candidate| {
                c.migrations as f64 * seconds_per_migration
                    - serve_seconds * (stale_max - c.max_load) / stale_sum
            };
            (0..ladder.len())
                .min_by(|&a, &b| net(&ladder[a]).total_cmp(&net(&ladder[b])))
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(max_load: f64, migrations: usize) -> Candidate {
        Candidate {
            row: Vec::new(),
            shares: None,
            max_load,
            migrations,
        }
    }

    /// Summed max load and migrations of one candidate per layer.
    fn totals(choice: &[usize], ladders: &[Vec<Candidate>]) -> (f64, usize) {
        choice
            .iter()
            .zip(ladders)
            .fold((0.0, 0), |(load, moves), (&k, l)| {
                (load + l[k].max_load, moves + l[k].migrations)
            })
    }

    #[test]
    fn lexicographic_choice_meets_the_budget_with_fewest_migrations() {
        // Fresh first. Budget = 1.01 * (100 + 100) = 202.
        let ladders = vec![
            vec![cand(100.0, 50), cand(101.0, 10), cand(103.0, 0)],
            vec![cand(100.0, 40), cand(100.5, 20), cand(102.0, 5)],
        ];
        let (load, moves) = totals(&choose_within(&ladders, 0.01), &ladders);
        assert!(load <= 202.0 + 1e-9);
        // Best: 101 + 100.5 = 201.5 (30 moves) vs 100 + 102 (55) vs 101 + 102 = 203 (too much).
        assert_eq!(moves, 30);
        assert_eq!(choose_within(&ladders, 0.0), vec![0, 0]);
    }

    #[test]
    fn priced_choice_weighs_transfer_against_savings() {
        let ladders = vec![vec![cand(100.0, 50), cand(110.0, 0)]];
        // Saving 10 of 110 over 1000 s = 90.9 s; 50 moves cost 50 s or 500 s.
        assert_eq!(choose_priced(&ladders, &[110.0], 1.0, 1000.0), vec![0]);
        assert_eq!(choose_priced(&ladders, &[110.0], 10.0, 1000.0), vec![1]);
    }
}
