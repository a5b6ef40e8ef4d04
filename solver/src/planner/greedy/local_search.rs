//! Local search on a packing: lower the busiest GPU until nothing helps.
//!
//! Two kinds of move, both accepted only when they lower the busiest GPU's
//! relative load and never creating a same-GPU duplicate:
//! - **swap** a replica of the busiest GPU with a lighter one elsewhere, when
//!   both GPUs end below the current maximum: partners are tried in order of
//!   the level the pair could reach at best, and the first partner with an
//!   improving swap gives its best one;
//! - **count move**: one slot changes expert (`x` loses a replica, `f` gains
//!   one), when the new maximum over all GPUs is lower — this lets the node
//!   trade the water-filling's replica counts for a better fit.
//!
//! Each accepted move makes the sorted vector of GPU loads lexicographically
//! smaller, so the search ends; the move limits only guard against rounding.
//! Search stops as soon as the busiest GPU reaches `target` (the layer's lower
//! bound): nothing below it changes the layer's imbalance.

use super::pack::Packing;
use crate::tolerance;

/// Moves allowed per slot of the packing, a guard against cycling on rounding.
const MOVES_PER_SLOT: usize = 64;

/// Reusable buffers for the local search.
#[derive(Debug, Default)]
pub(crate) struct Search {
    /// GPUs by relative load, busiest first.
    order: Vec<usize>,
    /// Swap partners of the busiest GPU with the level each pair can reach.
    partners: Vec<(f64, usize)>,
    touched: Vec<bool>,
    touched_list: Vec<usize>,
    delta: Vec<f64>,
    /// Slots of each expert: `positions[starts[e]..starts[e + 1]]`.
    starts: Vec<usize>,
    positions: Vec<usize>,
    cursor: Vec<usize>,
    /// Experts with at least two replicas (the only ones that can give one up).
    replicated: Vec<u32>,
    /// Experts on the busiest GPU whose extra replica could lower it.
    lighter: Vec<u32>,
    /// Per GPU, the most one expert of it sheds with one replica more.
    max_shed: Vec<f64>,
}

/// Runs swaps and count moves until the busiest GPU reaches `target` or no
/// move lowers it.
pub(super) fn improve(p: &mut Packing, target: f64, search: &mut Search) {
    let stop = target * (1.0 + tolerance::REACHED);
    let limit = MOVES_PER_SLOT * p.slot.len();
    let mut moves = 0;
    while moves < limit {
        moves += search.swap_descent(p, stop, limit - moves);
        if p.busiest().1 <= stop || !search.count_move(p) {
            break;
        }
        moves += 1;
    }
    if p.forced_duplicates && p.has_duplicates() {
        search.shed_duplicates(p, stop);
    }
}

/// How much lighter each replica of `f` gets with one replica more.
fn shed(p: &Packing, f: u32) -> f64 {
    let f = f as usize;
    p.share[f] - p.weight[f] / f64::from(p.count[f] + 1)
}

/// How much heavier each replica of `x` gets with one replica less.
fn rise(p: &Packing, x: u32) -> f64 {
    let x = x as usize;
    p.weight[x] / f64::from(p.count[x] - 1) - p.share[x]
}

/// A count move taking slot `q` from `x` keeps duplicates unavoidable: an
/// expert with more replicas than GPUs sits on every GPU, so it may only
/// give up a second copy.
fn keeps_duplicates_minimal(p: &Packing, q: usize, x: u32) -> bool {
    p.count[x as usize] as usize <= p.num_gpus() || p.multiplicity(q / p.slots_per_gpu, x) >= 2
}

impl Search {
    /// Swaps with the busiest GPU until none helps or it reaches `stop`;
    /// returns the swaps made.
    fn swap_descent(&mut self, p: &mut Packing, stop: f64, limit: usize) -> usize {
        let s = p.slots_per_gpu;
        for made in 0..limit {
            let (g, top) = p.busiest();
            if top <= stop {
                return made;
            }
            // No swap with `h` can leave the pair below its level
            // `(L_g + L_h) / (speed_g + speed_h)`; partners in order of that
            // level stop being worth a look once it reaches the best swap.
            self.partners.clear();
            self.partners.extend(
                (0..p.num_gpus())
                    .filter(|&h| h != g)
                    .map(|h| ((p.load[g] + p.load[h]) / (p.speed[g] + p.speed[h]), h)),
            );
            self.partners.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut best = top * (1.0 - tolerance::ROUNDING);
            let mut chosen = None;
            let (lg, sg) = (p.load[g], p.speed[g]);
            for &(level, h) in &self.partners {
                if level >= best {
                    break;
                }
                let (lh, sh) = (p.load[h], p.speed[h]);
                for a in g * s..(g + 1) * s {
                    let ea = p.slot[a];
                    let sa = p.share[ea as usize];
                    for b in h * s..(h + 1) * s {
                        let eb = p.slot[b];
                        // Moving `d` from g to h keeps both below `best`
                        // only inside (lg - best sg, best sh - lh).
                        let d = sa - p.share[eb as usize];
                        if d <= 0.0 || d <= lg - best * sg || d >= best * sh - lh || ea == eb {
                            continue;
                        }
                        let worst = ((lg - d) / sg).max((lh + d) / sh);
                        if worst < best && !p.holds(h, ea) && !p.holds(g, eb) {
                            best = worst;
                            chosen = Some((a, b));
                        }
                    }
                }
                // The first partner with an improving swap gets it: as good
                // as scanning them all on the sample data, and cheaper.
                if chosen.is_some() {
                    break;
                }
            }
            match chosen {
                Some((a, b)) => p.swap(a, b),
                None => return made,
            }
        }
        limit
    }

    /// Makes the best count move that lowers the busiest GPU; false if none.
    ///
    /// Candidates: a replica `f` on the busiest GPU gets lighter by taking
    /// the slot of a replicated expert `x` elsewhere, or a replicated `x` on
    /// the busiest GPU gives its slot to any expert `f` the GPU lacks.
    fn count_move(&mut self, p: &mut Packing) -> bool {
        let s = p.slots_per_gpu;
        let (g, top) = p.busiest();
        self.index(p);
        let mut best = top * (1.0 - tolerance::ROUNDING);
        let mut chosen = None;
        // Experts of `g` worth a replica more: the most `g` can shed is its
        // copies of `f` getting lighter.
        self.lighter.clear();
        for a in g * s..(g + 1) * s {
            let f = p.slot[a];
            let shed = shed(p, f);
            if !p.slot[g * s..a].contains(&f)
                && (p.load[g] - p.multiplicity(g, f) as f64 * shed) / p.speed[g] < best
            {
                self.lighter.push(f);
            }
        }
        for k in 0..self.lighter.len() {
            let f = self.lighter[k];
            let shed_f = shed(p, f);
            for i in 0..self.replicated.len() {
                let x = self.replicated[i];
                if x == f {
                    continue;
                }
                // Every GPU of `x` but the one losing slot `q` gets heavier
                // (and lighter where it holds `f`); if that alone reaches
                // `best` on two GPUs, no `q` helps, and on one, `q` must be
                // there.
                let xu = x as usize;
                let rise = rise(p, x);
                let mut forced = None;
                let mut blocked = false;
                for j in self.starts[xu]..self.starts[xu + 1] {
                    let t = self.positions[j] / s;
                    let after = p.load[t] + rise - p.multiplicity(t, f) as f64 * shed_f;
                    if after / p.speed[t] >= best {
                        match forced {
                            None => forced = Some(t),
                            Some(u) if u != t => blocked = true,
                            Some(_) => {}
                        }
                    }
                }
                if blocked {
                    continue;
                }
                for j in self.starts[xu]..self.starts[xu + 1] {
                    let q = self.positions[j];
                    if forced.is_some_and(|t| t != q / s)
                        || p.holds(q / s, f)
                        || !keeps_duplicates_minimal(p, q, x)
                    {
                        continue;
                    }
                    let worst = self.max_after(p, q, x, f);
                    if worst < best {
                        best = worst;
                        chosen = Some((q, f));
                    }
                }
            }
        }
        for q in g * s..(g + 1) * s {
            let x = p.slot[q];
            if p.count[x as usize] < 2 || !keeps_duplicates_minimal(p, q, x) {
                continue;
            }
            // The other GPUs of `x` get heavier, less at most what one
            // expert of theirs (`f`) can shed.
            let xu = x as usize;
            let rise = rise(p, x);
            let blocked = (self.starts[xu]..self.starts[xu + 1])
                .map(|j| self.positions[j] / s)
                .any(|t| t != g && (p.load[t] + rise - self.max_shed[t]) / p.speed[t] >= best);
            if blocked {
                continue;
            }
            let without_x = p.load[g] - p.share[xu];
            for f in 0..p.count.len() as u32 {
                let fu = f as usize;
                // `g` trades a replica of `x` for one of `f`, at the least.
                let floor = (without_x + p.weight[fu] / f64::from(p.count[fu] + 1)) / p.speed[g];
                if floor >= best || p.holds(g, f) {
                    continue;
                }
                let worst = self.max_after(p, q, x, f);
                if worst < best {
                    best = worst;
                    chosen = Some((q, f));
                }
            }
        }
        let Some((q, f)) = chosen else {
            return false;
        };
        self.apply(p, q, f);
        true
    }

    /// Gives second copies of an expert on one GPU (which water-filling
    /// creates when an expert has more replicas than there are GPUs) to
    /// experts the GPU lacks, as long as the busiest GPU stays at or below
    /// `max(current maximum, ceiling)`: fewer duplicates, same imbalance.
    fn shed_duplicates(&mut self, p: &mut Packing, ceiling: f64) {
        let s = p.slots_per_gpu;
        // Every shed removes one duplicate.
        for _ in 0..p.slot.len() {
            let allowed = p.busiest().1.max(ceiling);
            self.index(p);
            let mut best = allowed;
            let mut chosen = None;
            for q in 0..p.slot.len() {
                let x = p.slot[q];
                if !p.slot[(q / s) * s..q].contains(&x) {
                    continue;
                }
                for f in (0..p.count.len() as u32).filter(|&f| !p.holds(q / s, f)) {
                    let worst = self.max_after(p, q, x, f);
                    if worst <= best {
                        best = worst;
                        chosen = Some((q, f));
                    }
                }
            }
            let Some((q, f)) = chosen else {
                return;
            };
            self.apply(p, q, f);
        }
    }

    /// Indexes the slots of every expert and orders GPUs by relative load.
    fn index(&mut self, p: &Packing) {
        let n = p.count.len();
        self.starts.clear();
        self.starts.resize(n + 1, 0);
        for &e in &p.slot {
            self.starts[e as usize + 1] += 1;
        }
        for e in 0..n {
            self.starts[e + 1] += self.starts[e];
        }
        self.positions.clear();
        self.positions.resize(p.slot.len(), 0);
        self.delta.clear();
        self.delta.resize(p.num_gpus(), 0.0);
        self.touched.clear();
        self.touched.resize(p.num_gpus(), false);
        self.cursor.clear();
        self.cursor.extend_from_slice(&self.starts[..n]);
        for (slot, &e) in p.slot.iter().enumerate() {
            self.positions[self.cursor[e as usize]] = slot;
            self.cursor[e as usize] += 1;
        }
        self.replicated.clear();
        self.replicated
            .extend((0..n as u32).filter(|&e| p.count[e as usize] >= 2));
        self.max_shed.clear();
        self.max_shed.extend((0..p.num_gpus()).map(|t| {
            p.gpu_slots(t)
                .iter()
                .map(|&e| p.multiplicity(t, e) as f64 * shed(p, e))
                .fold(0.0, f64::max)
        }));
        self.order.clear();
        self.order.extend(0..p.num_gpus());
        self.order
            .sort_unstable_by(|&a, &b| p.relative(b).total_cmp(&p.relative(a)));
    }

    /// The busiest relative load if slot `q` (holding `x`) switched to `f`.
    fn max_after(&mut self, p: &Packing, q: usize, x: u32, f: u32) -> f64 {
        let s = p.slots_per_gpu;
        let (x, f) = (x as usize, f as usize);
        let share_x = p.weight[x] / f64::from(p.count[x] - 1);
        let share_f = p.weight[f] / f64::from(p.count[f] + 1);
        for j in self.starts[x]..self.starts[x + 1] {
            let r = self.positions[j];
            let change = if r == q {
                share_f - p.share[x]
            } else {
                share_x - p.share[x]
            };
            self.touch(r / s, change);
        }
        for j in self.starts[f]..self.starts[f + 1] {
            self.touch(self.positions[j] / s, share_f - p.share[f]);
        }
        let mut worst = f64::NEG_INFINITY;
        for &t in &self.touched_list {
            worst = worst.max((p.load[t] + self.delta[t]) / p.speed[t]);
        }
        if let Some(&t) = self.order.iter().find(|&&t| !self.touched[t]) {
            worst = worst.max(p.relative(t));
        }
        for &t in &self.touched_list {
            self.touched[t] = false;
            self.delta[t] = 0.0;
        }
        self.touched_list.clear();
        worst
    }

    fn touch(&mut self, gpu: usize, change: f64) {
        if !self.touched[gpu] {
            self.touched[gpu] = true;
            self.touched_list.push(gpu);
        }
        self.delta[gpu] += change;
    }

    /// Gives slot `q` to expert `f` and updates counts, shares and loads.
    fn apply(&mut self, p: &mut Packing, q: usize, f: u32) {
        let s = p.slots_per_gpu;
        let x = p.slot[q] as usize;
        let f = f as usize;
        p.slot[q] = f as u32;
        p.count[x] -= 1;
        p.count[f] += 1;
        p.share[x] = p.weight[x] / f64::from(p.count[x]);
        p.share[f] = p.weight[f] / f64::from(p.count[f]);
        for j in self.starts[x]..self.starts[x + 1] {
            p.refresh(self.positions[j] / s);
        }
        for j in self.starts[f]..self.starts[f + 1] {
            p.refresh(self.positions[j] / s);
        }
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

    #[test]
    fn swaps_fix_a_bad_lpt() {
        // {5, 4, 3} / {2, 2, 2} by hand; swaps reach {5, 2, 2} / {4, 3, 2}.
        let mut p = packed(&[5.0, 4.0, 3.0, 2.0, 2.0, 2.0], &[1; 6], &[1.0, 1.0], 3);
        p.slot = vec![0, 1, 2, 3, 4, 5];
        p.refresh(0);
        p.refresh(1);
        let mut search = Search::default();
        improve(&mut p, 0.0, &mut search);
        assert_eq!(p.busiest().1, 9.0);
    }

    #[test]
    fn count_move_lowers_the_maximum() {
        // Three GPUs x 1 slot, loads 9 and 3, counts (1, 2): GPU loads
        // 9, 1.5, 1.5. Moving a replica of expert 1 to expert 0 gives
        // 4.5, 4.5, 3.
        let mut p = packed(&[9.0, 3.0], &[1, 2], &[1.0, 1.0, 1.0], 1);
        let mut search = Search::default();
        improve(&mut p, 0.0, &mut search);
        assert_eq!(p.count, vec![2, 1]);
        assert_eq!(p.busiest().1, 4.5);
    }
}
