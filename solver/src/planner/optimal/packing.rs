//! A node's even-split placement as the searches edit it: replica counts,
//! which expert each slot holds, and the GPU loads that follow.
//!
//! Every replica of expert `e` carries `w_e / c_e` tokens. Edits are either
//! swaps (two slots exchange experts; counts stay) or recounts (one slot
//! changes expert, so two counts change and every GPU holding either expert
//! sees its load move). Loads are kept incrementally and can be recomputed
//! exactly with [`EvenPacking::refresh`].

use super::problem::NodeProblem;

/// A complete placement of one node: every slot filled, every expert placed.
#[derive(Debug, Clone)]
pub(crate) struct EvenPacking<'p> {
    problem: NodeProblem<'p>,
    counts: Vec<u32>,
    /// Local expert of each slot, GPU-major (`G * S`).
    slots: Vec<u32>,
    /// Tokens per GPU (not divided by speed).
    loads: Vec<f64>,
    /// Copies of expert `e` on GPU `g` at `g * n + e`.
    present: Vec<u32>,
    /// The GPUs holding each expert (no repeats): recounts touch only them.
    hosts: Vec<Vec<u32>>,
    /// `problem.count_cap()`, which recount checks ask for in inner loops.
    count_cap: u32,
}

impl<'p> EvenPacking<'p> {
    /// Builds the packing a slot table describes (counts are derived).
    /// The caller guarantees `slots.len() == G * S` and every expert present.
    pub fn from_slots(problem: NodeProblem<'p>, slots: Vec<u32>) -> Self {
        let n = problem.num_experts();
        let mut counts = vec![0u32; n];
        for &e in &slots {
            counts[e as usize] += 1;
        }
        let mut packing = EvenPacking {
            problem,
            counts,
            slots,
            loads: vec![0.0; problem.num_gpus()],
            present: vec![0; problem.num_gpus() * n],
            hosts: vec![Vec::new(); n],
            count_cap: problem.count_cap(),
        };
        packing.refresh();
        packing
    }

    /// Cardinality-aware LPT: replicas heaviest first, each onto the GPU
    /// whose load after taking it (divided by speed) is smallest among those
    /// with a free slot and no copy of the expert yet; copies only when no
    /// such GPU is left. `counts` must sum to `G * S` with every count >= 1.
    pub fn lpt(problem: NodeProblem<'p>, counts: &[u32]) -> Self {
        let (g_count, s) = (problem.num_gpus(), problem.slots_per_gpu);
        let n = problem.num_experts();
        let mut replicas: Vec<(f64, u32)> = counts
            .iter()
            .enumerate()
            .flat_map(|(e, &c)| {
                let size = problem.weights[e] / f64::from(c);
                (0..c).map(move |_| (size, e as u32))
            })
            .collect();
        replicas.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut fill = vec![0usize; g_count];
        let mut loads = vec![0.0; g_count];
        let mut present = vec![0u32; g_count * n];
        let mut slots = vec![0u32; g_count * s];
        for (size, e) in replicas {
            let limit = problem.per_gpu_limit(counts[e as usize]);
            let best = |allow_copies: bool| {
                (0..g_count)
                    .filter(|&g| fill[g] < s)
                    .filter(|&g| allow_copies || present[g * n + e as usize] < limit)
                    .min_by(|&a, &b| {
                        ((loads[a] + size) / problem.speeds[a])
                            .total_cmp(&((loads[b] + size) / problem.speeds[b]))
                    })
            };
            if let Some(g) = best(false).or_else(|| best(true)) {
                slots[g * s + fill[g]] = e;
                fill[g] += 1;
                loads[g] += size;
                present[g * n + e as usize] += 1;
            }
        }
        let mut packing = Self::from_slots(problem, slots);
        packing.spread_copies();
        packing
    }

    pub fn problem(&self) -> NodeProblem<'p> {
        self.problem
    }

    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    pub fn into_slots(self) -> Vec<u32> {
        self.slots
    }

    pub fn expert_at(&self, slot: usize) -> u32 {
        self.slots[slot]
    }

    /// Tokens one replica of `e` carries.
    pub fn replica_load(&self, e: u32) -> f64 {
        self.problem.weights[e as usize] / f64::from(self.counts[e as usize])
    }

    /// Tokens on GPU `g` (before dividing by speed).
    pub fn raw_load(&self, g: usize) -> f64 {
        self.loads[g]
    }

    /// GPU `g`'s load divided by its speed: what the objective compares.
    pub fn load(&self, g: usize) -> f64 {
        self.loads[g] / self.problem.speeds[g]
    }

    /// Copies of expert `e` on GPU `g` at `g * n + e`.
    pub fn copy_table(&self) -> &[u32] {
        &self.present
    }

    pub fn copies(&self, g: usize, e: u32) -> u32 {
        self.present[g * self.problem.num_experts() + e as usize]
    }

    /// The objective: the largest speed-scaled GPU load.
    pub fn max_load(&self) -> f64 {
        (0..self.problem.num_gpus())
            .map(|g| self.load(g))
            .fold(0.0, f64::max)
    }

    /// The GPU with the largest speed-scaled load (lowest index on ties).
    pub fn argmax(&self) -> usize {
        (0..self.problem.num_gpus())
            .fold((0, f64::NEG_INFINITY), |(best, v), g| {
                let l = self.load(g);
                if l > v {
                    (g, l)
                } else {
                    (best, v)
                }
            })
            .0
    }

    /// Σ load² / speed: the tie-breaker that pulls loads toward the mean.
    pub fn energy(&self) -> f64 {
        self.loads
            .iter()
            .zip(self.problem.speeds)
            .map(|(l, s)| l * l / s)
            .sum()
    }

    /// Whether GPU `g` may take one more copy of `e` when it gives up
    /// `leaving` (another expert, or `e` itself, which nets to no change).
    pub fn may_receive(&self, g: usize, e: u32, leaving: u32) -> bool {
        e == leaving || self.copies(g, e) < self.problem.per_gpu_limit(self.counts[e as usize])
    }

    /// Whether slot `slot` may switch to expert `to` (a recount): the old
    /// expert keeps a replica, `to` stays within the count cap, and the
    /// slot's GPU within `to`'s per-GPU copy limit at its new count.
    pub fn may_recount(&self, slot: usize, to: u32) -> bool {
        let from = self.slots[slot];
        let g = slot / self.problem.slots_per_gpu;
        let to_count = self.counts[to as usize];
        from != to
            && self.counts[from as usize] >= 2
            && to_count < self.count_cap
            && self.copies(g, to) < self.problem.per_gpu_limit(to_count + 1)
    }

    /// Exchanges the experts of two slots (on different GPUs).
    pub fn swap(&mut self, a: usize, b: usize) {
        let s = self.problem.slots_per_gpu;
        let (ga, gb) = (a / s, b / s);
        let (ea, eb) = (self.slots[a], self.slots[b]);
        let (la, lb) = (self.replica_load(ea), self.replica_load(eb));
        self.loads[ga] += lb - la;
        self.loads[gb] += la - lb;
        self.remove_copy(ga, ea);
        self.remove_copy(gb, eb);
        self.add_copy(ga, eb);
        self.add_copy(gb, ea);
        self.slots.swap(a, b);
    }

    fn add_copy(&mut self, g: usize, e: u32) {
        let cell = &mut self.present[g * self.problem.num_experts() + e as usize];
        *cell += 1;
        if *cell == 1 {
            self.hosts[e as usize].push(g as u32);
        }
    }

    fn remove_copy(&mut self, g: usize, e: u32) {
        let cell = &mut self.present[g * self.problem.num_experts() + e as usize];
        *cell -= 1;
        if *cell == 0 {
            let hosts = &mut self.hosts[e as usize];
            if let Some(i) = hosts.iter().position(|&h| h as usize == g) {
                hosts.swap_remove(i);
            }
        }
    }

    /// The GPUs whose load changes if slot `slot` switched to expert `to`,
    /// with the change (raw tokens), written into `delta`: the hosts of both
    /// experts, whose replicas get heavier or lighter, and the slot's GPU.
    pub fn recount_delta(&self, slot: usize, to: u32, delta: &mut Vec<(usize, f64)>) {
        delta.clear();
        let g_slot = slot / self.problem.slots_per_gpu;
        let from = self.slots[slot];
        let w = self.problem.weights;
        let (cf, ct) = (
            f64::from(self.counts[from as usize]),
            f64::from(self.counts[to as usize]),
        );
        let from_shift = w[from as usize] / (cf - 1.0) - w[from as usize] / cf;
        let to_shift = w[to as usize] / (ct + 1.0) - w[to as usize] / ct;
        let mut add = |g: usize, change: f64| match delta.iter_mut().find(|(h, _)| *h == g) {
            Some((_, d)) => *d += change,
            None => delta.push((g, change)),
        };
        for &h in &self.hosts[from as usize] {
            add(
                h as usize,
                f64::from(self.copies(h as usize, from)) * from_shift,
            );
        }
        for &h in &self.hosts[to as usize] {
            add(
                h as usize,
                f64::from(self.copies(h as usize, to)) * to_shift,
            );
        }
        add(
            g_slot,
            w[to as usize] / (ct + 1.0) - w[from as usize] / cf - from_shift,
        );
    }

    /// Switches slot `slot` to expert `to`; the old expert must keep at
    /// least one replica.
    pub fn recount(&mut self, slot: usize, to: u32) {
        let mut delta = Vec::new();
        self.recount_delta(slot, to, &mut delta);
        let g = slot / self.problem.slots_per_gpu;
        let from = self.slots[slot];
        for (h, d) in delta {
            self.loads[h] += d;
        }
        self.counts[from as usize] -= 1;
        self.counts[to as usize] += 1;
        self.remove_copy(g, from);
        self.add_copy(g, to);
        self.slots[slot] = to;
    }

    /// Recomputes loads and copy counts from the slot table (drops the
    /// rounding drift of incremental updates).
    pub fn refresh(&mut self) {
        let s = self.problem.slots_per_gpu;
        let n = self.problem.num_experts();
        self.present.iter_mut().for_each(|p| *p = 0);
        self.hosts.iter_mut().for_each(Vec::clear);
        for g in 0..self.problem.num_gpus() {
            let mut load = 0.0;
            for &e in &self.slots[g * s..(g + 1) * s] {
                load += self.problem.weights[e as usize] / f64::from(self.counts[e as usize]);
                self.present[g * n + e as usize] += 1;
                if self.present[g * n + e as usize] == 1 {
                    self.hosts[e as usize].push(g as u32);
                }
            }
            self.loads[g] = load;
        }
    }

    /// Moves same-GPU copies elsewhere when another GPU can take the expert:
    /// the swap that keeps the larger of the two GPU loads smallest.
    pub fn spread_copies(&mut self) {
        let s = self.problem.slots_per_gpu;
        let g_count = self.problem.num_gpus();
        for slot in 0..self.slots.len() {
            let g = slot / s;
            let e = self.slots[slot];
            if self.copies(g, e) <= self.problem.per_gpu_limit(self.counts[e as usize]) {
                continue;
            }
            let mut best: Option<(f64, usize)> = None;
            for other in 0..g_count * s {
                let h = other / s;
                let f = self.slots[other];
                if h == g || !self.may_receive(h, e, f) || !self.may_receive(g, f, e) || f == e {
                    continue;
                }
                let d = self.replica_load(f) - self.replica_load(e);
                let worst = ((self.loads[g] + d) / self.problem.speeds[g])
                    .max((self.loads[h] - d) / self.problem.speeds[h]);
                if best.is_none_or(|(b, _)| worst < b) {
                    best = Some((worst, other));
                }
            }
            if let Some((_, other)) = best {
                self.swap(slot, other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_loads(p: &EvenPacking) -> Vec<f64> {
        let s = p.problem().slots_per_gpu;
        (0..p.problem().num_gpus())
            .map(|g| {
                p.slots()[g * s..(g + 1) * s]
                    .iter()
                    .map(|&e| p.replica_load(e))
                    .sum::<f64>()
            })
            .collect()
    }

    #[test]
    fn lpt_fills_every_slot_without_copies() {
        let weights = [9.0, 7.0, 5.0, 3.0, 2.0, 1.0];
        let speeds = [1.0, 1.0, 2.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 3,
        };
        let counts = [3, 2, 1, 1, 1, 1];
        let packing = EvenPacking::lpt(p, &counts);
        assert_eq!(packing.counts(), &counts);
        for g in 0..3 {
            for e in 0..6 {
                assert!(packing.copies(g, e) <= 1);
            }
        }
        for (g, naive) in naive_loads(&packing).into_iter().enumerate() {
            assert!((packing.raw_load(g) - naive).abs() < 1e-9);
        }
    }

    #[test]
    fn swaps_and_recounts_keep_loads_exact() {
        let weights = [9.0, 7.0, 5.0, 3.0, 2.0, 1.0];
        let speeds = [1.0, 1.5, 2.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 3,
        };
        let mut packing = EvenPacking::lpt(p, &[3, 2, 1, 1, 1, 1]);
        packing.swap(0, 4);
        let slot_of_zero = (0..9).find(|&i| packing.expert_at(i) == 0).unwrap();
        let target = (0..6u32)
            .find(|&e| e != 0 && packing.copies(slot_of_zero / 3, e) == 0)
            .unwrap();
        let mut delta = Vec::new();
        packing.recount_delta(slot_of_zero, target, &mut delta);
        let before: Vec<f64> = (0..3).map(|g| packing.raw_load(g)).collect();
        packing.recount(slot_of_zero, target);
        assert_eq!(packing.counts()[0], 2);
        let naive = naive_loads(&packing);
        for g in 0..3 {
            let change: f64 = delta.iter().filter(|(h, _)| *h == g).map(|(_, d)| d).sum();
            assert!((packing.raw_load(g) - naive[g]).abs() < 1e-9, "{g}");
            assert!((before[g] + change - naive[g]).abs() < 1e-9, "{g}");
        }
    }
}
