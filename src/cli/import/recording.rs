//! An engine's expert statistics once read: token→expert counts per step
//! (an SGLang forward pass, a TensorRT-LLM iteration), MoE layers only, in
//! step order. Both the summed load and the windows of a trace come from it.

use ballast_solver::{LoadMatrix, ParseError, Topology};

/// `steps × L × E` counts, checked non-negative and shaped for a topology
/// by the readers.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    num_layers: usize,
    num_experts: usize,
    /// One `L × E` block per step, row-major.
    steps: Vec<Vec<u64>>,
}

impl Recording {
    pub fn new(topology: &Topology) -> Self {
        Recording {
            num_layers: topology.num_layers(),
            num_experts: topology.num_logical_experts(),
            steps: Vec::new(),
        }
    }

    /// Appends a step of zeros and returns it to be filled, `[layer * E + expert]`.
    pub fn push_step(&mut self) -> &mut [u64] {
        self.steps.push(vec![0; self.num_layers * self.num_experts]);
        let last = self.steps.len() - 1;
        &mut self.steps[last]
    }

    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Steps that routed no token: unfilled rows of SGLang's circular
    /// buffer, idle passes. They carry no load, so sums ignore them and
    /// traces skip them.
    pub fn empty_steps(&self) -> usize {
        self.steps.iter().filter(|s| is_empty(s)).count()
    }

    /// Every count summed: token→expert assignments over all layers.
    pub fn total(&self) -> u64 {
        self.steps.iter().flatten().sum()
    }

    /// The counts summed over all steps, as `L` rows of `E`.
    pub fn summed(&self) -> Vec<Vec<u64>> {
        self.sum_of(self.steps.iter())
    }

    /// Windows of `steps_per_window` consecutive non-empty steps (the last
    /// may be shorter), each summed into `L` rows of `E`.
    pub fn windows(&self, steps_per_window: usize) -> Vec<Vec<Vec<u64>>> {
        let filled: Vec<&Vec<u64>> = self.steps.iter().filter(|s| !is_empty(s)).collect();
        filled
            .chunks(steps_per_window.max(1))
            .map(|chunk| self.sum_of(chunk.iter().copied()))
            .collect()
    }

    fn sum_of<'a>(&self, steps: impl Iterator<Item = &'a Vec<u64>>) -> Vec<Vec<u64>> {
        let mut flat = vec![0u64; self.num_layers * self.num_experts];
        for step in steps {
            for (acc, count) in flat.iter_mut().zip(step) {
                *acc += count;
            }
        }
        flat.chunks(self.num_experts.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }
}

fn is_empty(step: &[u64]) -> bool {
    step.iter().all(|&c| c == 0)
}

/// Counts as a load matrix of `topology` (the shapes already agree).
pub fn to_load(rows: &[Vec<u64>], topology: &Topology) -> Result<LoadMatrix, ParseError> {
    let rows = rows
        .iter()
        .map(|row| row.iter().map(|&c| c as f64).collect())
        .collect();
    LoadMatrix::new(rows, topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 2, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 1, "slots_per_gpu": 2}"#,
        )
        .unwrap()
    }

    fn recording(steps: &[[u64; 4]]) -> Recording {
        let mut r = Recording::new(&topology());
        for step in steps {
            r.push_step().copy_from_slice(step);
        }
        r
    }

    #[test]
    fn sums_every_step_into_layer_rows() {
        let r = recording(&[[1, 2, 3, 4], [0, 0, 0, 0], [10, 0, 0, 5]]);
        assert_eq!(r.summed(), vec![vec![11, 2], vec![3, 9]]);
        assert_eq!(r.total(), 25);
        assert_eq!(r.empty_steps(), 1);
    }

    #[test]
    fn windows_skip_empty_steps_and_keep_a_short_last_one() {
        let r = recording(&[[1, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0]]);
        assert_eq!(
            r.windows(2),
            vec![vec![vec![1, 2], vec![0, 0]], vec![vec![0, 0], vec![3, 0]]]
        );
        assert_eq!(r.windows(5).len(), 1);
    }
}
