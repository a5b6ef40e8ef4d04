//! HiGHS, set up in one place for the whole crate.
//!
//! Every model is solved quiet, on one thread, with a fixed random seed and
//! a time limit ([`configure`]): parallelism comes from rayon across layers
//! and nodes, HiGHS's thread pool is global and refuses a model asking for
//! another thread count than the first did, and plans must not change from
//! run to run.
//!
//! The planner states its models with good_lp and solves them with
//! [`solve`], which takes the raw HiGHS model over for what good_lp does not
//! expose: the MIP dual bound (the proof of a gap) and a warm start given as
//! a full column vector. Routing builds raw `highs` models itself and only
//! takes [`configure`] and [`dual_bound`] from here.
//!
//! A solver's answer is never trusted as is: callers round and re-check every
//! returned solution and fall back to their heuristic when it fails.

use good_lp::solvers::highs::HighsProblem;
use highs::{HighsModelStatus, HighsSolutionStatus, Model, SolvedModel};

/// A solve shorter than this is not worth starting.
const MIN_SECONDS: f64 = 0.005;

/// Whether a model given `seconds` is worth building at all (building one
/// costs time HiGHS's own limit does not see).
pub(crate) fn worth_building(seconds: f64) -> bool {
    seconds >= MIN_SECONDS
}

/// What HiGHS returned for one model.
#[derive(Debug, Clone)]
pub(crate) struct Solved {
    /// Column values in variable-creation order.
    pub values: Vec<f64>,
    /// The objective of `values`.
    pub objective: f64,
    /// A proven lower bound on the optimum (minimisation).
    pub dual_bound: f64,
    /// True when HiGHS proved `values` optimal within the requested gap.
    pub proven: bool,
}

/// Solves `problem` (a minimisation) within `seconds`, starting from `warm`
/// (a value for every column) when given. `None` when there was no time,
/// HiGHS failed, or it found no feasible solution.
pub(crate) fn solve(
    problem: HighsProblem,
    warm: Option<&[f64]>,
    seconds: f64,
    rel_gap: f64,
) -> Option<Solved> {
    if !worth_building(seconds) {
        return None;
    }
    let mut model = problem.try_into_inner().ok()?;
    if !configure(&mut model, seconds, Some(rel_gap)) {
        return None;
    }
    if let Some(warm) = warm {
        // A rejected start only costs the solver its head start.
        let _ = model.try_set_solution(Some(warm), None, None, None);
    }
    let solved = model.try_solve().ok()?;
    let proven = match solved.status() {
        HighsModelStatus::Optimal => true,
        HighsModelStatus::ReachedTimeLimit
        | HighsModelStatus::ReachedIterationLimit
        | HighsModelStatus::ReachedSolutionLimit
        | HighsModelStatus::ObjectiveBound
        | HighsModelStatus::ObjectiveTarget => false,
        _ => return None,
    };
    if solved.primal_solution_status() != HighsSolutionStatus::Feasible {
        return None;
    }
    let objective = solved.objective_value();
    let dual_bound = match dual_bound(&solved) {
        Some(b) => b,
        // LPs report no MIP bound: their optimum is the bound.
        None if proven => objective,
        None => f64::NEG_INFINITY,
    };
    Some(Solved {
        values: solved.get_solution().columns().to_vec(),
        objective,
        dual_bound,
        proven,
    })
}

/// Makes `model` quiet, single-threaded and seeded, limited to `seconds`
/// (and to the relative MIP gap `rel_gap` when given); false when HiGHS
/// refuses an option, in which case the model must not be solved.
pub(crate) fn configure(model: &mut Model, seconds: f64, rel_gap: Option<f64>) -> bool {
    model.make_quiet();
    model.try_set_option("threads", 1).is_ok()
        && model.try_set_option("time_limit", seconds).is_ok()
        && rel_gap.is_none_or(|gap| model.try_set_option("mip_rel_gap", gap).is_ok())
        && model.try_set_option("random_seed", 0).is_ok()
}

/// The MIP dual bound HiGHS proved (a lower bound when minimising), if any.
pub(crate) fn dual_bound(solved: &SolvedModel) -> Option<f64> {
    solved
        .double_info_value(c"mip_dual_bound")
        .ok()
        .filter(|b| b.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use good_lp::{constraint, variables, SolverModel};

    #[test]
    fn solves_a_knapsack_and_reports_its_bound() {
        variables! { vars: 0 <= a (integer) <= 3; 0 <= b (integer) <= 3; }
        let problem = vars
            .minimise(-3 * a - 2 * b)
            .using(good_lp::highs)
            .with(constraint!(2 * a + 2 * b <= 7));
        let solved = solve(problem, Some(&[0.0, 0.0]), 5.0, 0.0).unwrap();
        assert!(solved.proven);
        assert!(
            (solved.objective + 9.0).abs() < 1e-6,
            "{}",
            solved.objective
        );
        assert!(solved.dual_bound <= solved.objective + 1e-6);
    }

    #[test]
    fn refuses_to_start_without_time() {
        variables! { vars: 0 <= a <= 1; }
        let problem = vars.minimise(a).using(good_lp::highs);
        assert!(solve(problem, None, 0.0, 0.0).is_none());
    }
}
