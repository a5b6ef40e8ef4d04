//! Replicas in slots: the state the greedy planner builds and refines for one
//! node (or for the whole cluster under global placement).
//!
//! Every GPU has exactly `S` slots and every slot must be filled, so packing is
//! cardinality-constrained: plain LPT would overfill GPUs with light replicas.
//! Experts are the node's local indices `0..n`; the caller maps them back.

use std::cmp::Ordering;

/// The slots of a set of GPUs and the replica loads in them.
///
/// Invariant (after [`Packing::reset`] + [`Packing::lpt`]): every slot holds
/// an expert, expert `e` occupies exactly `count[e] >= 1` slots, and
/// `load[g]` is the sum of `share` over GPU `g`'s slots.
#[derive(Debug, Default)]
pub(crate) struct Packing {
    pub(super) slots_per_gpu: usize,
    /// Local expert in each slot, GPU-major (slot `i` is on GPU `i / S`).
    pub(super) slot: Vec<u32>,
    /// Tokens on each GPU (not divided by speed).
    pub(super) load: Vec<f64>,
    pub(super) speed: Vec<f64>,
    uniform_speed: bool,
    pub(super) weight: Vec<f64>,
    pub(super) count: Vec<u32>,
    /// `weight / count`: the load of each of the expert's replicas.
    pub(super) share: Vec<f64>,
    /// LPT had to put two replicas of an expert on one GPU; swaps and count
    /// moves never do, so without this flag there are no duplicates.
    pub(super) forced_duplicates: bool,
    /// Reused by [`Packing::lpt`]: (sort key, expert) per replica.
    items: Vec<(u64, u32)>,
    filled: Vec<usize>,
    /// GPUs with a free slot, most preferred first.
    open: Vec<usize>,
    /// `load / speed` per GPU while [`Packing::lpt`] runs.
    relative: Vec<f64>,
}

impl Packing {
    /// Starts a packing of experts with `weights` and replica `counts` onto
    /// GPUs with `speeds`, `slots_per_gpu` slots each (`Σ counts` must equal
    /// the slot count).
    pub(super) fn reset(
        &mut self,
        weights: &[f64],
        counts: &[u32],
        speeds: &[f64],
        slots_per_gpu: usize,
    ) {
        self.slots_per_gpu = slots_per_gpu;
        self.weight.clear();
        self.weight.extend_from_slice(weights);
        self.count.clear();
        self.count.extend_from_slice(counts);
        self.share.clear();
        self.share
            .extend(weights.iter().zip(counts).map(|(w, &c)| w / f64::from(c)));
        self.speed.clear();
        self.speed.extend_from_slice(speeds);
        self.uniform_speed = speeds.iter().all(|&s| s == speeds[0]);
        self.load.clear();
        self.load.resize(speeds.len(), 0.0);
        self.slot.clear();
        self.slot.resize(speeds.len() * slots_per_gpu, 0);
        self.forced_duplicates = false;
    }

    pub(super) fn num_gpus(&self) -> usize {
        self.speed.len()
    }

    /// The slots of GPU `g`.
    pub(super) fn gpu_slots(&self, g: usize) -> &[u32] {
        &self.slot[g * self.slots_per_gpu..(g + 1) * self.slots_per_gpu]
    }

    pub(super) fn holds(&self, g: usize, expert: u32) -> bool {
        self.gpu_slots(g).contains(&expert)
    }

    /// GPU `g`'s load relative to its speed (what imbalance measures).
    pub(super) fn relative(&self, g: usize) -> f64 {
        self.load[g] / self.speed[g]
    }

    /// The busiest GPU and its relative load.
    pub(super) fn busiest(&self) -> (usize, f64) {
        (0..self.num_gpus()).map(|g| (g, self.relative(g))).fold(
            (0, f64::NEG_INFINITY),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        )
    }

    /// Recomputes GPU `g`'s load from its slots (keeps rounding from piling
    /// up over many incremental moves).
    pub(super) fn refresh(&mut self, g: usize) {
        let s = self.slots_per_gpu;
        self.load[g] = self.slot[g * s..(g + 1) * s]
            .iter()
            .map(|&e| self.share[e as usize])
            .sum();
    }

    /// Cardinality-aware LPT: replicas heaviest first, each into the GPU with
    /// the smallest relative load that has a free slot and does not hold the
    /// expert yet; a second replica of an expert on one GPU only when every
    /// GPU with a free slot already holds it.
    ///
    /// Open GPUs are kept in preference order (least relative load, then
    /// fastest, then lowest index); a placed replica only makes its GPU
    /// heavier, so it moves back (binary search), and the first open GPU
    /// without the expert is usually at the front.
    pub(super) fn lpt(&mut self) {
        let s = self.slots_per_gpu;
        if s == 1 && self.uniform_speed {
            // One replica per GPU, all GPUs alike: every order is LPT's.
            let replicas = self
                .count
                .iter()
                .enumerate()
                .flat_map(|(e, &c)| std::iter::repeat_n(e as u32, c as usize));
            for ((slot, load), e) in self.slot.iter_mut().zip(&mut self.load).zip(replicas) {
                *slot = e;
                *load = self.share[e as usize];
            }
            return;
        }
        self.items.clear();
        for (e, (&share, &count)) in self.share.iter().zip(&self.count).enumerate() {
            // Shares are finite and non-negative (`+ 0.0` turns -0 into +0),
            // so their bits order like the numbers; inverted, an ascending
            // sort puts the heaviest first.
            let key = !(share + 0.0).to_bits();
            self.items
                .extend(std::iter::repeat_n((key, e as u32), count as usize));
        }
        self.items.sort_unstable();
        self.filled.clear();
        self.filled.resize(self.num_gpus(), 0);
        let mut open = std::mem::take(&mut self.open);
        open.clear();
        open.extend(0..self.num_gpus());
        // All GPUs are empty: fastest first, index order when speeds are equal.
        if !self.uniform_speed {
            let speed = &self.speed;
            open.sort_unstable_by(|&a, &b| speed[b].total_cmp(&speed[a]).then(a.cmp(&b)));
        }
        // Round one needs no search: every GPU is empty, so the G heaviest
        // replicas (distinct GPUs, so no duplicates) go one to each GPU in
        // preference order.
        let first_round = open.len().min(self.items.len());
        for (&g, &(_, expert)) in open.iter().zip(&self.items) {
            self.slot[g * s] = expert;
            self.filled[g] = 1;
            self.load[g] = self.share[expert as usize];
        }
        if s == 1 {
            self.open = open;
            return;
        }
        self.relative.clear();
        self.relative
            .extend(self.load.iter().zip(&self.speed).map(|(l, v)| l / v));
        open.sort_unstable_by(|&a, &b| self.preference(a, b));
        for i in first_round..self.items.len() {
            let expert = self.items[i].1;
            let share = self.share[expert as usize];
            let pos = open
                .iter()
                .position(|&g| !self.slot[g * s..g * s + self.filled[g]].contains(&expert))
                .unwrap_or_else(|| {
                    self.forced_duplicates = true;
                    0
                });
            let Some(&g) = open.get(pos) else {
                break;
            };
            self.slot[g * s + self.filled[g]] = expert;
            self.filled[g] += 1;
            self.load[g] += share;
            self.relative[g] = self.load[g] / self.speed[g];
            open.remove(pos);
            if self.filled[g] < s {
                // Heavier now, so it belongs at or after `pos`.
                let at = pos + open[pos..].partition_point(|&h| self.preference(h, g).is_lt());
                open.insert(at, g);
            }
        }
        self.open = open;
    }

    /// Which of two open GPUs [`Packing::lpt`] fills first.
    #[inline]
    fn preference(&self, a: usize, b: usize) -> Ordering {
        // Relative loads and speeds are finite, so `<` orders them.
        let (ra, rb) = (self.relative[a], self.relative[b]);
        if ra != rb {
            return if ra < rb {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        self.speed[b].total_cmp(&self.speed[a]).then(a.cmp(&b))
    }

    /// Removes same-GPU duplicates until only unavoidable ones are left.
    ///
    /// A trade swaps a second copy of `e` on GPU `g` with a replica `x` of
    /// another GPU `h` when that lowers the duplicate count; among such
    /// trades the one leaving the pair least loaded wins. While some expert
    /// sits on fewer than `min(count, GPUs)` GPUs, a GPU `h` without it has a
    /// replica `x` that is duplicated on `h` or absent from `g` (else `h`'s
    /// distinct experts would all fit in `g`'s `S - 2` others), so a trade
    /// exists: the pass ends at `Σ max(0, count - GPUs)` duplicates.
    pub(super) fn repair_duplicates(&mut self) {
        // Every trade removes at least one duplicate.
        for _ in 0..self.slot.len() {
            match self.best_trade() {
                Some((a, b)) => self.swap(a, b),
                None => return,
            }
        }
    }

    /// Copies of `expert` on GPU `g`.
    pub(super) fn multiplicity(&self, g: usize, expert: u32) -> usize {
        self.gpu_slots(g).iter().filter(|&&e| e == expert).count()
    }

    /// The best duplicate-removing trade (see [`Packing::repair_duplicates`]).
    fn best_trade(&self) -> Option<(usize, usize)> {
        let s = self.slots_per_gpu;
        let mut best: Option<(f64, usize, usize)> = None;
        for a in 0..self.slot.len() {
            let g = a / s;
            let e = self.slot[a];
            if !self.slot[g * s..a].contains(&e) {
                continue;
            }
            for b in (0..self.slot.len()).filter(|&b| b / s != g) {
                let (h, x) = (b / s, self.slot[b]);
                if x == e {
                    continue;
                }
                let added = usize::from(self.holds(h, e)) + usize::from(self.holds(g, x));
                let removed = 1 + usize::from(self.multiplicity(h, x) >= 2);
                if added >= removed {
                    continue;
                }
                let d = self.share[e as usize] - self.share[x as usize];
                let worst =
                    ((self.load[g] - d) / self.speed[g]).max((self.load[h] + d) / self.speed[h]);
                if best.is_none_or(|(w, _, _)| worst < w) {
                    best = Some((worst, a, b));
                }
            }
        }
        best.map(|(_, a, b)| (a, b))
    }

    /// Exchanges the replicas in slots `a` and `b` and updates both GPUs.
    pub(super) fn swap(&mut self, a: usize, b: usize) {
        self.slot.swap(a, b);
        self.refresh(a / self.slots_per_gpu);
        self.refresh(b / self.slots_per_gpu);
    }

    /// True when some GPU holds two replicas of one expert.
    pub(super) fn has_duplicates(&self) -> bool {
        (0..self.num_gpus()).any(|g| {
            let slots = self.gpu_slots(g);
            (1..slots.len()).any(|i| slots[..i].contains(&slots[i]))
        })
    }

    /// Same-GPU duplicates: Σ over GPUs of (replicas of an expert − 1).
    #[cfg(test)]
    pub(super) fn duplicates(&self) -> usize {
        (0..self.num_gpus())
            .map(|g| {
                let slots = self.gpu_slots(g);
                slots
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| slots[..*i].contains(e))
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(weights: &[f64], counts: &[u32], speeds: &[f64], s: usize) -> Packing {
        let mut p = Packing::default();
        p.reset(weights, counts, speeds, s);
        p.lpt();
        p
    }

    fn check_invariants(p: &Packing) {
        let mut seen = vec![0u32; p.count.len()];
        for &e in &p.slot {
            seen[e as usize] += 1;
        }
        assert_eq!(seen, p.count);
        for g in 0..p.num_gpus() {
            let load: f64 = p.gpu_slots(g).iter().map(|&e| p.share[e as usize]).sum();
            assert!((load - p.load[g]).abs() < 1e-9);
        }
    }

    #[test]
    fn lpt_fills_every_slot_without_duplicates() {
        let weights = [12.0, 9.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let counts = [3, 1, 2, 1, 1, 1, 1, 2];
        let p = packed(&weights, &counts, &[1.0, 1.0, 1.0, 1.0], 3);
        check_invariants(&p);
        assert_eq!(p.duplicates(), 0);
    }

    #[test]
    fn lpt_puts_heavy_work_on_fast_gpus() {
        // One slot per GPU: the heaviest replica goes to the fastest GPU.
        let p = packed(&[1.0, 8.0], &[1, 1], &[1.0, 4.0], 1);
        assert_eq!(p.slot, vec![0, 1]);
    }

    #[test]
    fn duplicates_only_when_forced() {
        // Expert 0 has 3 replicas but there are only 2 GPUs.
        let p = packed(&[9.0, 1.0, 1.0, 1.0], &[3, 1, 1, 1], &[1.0, 1.0], 3);
        check_invariants(&p);
        assert_eq!(p.duplicates(), 1);
    }

    #[test]
    fn repair_removes_avoidable_duplicates() {
        let mut p = Packing::default();
        p.reset(&[6.0, 1.0, 1.0], &[2, 1, 1], &[1.0, 1.0], 2);
        // Both replicas of expert 0 on GPU 0.
        p.slot = vec![0, 0, 1, 2];
        p.refresh(0);
        p.refresh(1);
        p.repair_duplicates();
        check_invariants(&p);
        assert_eq!(p.duplicates(), 0);
        assert_eq!(p.load, vec![4.0, 4.0]);
    }
}
