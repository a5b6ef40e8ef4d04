//! One node's share of a layer, the unit every exact model and search works on.
//!
//! Under hierarchical placement a layer decomposes into independent nodes
//! once groups are assigned; under the global policy the whole cluster is one
//! "node". Experts are renumbered locally (`0..n`), GPUs too (`0..G`).

/// The packing problem of one node: `n` experts with loads, `G` GPUs with
/// relative speeds, `S` slots per GPU, all `G * S` slots to be filled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeProblem<'a> {
    /// Load of each local expert (finite, non-negative).
    pub weights: &'a [f64],
    /// Relative speed of each GPU (finite, positive).
    pub speeds: &'a [f64],
    pub slots_per_gpu: usize,
}

impl<'a> NodeProblem<'a> {
    pub fn num_experts(&self) -> usize {
        self.weights.len()
    }

    pub fn num_gpus(&self) -> usize {
        self.speeds.len()
    }

    pub fn num_slots(&self) -> usize {
        self.speeds.len() * self.slots_per_gpu
    }

    pub fn total_weight(&self) -> f64 {
        self.weights.iter().sum()
    }

    pub fn total_speed(&self) -> f64 {
        self.speeds.iter().sum()
    }

    /// The most replicas one expert may have: one per GPU, unless there are
    /// fewer experts than slots on a GPU, when same-GPU copies are forced.
    pub fn count_cap(&self) -> u32 {
        let g = self.num_gpus();
        let n = self.num_experts().max(1);
        let forced = self.num_slots().div_ceil(n).div_ceil(g);
        (g * forced.max(1)) as u32
    }

    /// Copies of an expert with `count` replicas one GPU may hold: one, unless
    /// the count exceeds the GPUs (possible only when copies are forced).
    pub fn per_gpu_limit(&self, count: u32) -> u32 {
        count.div_ceil(self.num_gpus() as u32).max(1)
    }

    /// The speed-weighted mean load: no placement can do better.
    pub fn mean_load(&self) -> f64 {
        self.total_weight() / self.total_speed()
    }
}

/// Replica counts minimising the heaviest replica, at most `cap` each:
/// water-filling, every extra slot to the expert with the heaviest replica
/// (optimal for the max by an exchange argument).
pub(crate) fn water_fill(weights: &[f64], slots: usize, cap: u32) -> Vec<u32> {
    let n = weights.len();
    let mut counts = vec![1u32; n];
    for _ in n..slots {
        let pick = (0..n).filter(|&e| counts[e] < cap).max_by(|&a, &b| {
            (weights[a] / f64::from(counts[a]))
                .total_cmp(&(weights[b] / f64::from(counts[b])))
                .then(b.cmp(&a))
        });
        match pick {
            Some(e) => counts[e] += 1,
            None => break,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_respects_cap_and_total() {
        let counts = water_fill(&[100.0, 1.0, 1.0], 7, 3);
        assert_eq!(counts, vec![3, 2, 2]);
        let counts = water_fill(&[9.0, 6.0, 5.0, 2.0], 9, 8);
        assert_eq!(counts.iter().sum::<u32>(), 9);
        let max = counts
            .iter()
            .zip([9.0, 6.0, 5.0, 2.0])
            .map(|(&c, w)| w / f64::from(c))
            .fold(0.0, f64::max);
        assert_eq!(max, 3.0);
    }

    #[test]
    fn cap_allows_copies_only_when_forced() {
        let speeds = [1.0; 4];
        let weights = [1.0; 8];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 3,
        };
        assert_eq!(p.count_cap(), 4);
        assert_eq!(p.per_gpu_limit(4), 1);
        let few = [1.0; 2];
        let p = NodeProblem {
            weights: &few,
            speeds: &speeds,
            slots_per_gpu: 3,
        };
        assert_eq!(p.count_cap(), 8);
        assert_eq!(p.per_gpu_limit(6), 2);
    }
}
