//! Running a good_lp model on HiGHS with the controls the planner needs.
//!
//! good_lp states the models; the raw HiGHS model is taken over for what
//! good_lp does not expose: the MIP dual bound (the proof of a gap), a warm
//! start given as a full column vector, and quiet single-threaded solves
//! (parallelism comes from rayon across layers and nodes, and HiGHS must be
//! given the same thread count on every solve of a process).
//!
//! A solver's answer is never trusted as is: callers round and re-check every
//! returned solution and fall back to their heuristic when it fails.

use good_lp::solvers::highs::HighsProblem;
use highs::HighsModelStatus;

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
    model.make_quiet();
    let options_ok = model.try_set_option("threads", 1).is_ok()
        && model.try_set_option("time_limit", seconds).is_ok()
        && model.try_set_option("mip_rel_gap", rel_gap).is_ok()
        && model.try_set_option("random_seed", 0).is_ok();
    if !options_ok {
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
    if solved.primal_solution_status() != highs::HighsSolutionStatus::Feasible {
        return None;
    }
    let objective = solved.objective_value();
    let dual_bound = match solved.double_info_value(c"mip_dual_bound") {
        // LPs report no MIP bound: their optimum is the bound.
        Ok(b) if b.is_finite() => b,
        _ if proven => objective,
        _ => f64::NEG_INFINITY,
    };
    Some(Solved {
        values: solved.get_solution().columns().to_vec(),
        objective,
        dual_bound,
        proven,
    })
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
