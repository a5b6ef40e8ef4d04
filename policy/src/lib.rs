//! # ballast-policy
//!
//! The planning policy of `ballast serve` as one pure function, so that the
//! service, a replay of historical load and a unit test all run the same
//! decision:
//!
//! 1. [`estimate`]: the load to plan for, an EWMA of the newest closed
//!    windows (each scaled to unit total);
//! 2. [`candidate`]: a migration-aware plan for that estimate, keeping load
//!    off excluded GPUs, scored against the plan in force;
//! 3. [`decide`]: publish or skip — the gain must pay for the moves and stay
//!    armed through a Schmitt trigger before a plan is published.
//!
//! [`evaluate`] does all three. It reads no database and no clock (besides
//! timing its own solve), so what it returns depends only on its inputs.
//!
//! ```
//! use ballast_policy::{evaluate, Settings, Situation};
//! use ballast_solver::{LoadMatrix, Topology};
//!
//! let topology = Topology::from_json(
//!     r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
//!         "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
//! )?;
//! let window = LoadMatrix::new(vec![vec![9.0, 1.0, 1.0, 1.0]], &topology)?;
//! let decision = evaluate(
//!     &Settings::default(),
//!     &Situation::fresh(&topology, std::slice::from_ref(&window)),
//! )?;
//! assert!(decision.verdict.publish); // the first plan is always published
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod candidate;
pub mod decide;
pub mod estimate;

use std::time::Duration;

use ballast_solver::planner::{PlanError, DEFAULT_BALANCE_TOLERANCE};
use ballast_solver::{LoadMatrix, Plan, Policy, Split, Topology};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use candidate::{Candidate, CandidateError, CandidateInput};
pub use decide::{Evidence, Reason, Thresholds, Verdict};

/// Everything an operator tunes about planning (`ballast serve`'s flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub policy: Policy,
    pub split: Split,
    /// A migration-aware candidate may be this much (relative) above a
    /// fresh plan's model imbalance.
    pub balance_tolerance: f64,
    /// Wall-time budget of one candidate's solve (`None`: the solver's own).
    pub solve_time_limit: Option<Duration>,
    /// Weight of the newest window in the estimate, in (0, 1].
    pub ewma_alpha: f64,
    pub thresholds: Thresholds,
}

impl Default for Settings {
    /// `ballast serve`'s defaults, chosen by replay (docs/replay.md): plan
    /// from the newest window and publish as soon as the gain pays; a
    /// smoother estimate or a second confirming cycle only lagged the load.
    fn default() -> Self {
        Settings {
            policy: Policy::Optimal,
            split: Split::Even,
            balance_tolerance: DEFAULT_BALANCE_TOLERANCE,
            solve_time_limit: None,
            ewma_alpha: 1.0,
            thresholds: Thresholds {
                threshold: 0.01,
                hysteresis: 0.005,
                confirm_cycles: 1,
                move_cost: 0.05,
            },
        }
    }
}

impl Settings {
    /// How many of the newest windows the estimate reads.
    pub fn windows_needed(&self) -> usize {
        estimate::windows_needed(self.ewma_alpha)
    }
}

/// What the policy decides about, gathered by its caller.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub topology: &'a Topology,
    /// Closed load windows, oldest first; only the newest
    /// [`Settings::windows_needed`] are read.
    pub windows: &'a [LoadMatrix],
    /// The plan in force (`None` before the first plan).
    pub current: Option<&'a Plan>,
    /// GPUs that must carry no load, ascending.
    pub excluded: &'a [usize],
    /// Cycles the trigger has been armed before this one.
    pub streak: u32,
    /// An operator asked for a plan now: publish regardless of the gain.
    pub forced: bool,
}

impl<'a> Situation<'a> {
    /// No plan in force yet, nothing excluded, trigger unarmed.
    pub fn fresh(topology: &'a Topology, windows: &'a [LoadMatrix]) -> Self {
        Situation {
            topology,
            windows,
            current: None,
            excluded: &[],
            streak: 0,
            forced: false,
        }
    }
}

/// The figures behind a decision (reported with it and stored in the plan's
/// stats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Model imbalance of the plan in force on the estimate.
    pub current_imbalance: Option<f64>,
    /// Model imbalance of the candidate on the estimate.
    pub predicted_imbalance: f64,
    /// Experts the candidate loads that the plan in force does not hold.
    pub migrations: Option<usize>,
    /// `migrations × expert_bytes`, when the topology knows `expert_bytes`.
    pub migrated_bytes: Option<u64>,
    pub net_gain: Option<f64>,
    pub solve_seconds: f64,
    /// Windows the estimate was made of.
    pub load_windows: usize,
    pub excluded_gpus: Vec<usize>,
    /// Why the candidate was planned with another policy than the one
    /// configured (`optimal-covisit` without co-visit counts falls back to
    /// `optimal`); absent when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_fallback: Option<String>,
}

/// What [`evaluate`] concluded.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub candidate: Candidate,
    pub figures: Figures,
    /// One line for people: why this verdict.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PolicyError {
    #[error("no closed load window yet: send telemetry and wait for its window to close")]
    NoTelemetry,
    #[error(transparent)]
    Candidate(#[from] CandidateError),
}

/// Estimates the load, computes a candidate and decides whether to publish
/// it. Runs the solver, so call it off any async runtime.
pub fn evaluate(settings: &Settings, situation: &Situation) -> Result<Decision, PolicyError> {
    let topology = situation.topology;
    let newest = &situation.windows[situation
        .windows
        .len()
        .saturating_sub(settings.windows_needed())..];
    let estimate =
        estimate::ewma(newest, settings.ewma_alpha, topology).ok_or(PolicyError::NoTelemetry)?;
    let mut fallback = None;
    let mut policy = settings.policy;
    if policy == Policy::OptimalCovisit && !estimate.has_covisit() {
        fallback = Some(format!(
            "{} needs co-visit counts and the estimate has none (a window of the {} behind it \
             came from workers that did not all send `covisit`): planned with {}",
            Policy::OptimalCovisit.name(),
            newest.len(),
            Policy::Optimal.name()
        ));
        policy = Policy::Optimal;
    }
    let input = CandidateInput {
        topology: topology.clone(),
        estimate,
        current: situation.current.cloned(),
        policy,
        split: settings.split,
        balance_tolerance: settings.balance_tolerance,
        time_limit: settings.solve_time_limit,
        excluded: situation.excluded.to_vec(),
    };
    let candidate = match candidate::build(input.clone()) {
        // A planner this build cannot run for this load: plan node-local
        // rather than not at all, and say so.
        Err(CandidateError::Solve(PlanError::Unsupported(why)))
            if policy == Policy::OptimalCovisit =>
        {
            fallback = Some(format!(
                "{} refused this load ({why}): planned with {}",
                Policy::OptimalCovisit.name(),
                Policy::Optimal.name()
            ));
            candidate::build(CandidateInput {
                policy: Policy::Optimal,
                ..input
            })?
        }
        other => other?,
    };
    let verdict = decide::decide(
        &Evidence {
            current: candidate.current,
            candidate: candidate.predicted,
            migrations: candidate.migrations.unwrap_or(0),
            total_slots: topology.num_layers() * topology.num_slots(),
            forced: situation.forced,
            must_replace: candidate.current_uses_excluded,
            streak: situation.streak,
        },
        &settings.thresholds,
    );
    let figures = Figures {
        current_imbalance: candidate.current,
        predicted_imbalance: candidate.predicted,
        migrations: candidate.migrations,
        migrated_bytes: candidate
            .migrations
            .zip(topology.expert_bytes())
            .map(|(m, b)| m as u64 * b),
        net_gain: verdict.net_gain,
        solve_seconds: candidate.solve_seconds,
        load_windows: newest.len(),
        excluded_gpus: situation.excluded.to_vec(),
        policy_fallback: fallback,
    };
    let mut detail = explain(&verdict, &figures, &settings.thresholds);
    if let Some(why) = &figures.policy_fallback {
        detail = format!("{detail}; {why}");
    }
    Ok(Decision {
        verdict,
        candidate,
        figures,
        detail,
    })
}

fn explain(v: &Verdict, f: &Figures, t: &Thresholds) -> String {
    match (v.reason, v.net_gain) {
        (Reason::Initial, _) => "first plan of this lineage".into(),
        (Reason::Forced, _) => "rebalance requested by an operator".into(),
        (Reason::ExcludedWorkers, _) => format!("the current plan routes load to down GPUs {:?}", f.excluded_gpus),
        (reason, Some(net)) => format!(
            "net gain {net:.4} (imbalance {:.4} -> {:.4}, {} migrations) vs threshold {} (hysteresis {}); armed {}/{} cycles; {}",
            f.current_imbalance.unwrap_or(f64::NAN),
            f.predicted_imbalance,
            f.migrations.unwrap_or(0),
            t.threshold,
            t.hysteresis,
            v.streak.max(u32::from(v.publish) * t.confirm_cycles),
            t.confirm_cycles,
            reason.as_str(),
        ),
        (reason, None) => reason.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node, so that where the hot expert's replicas go is what matters.
    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 4, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    fn window(t: &Topology, hot: usize) -> LoadMatrix {
        let mut rows = vec![vec![1.0; 8]; 2];
        for row in &mut rows {
            row[hot] = 12.0;
        }
        LoadMatrix::new(rows, t).unwrap()
    }

    /// The defaults, with a trigger that must hold for two cycles: the
    /// confirmation is part of what these tests exercise.
    /// Two confirming cycles (the default is one), so that the tests see
    /// hysteresis at work.
    fn settings() -> Settings {
        let defaults = Settings::default();
        Settings {
            thresholds: Thresholds {
                confirm_cycles: 2,
                ..defaults.thresholds
            },
            ..defaults
        }
    }

    /// Runs the policy over `windows` the way the service's loop does:
    /// each cycle sees the windows so far, the plan in force and the streak.
    fn run(t: &Topology, windows: &[LoadMatrix]) -> Vec<Decision> {
        let mut current: Option<Plan> = None;
        let mut streak = 0;
        let mut decisions = Vec::new();
        for i in 1..=windows.len() {
            let situation = Situation {
                current: current.as_ref(),
                streak,
                ..Situation::fresh(t, &windows[..i])
            };
            let d = evaluate(&settings(), &situation).unwrap();
            streak = d.verdict.streak;
            if d.verdict.publish {
                current = Some(d.candidate.plan.clone());
            }
            decisions.push(d);
        }
        decisions
    }

    #[test]
    fn publishes_first_then_waits_for_a_confirmed_gain() {
        let t = topology();
        let mut windows = vec![window(&t, 0); 3];
        // The hot expert moves: the plan in force no longer fits.
        windows.extend(vec![window(&t, 5); 6]);
        let reasons: Vec<Reason> = run(&t, &windows).iter().map(|d| d.verdict.reason).collect();
        assert_eq!(reasons[0], Reason::Initial);
        assert!(reasons[1..3].iter().all(|r| *r == Reason::BelowThreshold));
        let published = reasons.iter().skip(3).position(|r| *r == Reason::GainPays);
        let confirming = reasons
            .iter()
            .skip(3)
            .position(|r| *r == Reason::Confirming);
        assert!(
            confirming.is_some() && published > confirming,
            "{reasons:?}"
        );
    }

    #[test]
    fn reads_only_the_newest_windows_it_needs() {
        let t = topology();
        let s = settings();
        let mut windows = vec![window(&t, 0); 50];
        windows.push(window(&t, 3));
        let d = evaluate(&s, &Situation::fresh(&t, &windows)).unwrap();
        assert_eq!(d.figures.load_windows, s.windows_needed());
    }

    #[test]
    fn no_load_is_no_telemetry() {
        let t = topology();
        let empty = LoadMatrix::new(vec![vec![0.0; 8]; 2], &t).unwrap();
        let err = evaluate(&settings(), &Situation::fresh(&t, &[empty])).unwrap_err();
        assert_eq!(err, PolicyError::NoTelemetry);
        let err = evaluate(&settings(), &Situation::fresh(&t, &[])).unwrap_err();
        assert_eq!(err, PolicyError::NoTelemetry);
    }

    #[test]
    fn forced_publishes_and_excluded_gpus_replace_the_plan() {
        let t = topology();
        let windows = [window(&t, 0)];
        let first = evaluate(&settings(), &Situation::fresh(&t, &windows)).unwrap();
        let plan = first.candidate.plan;
        let forced = Situation {
            current: Some(&plan),
            forced: true,
            ..Situation::fresh(&t, &windows)
        };
        assert_eq!(
            evaluate(&settings(), &forced).unwrap().verdict.reason,
            Reason::Forced
        );
        let excluding = Situation {
            current: Some(&plan),
            excluded: &[1],
            ..Situation::fresh(&t, &windows)
        };
        let d = evaluate(&settings(), &excluding).unwrap();
        assert_eq!(d.verdict.reason, Reason::ExcludedWorkers);
        assert_eq!(d.figures.excluded_gpus, vec![1]);
    }
}
