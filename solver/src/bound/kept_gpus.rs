//! Under even split, the migrations a node that keeps its groups needs for
//! its GPUs to reach a load `τ`.
//!
//! A GPU that receives nothing new keeps its old slots, and each of them
//! carries `w_e / r_e`; the new counts `r_e` only exceed the node's old
//! counts `c_e` by copies added somewhere, each a migration. So with `t`
//! added copies, GPU `g` sheds at most `Δ_g(t)` (the best `t` additions for
//! `g` alone: a separable concave allocation, which the greedy solves), and
//! every further token it sheds leaves with an old slot it gives up, which
//! costs a migration on `g` (the slot receives something new); the heaviest
//! slots go first, and what arrives is counted as weightless. Hence
//! `j_g(t)` = the fewest of its heaviest slots whose loads, with `Δ_g(t)`,
//! bring `g` to `τ`, and the node migrates at least
//! `min over t ≥ A of max(t, Σ_g j_g(t))` (`A`: the copies the replica
//! needs alone force). Weighted split can move load by shares instead, so
//! this holds for even split only.

/// One GPU of the node, as the previous plan left it.
#[derive(Debug, Clone)]
struct GpuProfile {
    speed: f64,
    /// Tokens on the GPU under the new load with the old counts.
    base: f64,
    /// `prefix[k]`: tokens of its `k` heaviest slots.
    prefix: Vec<f64>,
    /// `relief[t]`: the most tokens `t` added copies take off it.
    relief: Vec<f64>,
}

impl GpuProfile {
    /// Fewest of its heaviest slots to give up (with `t` added copies) for
    /// the GPU to carry at most `tau` after its speed.
    fn removals(&self, t: usize, tau: f64) -> usize {
        let limit = tau * self.speed * (1.0 + crate::tolerance::REACHED);
        let left = self.base - self.relief[t.min(self.relief.len() - 1)];
        self.prefix
            .iter()
            .position(|&p| left - p <= limit)
            .unwrap_or(self.prefix.len())
    }
}

/// The GPUs of a node that keeps its groups.
#[derive(Debug, Clone)]
pub(super) struct KeptGpus {
    gpus: Vec<GpuProfile>,
    /// Most migrations the node can make (its slot count).
    slots: usize,
}

impl KeptGpus {
    /// `slots`: the node's old slot table (global expert ids, GPU-major);
    /// `copies`: old copies per expert on the node.
    pub(super) fn new(
        row: &[f64],
        slots: &[u32],
        speeds: &[f64],
        slots_per_gpu: usize,
        copies: &[u32],
    ) -> Self {
        let horizon = slots.len();
        let gpus = slots
            .chunks(slots_per_gpu)
            .zip(speeds)
            .map(|(gpu, &speed)| {
                let mut loads: Vec<f64> = gpu
                    .iter()
                    .map(|&e| row[e as usize] / f64::from(copies[e as usize].max(1)))
                    .collect();
                loads.sort_by(|a, b| b.total_cmp(a));
                let mut prefix = Vec::with_capacity(loads.len() + 1);
                let mut sum = 0.0;
                prefix.push(0.0);
                for l in &loads {
                    sum += l;
                    prefix.push(sum);
                }
                // Experts on the GPU with their copies there.
                let mut held: Vec<(u32, u32)> = Vec::new();
                for &e in gpu {
                    match held.iter_mut().find(|(x, _)| *x == e) {
                        Some((_, q)) => *q += 1,
                        None => held.push((e, 1)),
                    }
                }
                let mut added = vec![0u32; held.len()];
                let gain = |i: usize, a: u32| {
                    let (e, q) = held[i];
                    let (w, c) = (row[e as usize], f64::from(copies[e as usize].max(1) + a));
                    f64::from(q) * w * (1.0 / c - 1.0 / (c + 1.0))
                };
                let mut relief = Vec::with_capacity(horizon + 1);
                relief.push(0.0);
                let mut shed = 0.0;
                for _ in 0..horizon {
                    let best = (0..held.len())
                        .max_by(|&a, &b| gain(a, added[a]).total_cmp(&gain(b, added[b])));
                    if let Some(i) = best {
                        shed += gain(i, added[i]);
                        added[i] += 1;
                    }
                    relief.push(shed);
                }
                GpuProfile {
                    speed,
                    base: sum,
                    prefix,
                    relief,
                }
            })
            .collect();
        KeptGpus {
            gpus,
            slots: horizon,
        }
    }

    /// Least migrations for every GPU to carry at most `tau`, given that
    /// the replica needs alone force `additions` new copies.
    pub(super) fn floor(&self, tau: f64, additions: usize) -> usize {
        let over: Vec<&GpuProfile> = self
            .gpus
            .iter()
            .filter(|g| g.removals(0, tau) > 0)
            .collect();
        let mut best = usize::MAX;
        for t in additions..=self.slots.max(additions) {
            let removals: usize = over.iter().map(|g| g.removals(t, tau)).sum();
            best = best.min(t.max(removals));
            // Past the crossing, more additions only cost more.
            if t >= removals {
                break;
            }
        }
        best
    }

    /// Loads in `(floor, top]` where [`Self::floor`] may step.
    pub(super) fn steps(&self, floor: f64, top: f64, out: &mut Vec<f64>) {
        for g in &self.gpus {
            if g.base / g.speed <= floor {
                continue;
            }
            for &relief in &g.relief {
                for &p in &g.prefix {
                    let v = (g.base - relief - p) / g.speed;
                    if v <= floor {
                        break;
                    }
                    if v <= top {
                        out.push(v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_gpu_needs_a_new_slot_or_copies() {
        // Two GPUs, two slots each: [0, 1] carries 10 + 2, [2, 3] 1 + 1.
        let row = [10.0, 2.0, 1.0, 1.0];
        let kept = KeptGpus::new(&row, &[0, 1, 2, 3], &[1.0, 1.0], 2, &[1, 1, 1, 1]);
        // Within the old loads: nothing to do.
        assert_eq!(kept.floor(12.0, 0), 0);
        // At 7: one added copy of expert 0 takes 5 off, or the 10 leaves
        // for something new: one migration either way.
        assert_eq!(kept.floor(7.0, 0), 1);
        // At 4, giving up the 10 for something new would do on GPU 0
        // alone (what arrives counts as weightless): still one.
        assert_eq!(kept.floor(4.0, 0), 1);
        // At 1.5 GPU 1 (1 + 1) is over too; one added copy could relieve
        // either GPU, and the bound lets it relieve both: one.
        assert_eq!(kept.floor(1.5, 0), 1);
        // Forced copies count: with 3 forced, at least 3.
        assert_eq!(kept.floor(12.0, 3), 3);
    }
}
