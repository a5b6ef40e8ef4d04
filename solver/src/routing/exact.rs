//! The last resort of the budgeted search: a MILP on HiGHS that asks
//! whether some activation routes with its largest load at most `target`.
//!
//! ## The model
//! For one component, binary `y[e]` (edge `e` active) and integer
//! `x[e] >= 0` (its tokens), and the largest load `T`:
//!
//! - `sum_{e of d} x[e] = tokens[d]` for every demand with tokens;
//! - `sum_{e on g} x[e] <= speed[g] * T` and `sum_{e on g} y[e] <= budget`;
//! - `x[e] <= min(tokens[d], cap[g]) * y[e]`;
//! - `floor <= T <= target`, minimize `T`.
//!
//! `cap[g]` is what GPU `g` holds at `target`: a target below the
//! incumbent keeps the big-M tight and cuts the incumbent off (so a warm
//! start would add nothing), and "nothing beats the incumbent" becomes
//! "infeasible", the status HiGHS proves fastest. `floor`, a known lower
//! bound, lets HiGHS stop at the first activation that reaches it; a probe
//! with `target = floor` is a pure feasibility question, which is how the
//! caller tries the budget-free bound first.
//!
//! Tokens are whole (`x` integer): with real-valued tokens each GPU could
//! use the fraction of a token its whole-token capacity rounds away, so an
//! activation the relaxed model accepts at a target may not route at it,
//! and the search could neither use it nor refute the target (a speed-3 and
//! a speed-2 GPU lose 1/3 and 1/2 a token at 22⅓). Any activation HiGHS
//! returns is still re-checked and routed by the exact router, never
//! trusted.

use std::time::Duration;

use highs::{HighsModelStatus, HighsSolutionStatus, RowProblem, Sense};

use super::graph::LayerGraph;
use super::threshold::{load, Integral, NumberModel};
use crate::milp;
use crate::tolerance;

/// A solve shorter than this cannot even load the model.
const MIN_TIME: Duration = Duration::from_millis(2);

/// One component's problem, as the search sees it.
pub(crate) struct Component<'a> {
    pub(crate) graph: &'a LayerGraph,
    /// Tokens per demand; zero outside the component.
    pub(crate) tokens: &'a [u64],
    /// Edges that may be active (not switched off at the root).
    pub(crate) usable: &'a [bool],
    /// Edges that must be active (forced on at the root).
    pub(crate) forced: &'a [bool],
    pub(crate) budget: usize,
}

impl Component<'_> {
    /// GPUs with a usable replica of a demand with tokens.
    fn gpus(&self) -> Vec<usize> {
        let graph = self.graph;
        let mut present = vec![false; graph.num_gpus()];
        for d in (0..graph.num_demands()).filter(|&d| self.tokens[d] > 0) {
            for e in graph.edges(d).filter(|&e| self.usable[e]) {
                present[graph.edge_gpu[e] as usize] = true;
            }
        }
        (0..graph.num_gpus()).filter(|&g| present[g]).collect()
    }

    /// The largest load a GPU of the component reaches with whole tokens
    /// strictly below `value`; `None` when there is none above zero.
    pub(crate) fn below(&self, value: f64) -> Option<f64> {
        self.gpus()
            .into_iter()
            .map(|g| {
                let speed = self.graph.speeds[g];
                let mut k = Integral::capacity(value, speed);
                while k > 0 && load(k, speed) >= value {
                    k -= 1;
                }
                load(k, speed)
            })
            .filter(|&v| v > 0.0)
            .max_by(f64::total_cmp)
    }

    /// The smallest load a GPU of the component reaches with whole tokens
    /// at or above `bound`: the optimum is such a load.
    fn at_least(&self, bound: f64) -> f64 {
        self.gpus()
            .into_iter()
            .map(|g| {
                let speed = self.graph.speeds[g];
                let mut k = Integral::capacity(bound, speed);
                while load(k, speed) < bound {
                    k += 1;
                }
                load(k, speed)
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// The smallest load a GPU reaches with whole tokens strictly above
    /// `value`.
    pub(crate) fn above(&self, value: f64) -> f64 {
        self.gpus()
            .into_iter()
            .map(|g| {
                let speed = self.graph.speeds[g];
                load(Integral::capacity(value, speed) + 1, speed)
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// What a probe established.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// No activation routes with a largest load at most the target.
    Infeasible,
    /// An activation (one flag per edge) the model routes within the
    /// target (the caller routes it exactly to find out), and a lower bound
    /// on every activation.
    Found { active: Vec<bool>, bound: f64 },
    /// Out of time: a lower bound on every activation.
    Bounded(f64),
}

/// Asks HiGHS, within `time`, for an activation of `component` whose
/// largest load lies in `[floor, target]` (both achievable loads, `floor`
/// a lower bound). `None` when there is no time or HiGHS fails.
pub(crate) fn probe(
    component: &Component<'_>,
    floor: f64,
    target: f64,
    time: Duration,
) -> Option<Verdict> {
    if time < MIN_TIME || target < floor {
        return None;
    }
    let graph = component.graph;
    let gpus = component.gpus();
    let mut problem = RowProblem::default();
    let t = problem.add_column(1.0, floor..=target);
    // Columns per edge in the model, (x, y), and per GPU.
    let mut columns = vec![None; graph.num_edges()];
    let mut on_gpu = vec![Vec::new(); graph.num_gpus()];
    for d in (0..graph.num_demands()).filter(|&d| component.tokens[d] > 0) {
        let tokens = component.tokens[d] as f64;
        let mut row = Vec::new();
        for e in graph.edges(d).filter(|&e| component.usable[e]) {
            let g = graph.edge_gpu[e] as usize;
            let most = tokens.min(Integral::capacity(target, graph.speeds[g]) as f64);
            let x = problem.add_integer_column(0.0, 0.0..=most);
            let low = if component.forced[e] { 1.0 } else { 0.0 };
            let y = problem.add_integer_column(0.0, low..=1.0);
            problem.add_row(..=0.0, [(x, 1.0), (y, -most)]);
            columns[e] = Some(y);
            on_gpu[g].push((x, y));
            row.push((x, 1.0));
        }
        problem.add_row(tokens..=tokens, row);
    }
    for &g in &gpus {
        let loads = on_gpu[g].iter().map(|&(x, _)| (x, 1.0));
        problem.add_row(..=0.0, loads.chain([(t, -graph.speeds[g])]));
        let kinds = on_gpu[g].iter().map(|&(_, y)| (y, 1.0));
        problem.add_row(..=component.budget as f64, kinds);
    }

    let mut model = problem.try_optimise(Sense::Minimise).ok()?;
    if !milp::configure(&mut model, time.as_secs_f64(), None) {
        return None;
    }
    let solved = model.try_solve().ok()?;
    match solved.status() {
        // `T` is bounded, so "unbounded or infeasible" is infeasible.
        HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible => {
            return Some(Verdict::Infeasible)
        }
        HighsModelStatus::Optimal | HighsModelStatus::ReachedTimeLimit => {}
        _ => return None,
    }
    // HiGHS's bound covers the activations within the target; the others
    // are above it.
    let bound = match milp::dual_bound(&solved) {
        Some(b) => {
            let b = b * (1.0 - tolerance::HIGHS_BOUND);
            component
                .at_least(b.max(floor))
                .min(component.above(target))
        }
        None => floor,
    };
    if solved.primal_solution_status() != HighsSolutionStatus::Feasible {
        return Some(Verdict::Bounded(bound));
    }
    let values = solved.get_solution().columns().to_vec();
    let active = columns
        .iter()
        .map(|c| c.is_some_and(|y| values.get(y.index()).is_some_and(|&v| v > 0.5)))
        .collect();
    Some(Verdict::Found { active, bound })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::graph::Locality;
    use crate::Topology;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn probes_answer_feasibility_at_a_target() {
        // Two GPUs each hosting experts 0, 1 and 2, 4 tokens each.
        let t = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 3, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let graph = LayerGraph::new(&t, &[0, 1, 2, 0, 1, 2], Locality::Any);
        let usable = vec![true; graph.num_edges()];
        let forced = vec![false; graph.num_edges()];
        let component = |budget| Component {
            graph: &graph,
            tokens: &[4, 4, 4],
            usable: &usable,
            forced: &forced,
            budget,
        };
        assert_eq!(component(2).below(6.0), Some(5.0));
        assert_eq!(component(2).above(6.0), 7.0);
        // Two active each: one expert splits, 6 tokens per GPU.
        match probe(&component(2), 6.0, 6.0, SECOND) {
            Some(Verdict::Found { active, bound }) => {
                assert_eq!(bound, 6.0);
                for g in 0..2 {
                    let on_g = (0..graph.num_edges())
                        .filter(|&e| active[e] && graph.edge_gpu[e] as usize == g)
                        .count();
                    assert!(on_g <= 2);
                }
            }
            other => panic!("{other:?}"),
        }
        // 12 tokens on two GPUs cannot stay at 5.
        assert_eq!(
            probe(&component(2), 5.0, 5.0, SECOND),
            Some(Verdict::Infeasible)
        );
        // One active each cannot cover three experts.
        assert_eq!(
            probe(&component(1), 6.0, 8.0, SECOND),
            Some(Verdict::Infeasible)
        );
        assert_eq!(probe(&component(2), 6.0, 6.0, Duration::ZERO), None);
    }
}
