//! Closing what the branch and bound leaves open with the exact MILP.

use std::time::{Duration, Instant};

use super::state::{ComponentOutcome, Search};
use crate::routing::basis::{OFF, ON};
use crate::routing::exact::{self, Verdict};

impl Search<'_> {
    /// Closes the gap the search left on the scoped component with the
    /// exact MILP, within `time`. The budget-free bound is tried first, as
    /// a pure feasibility question (on the sample data it is the optimum
    /// every time); once that is refuted, each probe asks for a strictly
    /// better activation. Activations found are routed exactly, not
    /// trusted; it stops when the incumbent is proven or time runs out.
    pub(super) fn settle(&mut self, root: &[u8], component: &mut ComponentOutcome, time: Duration) {
        let deadline = Instant::now() + time;
        let usable: Vec<bool> = root.iter().map(|&s| s != OFF).collect();
        let forced: Vec<bool> = root.iter().map(|&s| s == ON).collect();
        let mut at_bound = true;
        while component.lower_bound < component.value {
            let problem = exact::Component {
                graph: self.graph,
                tokens: &self.scoped_tokens,
                usable: &usable,
                forced: &forced,
                budget: self.budget,
            };
            let floor = component.lower_bound;
            let target = match at_bound {
                true => floor,
                false => match problem.below(component.value) {
                    Some(t) => t,
                    None => return,
                },
            };
            let mut left = deadline.saturating_duration_since(Instant::now());
            if at_bound {
                // Keep time for better activations in case the bound is weak.
                left /= 2;
            }
            match exact::probe(&problem, floor, target, left) {
                None => return,
                Some(Verdict::Infeasible) => {
                    component.lower_bound = floor.max(problem.above(target));
                    at_bound = false;
                }
                Some(Verdict::Bounded(bound)) => {
                    component.lower_bound = floor.max(bound);
                    if !at_bound {
                        return;
                    }
                    at_bound = false;
                }
                Some(Verdict::Found { active, bound }) => {
                    component.lower_bound = floor.max(bound);
                    if !self.admissible(&active) {
                        return;
                    }
                    self.solver.solve(
                        self.graph,
                        &self.scoped_tokens,
                        Some(&active),
                        &mut self.flow,
                    );
                    let value = self.solver.optimum(self.graph);
                    if value >= component.value {
                        // The model counts whole tokens, so only HiGHS's
                        // tolerances can get here.
                        return;
                    }
                    component.value = value;
                    component.active = active;
                }
            }
        }
    }
}
