//! A layer's independent subproblems ("units"): where they are in the
//! layer ([`Layout`]), and one unit's experts renumbered locally ([`Unit`]).
//! Fresh plans and re-plans both work unit by unit.

use std::ops::Range;

use super::problem::NodeProblem;
use crate::planner::policy::Placement;
use crate::topology::Topology;

/// Where the independent subproblems ("units") of a layer are: one per node
/// under hierarchical placement, the whole cluster under global placement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout<'t> {
    pub topology: &'t Topology,
    pub placement: Placement,
}

impl<'t> Layout<'t> {
    pub fn units(&self) -> usize {
        match self.placement {
            Placement::Hierarchical | Placement::Covisit => self.topology.num_nodes(),
            Placement::Global => 1,
        }
    }

    pub fn gpus_per_unit(&self) -> usize {
        self.topology.num_gpus() / self.units()
    }

    pub fn slots(&self, unit: usize) -> Range<usize> {
        let per = self.topology.num_slots() / self.units();
        unit * per..(unit + 1) * per
    }

    pub fn speeds(&self, unit: usize) -> &'t [f64] {
        let per = self.gpus_per_unit();
        &self.topology.gpu_speed()[unit * per..(unit + 1) * per]
    }
}

/// The experts a unit hosts (ascending global ids) and its local problem.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub experts: Vec<u32>,
    pub weights: Vec<f64>,
}

impl Unit {
    /// The unit hosting exactly `experts` (ascending), with loads from `row`.
    pub fn new(experts: Vec<u32>, row: &[f64]) -> Self {
        let weights = experts.iter().map(|&e| row[e as usize]).collect();
        Unit { experts, weights }
    }

    /// The unit whose slots currently hold `slots`.
    pub fn of_slots(slots: &[u32], row: &[f64]) -> Self {
        let mut experts = slots.to_vec();
        experts.sort_unstable();
        experts.dedup();
        Self::new(experts, row)
    }

    pub fn problem<'a>(&'a self, speeds: &'a [f64], slots_per_gpu: usize) -> NodeProblem<'a> {
        NodeProblem {
            weights: &self.weights,
            speeds,
            slots_per_gpu,
        }
    }

    /// Local index of global expert `e`, if the unit hosts it.
    pub fn local(&self, e: u32) -> Option<u32> {
        self.experts.binary_search(&e).ok().map(|i| i as u32)
    }

    /// `slots` by local index (the unit's own slots hold only its experts;
    /// any other expert reads as local 0).
    pub fn local_slots(&self, slots: &[u32]) -> Vec<u32> {
        slots.iter().map(|&e| self.local(e).unwrap_or(0)).collect()
    }

    pub fn global(&self, local: u32) -> u32 {
        self.experts[local as usize]
    }
}
