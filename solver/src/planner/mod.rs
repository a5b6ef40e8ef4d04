//! Planning entry point: policy choice, options, and the figures a plan carries.
//!
//! [`solve`] is what the CLI and the service call; the algorithms live in the
//! submodules (one per policy family): `greedy` (fast, no proofs) and
//! `optimal` (the default: searches and exact models on decomposed
//! subproblems, proven gaps, migration-aware re-planning).

mod covisit;
mod greedy;
mod optimal;
mod outage;
mod policy;
mod stats;

use std::time::{Duration, Instant};

use rayon::prelude::*;
use thiserror::Error;

use crate::bound::LiveGpus;
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

use greedy::{Greedy, LayerPlan, Scratch};

pub use optimal::MigrationPricing;
pub use policy::{Placement, Policy, Split, UnknownName};
pub use stats::{LayerStats, LayerStatus, PlanStats, PriceStats, ReplanStats, RoutedStats};

/// Balance a re-plan may give up, by default, to move fewer experts.
pub const DEFAULT_BALANCE_TOLERANCE: f64 = 0.005;

/// Time an optimal run may take when the caller sets no limit.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Everything a caller can tune about one planning run.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub policy: Policy,
    pub split: Split,
    /// The plan in force; makes the optimal planner migration-aware.
    pub previous: Option<Plan>,
    /// Wall-time limit of an optimal run. `None` means
    /// [`DEFAULT_TIME_LIMIT`] for the searches, which usually finish far
    /// sooner; an explicit limit also lets exact min-moves models use the
    /// time the searches leave.
    pub time_limit: Option<Duration>,
    /// With `previous`: the re-plan's model imbalance may exceed a fresh
    /// plan's by this fraction if that saves migrations (lexicographic:
    /// balance first, then migrations).
    pub balance_tolerance: f64,
    /// With `previous`: price migrations instead of using the tolerance
    /// (each layer trades transfer time against compute time saved).
    pub pricing: Option<MigrationPricing>,
    /// GPUs that must take no load (down or drained). Their nodes keep the
    /// groups they host on the GPUs left, as if those nodes had fewer GPUs
    /// ([`outage`](self) explains the plan); their slots get share 0, so the
    /// plan carries `replica_share`.
    pub down_gpus: Vec<usize>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            policy: Policy::Optimal,
            split: Split::Even,
            previous: None,
            time_limit: None,
            balance_tolerance: DEFAULT_BALANCE_TOLERANCE,
            pricing: None,
            down_gpus: Vec::new(),
        }
    }
}

/// A plan and the figures that describe it.
#[derive(Debug, Clone)]
pub struct PlanOutcome {
    pub plan: Plan,
    pub stats: PlanStats,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    #[error("policy {policy} needs num_groups ({groups}) divisible by num_nodes ({nodes})")]
    HierarchicalImpossible {
        policy: &'static str,
        groups: usize,
        nodes: usize,
    },
    #[error("the previous plan does not fit this topology: {0}")]
    PreviousMismatch(String),
    /// The load matrix was not shaped for this topology.
    #[error("the load does not fit this topology: {0}")]
    LoadMismatch(String),
    /// A valid request this planner cannot serve yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An option out of range (negative tolerance, zero time limit, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Too many GPUs are down for the slots left to hold every expert.
    #[error("cannot plan without {down} down GPU(s): the {live_slots} slots left cannot hold all {experts} experts")]
    Capacity {
        down: usize,
        live_slots: usize,
        experts: usize,
    },
    /// The planner produced an invalid plan: a bug, reported instead of a panic.
    #[error("internal error, please report: {0}")]
    Internal(String),
}

/// Plans every layer of `load` for `topology`.
///
/// Layers are independent and planned in parallel (rayon). `stats.policy`
/// names the policy that ran.
pub fn solve(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
) -> Result<PlanOutcome, PlanError> {
    let started = Instant::now();
    check_load(topology, load)?;
    check_options(topology, options)?;
    let previous = options
        .previous
        .as_ref()
        .map(|p| check_previous(topology, p))
        .transpose()?;
    if options.policy == Policy::OptimalCovisit {
        return covisit::solve(topology, load, options, previous.as_ref(), started);
    }
    let (policy, placement) = resolve(options.policy, topology)?;
    let optimal = policy.is_optimal();
    if options.split == Split::Weighted && !optimal {
        return Err(PlanError::Unsupported(format!(
            "--split weighted needs an optimal policy, not {}",
            policy.name()
        )));
    }
    let live = down_gpus(topology, options)?;
    let (plan, layers, replan, placement) = if let Some(live) = &live {
        let outcome = outage::plan(
            topology,
            load,
            options,
            policy,
            placement,
            previous.as_ref(),
            live,
        )?;
        if outcome.placement != placement && forced_hierarchical(policy) {
            return Err(PlanError::Unsupported(format!(
                "policy {} with GPUs {:?} down: some node's live slots cannot hold its groups' experts",
                policy.name(),
                options.down_gpus
            )));
        }
        let (plan, layers, replan) = outcome.planned;
        (plan, layers, replan, outcome.placement)
    } else if optimal {
        let (plan, layers, replan) =
            plan_optimal(topology, load, options, placement, previous.as_ref())?;
        (plan, layers, replan, placement)
    } else {
        let (plan, layers, replan) = plan_greedy(topology, load, policy, placement)?;
        (plan, layers, replan, placement)
    };
    let solve_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats = stats::plan_stats(
        topology,
        load,
        &plan,
        stats::Run {
            policy,
            placement,
            split: options.split,
            solve_ms,
            layers: &layers,
            previous: previous.as_ref(),
            replan,
        },
    );
    Ok(PlanOutcome { plan, stats })
}

type Planned = (Plan, Vec<stats::LayerFacts>, Option<stats::ReplanFacts>);

fn forced_hierarchical(policy: Policy) -> bool {
    matches!(
        policy,
        Policy::GreedyHierarchical | Policy::OptimalHierarchical
    )
}

/// The live GPUs when `options` names down GPUs (`None` when none is down);
/// refuses GPUs the topology lacks and outages that leave too few slots.
fn down_gpus(topology: &Topology, options: &PlanOptions) -> Result<Option<LiveGpus>, PlanError> {
    if options.down_gpus.is_empty() {
        return Ok(None);
    }
    if let Some(gpu) = options
        .down_gpus
        .iter()
        .find(|&&g| g >= topology.num_gpus())
    {
        return Err(PlanError::InvalidOption(format!(
            "down GPU {gpu} is not in the topology ({} GPUs)",
            topology.num_gpus()
        )));
    }
    let live = LiveGpus::new(topology, &options.down_gpus);
    let down = live.down.iter().filter(|d| **d).count();
    let live_slots = (topology.num_gpus() - down) * topology.slots_per_gpu();
    if live_slots < topology.num_logical_experts() {
        return Err(PlanError::Capacity {
            down,
            live_slots,
            experts: topology.num_logical_experts(),
        });
    }
    Ok(Some(live))
}

fn plan_greedy(
    topology: &Topology,
    load: &LoadMatrix,
    policy: Policy,
    placement: Placement,
) -> Result<Planned, PlanError> {
    let started = Instant::now();
    let greedy = match placement {
        Placement::Hierarchical | Placement::Covisit => Greedy::hierarchical(topology)
            .ok_or_else(|| hierarchical_impossible(policy, topology))?,
        Placement::Global => Greedy::global(topology),
    };
    let rows: Vec<&[f64]> = load.layers().collect();
    let layers: Vec<LayerPlan> = rows
        .into_par_iter()
        .map_init(Scratch::default, |scratch, row| {
            greedy.plan_layer(row, scratch)
        })
        .collect();
    let per_layer_ms = started.elapsed().as_secs_f64() * 1e3 / layers.len().max(1) as f64;
    let facts = layers
        .iter()
        .map(|l| stats::LayerFacts {
            bound_load: l.bound_load,
            objective_load: None,
            status: None,
            ms: per_layer_ms,
        })
        .collect();
    let phy2log = layers.into_iter().map(|l| l.phy2log).collect();
    let plan =
        Plan::new(phy2log, None, topology).map_err(|e| PlanError::Internal(e.to_string()))?;
    Ok((plan, facts, None))
}

fn plan_optimal(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
    placement: Placement,
    previous: Option<&Plan>,
) -> Result<Planned, PlanError> {
    let request = optimal::Request {
        topology,
        placement,
        split: options.split,
        previous,
        tolerance: options.balance_tolerance,
        pricing: options.pricing,
        time_limit: options.time_limit.unwrap_or(DEFAULT_TIME_LIMIT),
        patient: options.time_limit.is_some(),
    };
    let outcome = optimal::plan(&request, load);
    let plan = Plan::new(outcome.phy2log, outcome.shares, topology)
        .map_err(|e| PlanError::Internal(e.to_string()))?;
    let facts = outcome
        .layers
        .iter()
        .map(|l| stats::LayerFacts {
            bound_load: l.bound_load,
            objective_load: Some(l.max_load),
            status: Some(l.status),
            ms: l.seconds * 1e3,
        })
        .collect();
    let replan = outcome.replan.map(|r| stats::ReplanFacts {
        tolerance: options.balance_tolerance,
        stale_loads: r.stale_loads,
        fresh_loads: r.fresh_loads,
        price: r.price.map(|p| (p.transfer_s, p.saved_s)),
        migrations_bound: r.migrations_bound,
    });
    Ok((plan, facts, replan))
}

/// The policy that runs for `policy` on `topology`, and its placement rule.
fn resolve(policy: Policy, topology: &Topology) -> Result<(Policy, Placement), PlanError> {
    let placement = match policy {
        Policy::GreedyGlobal | Policy::OptimalGlobal => Placement::Global,
        Policy::GreedyHierarchical | Policy::OptimalHierarchical
            if !topology.supports_hierarchical() =>
        {
            return Err(hierarchical_impossible(policy, topology));
        }
        _ if topology.supports_hierarchical() => Placement::Hierarchical,
        _ => Placement::Global,
    };
    Ok((policy, placement))
}

/// Rejects options no run could honour.
fn check_options(topology: &Topology, options: &PlanOptions) -> Result<(), PlanError> {
    let invalid = |what: String| Err(PlanError::InvalidOption(what));
    if !(options.balance_tolerance.is_finite() && options.balance_tolerance >= 0.0) {
        return invalid(format!(
            "balance tolerance must be a non-negative number, got {}",
            options.balance_tolerance
        ));
    }
    if options.time_limit.is_some_and(|t| t.is_zero()) {
        return invalid("time limit must be positive".into());
    }
    if let Some(p) = options.pricing {
        if !(p.link_bytes_per_s.is_finite() && p.link_bytes_per_s > 0.0) {
            return invalid(format!(
                "link bandwidth must be a positive number of bytes per second, got {}",
                p.link_bytes_per_s
            ));
        }
        if !(p.serve_seconds.is_finite() && p.serve_seconds >= 0.0) {
            return invalid(format!(
                "serving horizon must be a non-negative number of seconds, got {}",
                p.serve_seconds
            ));
        }
        if topology.expert_bytes().is_none() {
            return invalid("migration pricing needs `expert_bytes` in the topology".into());
        }
    }
    Ok(())
}

fn hierarchical_impossible(policy: Policy, topology: &Topology) -> PlanError {
    PlanError::HierarchicalImpossible {
        policy: policy.name(),
        groups: topology.num_groups(),
        nodes: topology.num_nodes(),
    }
}

fn check_load(topology: &Topology, load: &LoadMatrix) -> Result<(), PlanError> {
    if load.num_layers() != topology.num_layers()
        || load.num_experts() != topology.num_logical_experts()
    {
        return Err(PlanError::LoadMismatch(format!(
            "load is {} layers x {} experts, topology has {} x {}",
            load.num_layers(),
            load.num_experts(),
            topology.num_layers(),
            topology.num_logical_experts()
        )));
    }
    Ok(())
}

/// Re-checks a previous plan against this topology (it may have been parsed
/// against another one).
fn check_previous(topology: &Topology, previous: &Plan) -> Result<Plan, PlanError> {
    Plan::new(
        previous.phy2log().to_vec(),
        previous.replica_share().map(<[Vec<f64>]>::to_vec),
        topology,
    )
    .map_err(|e| PlanError::PreviousMismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(groups: usize, nodes: usize) -> Topology {
        Topology::from_json(&format!(
            r#"{{"num_layers": 2, "num_logical_experts": 8, "num_groups": {groups},
                "num_nodes": {nodes}, "gpus_per_node": 2, "slots_per_gpu": 3}}"#
        ))
        .unwrap()
    }

    fn load(t: &Topology) -> LoadMatrix {
        LoadMatrix::new(
            vec![
                vec![9.0, 1.0, 4.0, 4.0, 7.0, 2.0, 3.0, 3.0],
                vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0],
            ],
            t,
        )
        .unwrap()
    }

    fn options(policy: Policy) -> PlanOptions {
        PlanOptions {
            policy,
            ..PlanOptions::default()
        }
    }

    #[test]
    fn policies_resolve_to_what_ran() {
        let t = topology(4, 2);
        let l = load(&t);
        let run = |p| solve(&t, &l, &options(p)).unwrap().stats;
        assert_eq!(run(Policy::Greedy).placement, Placement::Hierarchical);
        assert_eq!(run(Policy::GreedyGlobal).placement, Placement::Global);
        let optimal = run(Policy::OptimalHierarchical);
        assert_eq!(optimal.policy.name(), "optimal-hierarchical");
        // The plan file's `stats.policy` is still the name.
        let json = serde_json::to_value(&optimal).unwrap();
        assert_eq!(json["policy"], "optimal-hierarchical");
        assert_eq!(json["split"], "even");
        assert_eq!(optimal.placement, Placement::Hierarchical);
        assert_eq!(run(Policy::OptimalGlobal).placement, Placement::Global);
        assert_eq!(PlanOptions::default().policy, Policy::Optimal);
        for layer in &optimal.layers {
            assert!(layer.imbalance <= layer.objective + 1e-12);
            assert!((layer.gap - (layer.imbalance / layer.bound - 1.0)).abs() < 1e-12);
            // Met bounds are reported as proofs, unmet ones never are.
            assert_eq!(
                layer.status == LayerStatus::Optimal,
                layer.gap <= 1e-9,
                "{layer:?}"
            );
        }

        let odd = topology(1, 2);
        let l = load(&odd);
        assert_eq!(
            solve(&odd, &l, &options(Policy::Greedy))
                .unwrap()
                .stats
                .placement,
            Placement::Global
        );
        assert_eq!(
            solve(&odd, &l, &options(Policy::GreedyHierarchical)).unwrap_err(),
            PlanError::HierarchicalImpossible {
                policy: "greedy-hierarchical",
                groups: 1,
                nodes: 2
            }
        );
    }

    #[test]
    fn previous_plan_gives_migrations() {
        let t = topology(4, 2);
        let l = load(&t);
        let first = solve(&t, &l, &options(Policy::Greedy)).unwrap();
        assert_eq!(first.stats.migrations, None);
        assert_eq!(first.stats.replan, None);
        let again = PlanOptions {
            previous: Some(first.plan.clone()),
            ..PlanOptions::default()
        };
        // Same load: keeping the plan is within the tolerance and costs nothing.
        let kept = solve(&t, &l, &again).unwrap().stats;
        assert_eq!(kept.migrations, Some(0));
        assert_eq!(kept.bytes_moved, None, "the topology gives no expert_bytes");
        let replan = kept.replan.expect("an optimal re-plan reports itself");
        assert!(
            kept.model_imbalance
                <= replan.fresh_imbalance * (1.0 + DEFAULT_BALANCE_TOLERANCE) + 1e-12
        );

        let other = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 4}"#,
        )
        .unwrap();
        let err = solve(&other, &load(&other), &again).unwrap_err();
        assert!(matches!(err, PlanError::PreviousMismatch(_)), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let t = topology(4, 2);
        let weighted = |policy| PlanOptions {
            policy,
            split: Split::Weighted,
            ..PlanOptions::default()
        };
        assert!(matches!(
            solve(&t, &load(&t), &weighted(Policy::Greedy)),
            Err(PlanError::Unsupported(_))
        ));
        let shares = solve(&t, &load(&t), &weighted(Policy::Optimal))
            .unwrap()
            .plan;
        assert!(shares.replica_share().is_some());
        for bad in [
            PlanOptions {
                balance_tolerance: -0.1,
                ..PlanOptions::default()
            },
            PlanOptions {
                balance_tolerance: f64::NAN,
                ..PlanOptions::default()
            },
            PlanOptions {
                time_limit: Some(Duration::ZERO),
                ..PlanOptions::default()
            },
            PlanOptions {
                pricing: Some(MigrationPricing {
                    link_bytes_per_s: 1e9,
                    serve_seconds: 60.0,
                }),
                ..PlanOptions::default()
            },
        ] {
            let err = solve(&t, &load(&t), &bad).unwrap_err();
            assert!(matches!(err, PlanError::InvalidOption(_)), "{err}");
        }
        let other = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 8, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let short = LoadMatrix::new(vec![vec![1.0; 8]], &other).unwrap();
        assert!(matches!(
            solve(&t, &short, &PlanOptions::default()),
            Err(PlanError::LoadMismatch(_))
        ));
    }
}
