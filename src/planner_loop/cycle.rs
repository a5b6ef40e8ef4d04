//! One planner cycle for one cluster: gather what the policy needs from the
//! store (closed windows, the plan in force, down GPUs, the trigger's
//! streak), run the pure policy ([`ballast_policy::evaluate`]) off the async
//! runtime, then record the decision and publish. The scheduled loop and
//! `POST .../rebalance` both come through here.
//!
//! A candidate equal to the plan in force is never published again, forced
//! or not: a new version would make every GPU acknowledge a plan that moves
//! nothing.

use std::sync::Arc;

use ballast_policy::{
    evaluate, Candidate, CandidateError, Decision, PolicyError, Reason, Situation,
};
use ballast_protocol::{PlanDocument, PlanFigures, PlanStats};
use ballast_solver::{score, LoadMatrix, Plan, Topology};
use thiserror::Error;
use tracing::{info, info_span, Instrument};

use crate::domain::ClusterName;
use crate::plan_cache::{ClusterEntry, ClusterInfo, PublishedPlan};
use crate::state::AppState;
use crate::store::decisions::DecisionRow;
use crate::store::plans::{NewPlan, PublishOutcome};
use crate::store::telemetry::{LoadWindow, WindowShape};
use crate::store::StoreError;
use crate::time::{now_ms, rfc3339};

/// Why the cycle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The loop claimed cycle `cycle`.
    Scheduled { cycle: i64 },
    /// An operator asked; `dry_run` computes without publishing.
    Rebalance { dry_run: bool },
}

/// What a cycle did.
#[derive(Debug)]
pub enum Outcome {
    Published(Arc<PublishedPlan>),
    /// The policy would publish, but the candidate equals this plan, in force.
    Unchanged(Arc<PublishedPlan>),
    Skipped,
    /// A dry run's candidate; `unchanged`: it equals the plan in force.
    DryRun {
        candidate: Box<PlanDocument>,
        unchanged: bool,
    },
}

/// The reason recorded when a candidate equals the plan in force.
pub const UNCHANGED: &str = "unchanged";

/// Two `replica_share` entries this close are the same share: a re-solve of
/// the same load may differ in the last bits, which no engine can route by.
const SAME_SHARE: f64 = 1e-9;

#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub reason: &'static str,
    pub detail: String,
    /// The figures behind the decision (returned by rebalance, stored in stats).
    pub figures: PlanFigures,
}

#[derive(Debug, Error)]
pub enum CycleError {
    #[error("no closed load window yet: send telemetry and wait for its window to close")]
    NoTelemetry,
    #[error(transparent)]
    Candidate(#[from] CandidateError),
    #[error("version {latest:?} was published while this candidate was computed; retry")]
    Superseded { latest: Option<i64> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the solver task failed: {0}")]
    Join(String),
}

impl From<PolicyError> for CycleError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::NoTelemetry => CycleError::NoTelemetry,
            PolicyError::Candidate(err) => CycleError::Candidate(err),
        }
    }
}

impl CycleError {
    /// The reason recorded for a scheduled cycle that ended in this error.
    fn reason(&self) -> &'static str {
        match self {
            CycleError::NoTelemetry => "no_telemetry",
            CycleError::Candidate(CandidateError::Capacity { .. }) => "insufficient_capacity",
            CycleError::Candidate(_) | CycleError::Join(_) => "solve_failed",
            CycleError::Superseded { .. } => "superseded",
            CycleError::Store(_) => "store_error",
        }
    }
}

pub async fn run(
    state: &AppState,
    entry: &ClusterEntry,
    trigger: Trigger,
) -> Result<Report, CycleError> {
    let info = entry.info();
    let span = info_span!("planner_cycle", cluster = %info.name, lineage = info.lineage, ?trigger);
    let result = cycle(state, entry, &info, trigger)
        .instrument(span.clone())
        .await;
    if let Trigger::Scheduled { cycle } = trigger {
        let _enter = span.enter();
        match &result {
            Ok(report) => {
                info!(reason = report.reason, detail = %report.detail, "planner decision");
            }
            Err(err) => {
                info!(reason = err.reason(), error = %err, "planner cycle ended without a candidate");
                if !matches!(err, CycleError::Store(_)) {
                    let row = decision_row(&info, cycle, None, err.reason(), err.to_string(), None);
                    record(state, &row).await?;
                }
            }
        }
    }
    // Forced re-plans count too (a dry run decides nothing): an operator's
    // rebalance is a decision the dashboards must show beside the loop's.
    if trigger != (Trigger::Rebalance { dry_run: true }) {
        let reason = match &result {
            Ok(r) => r.reason,
            Err(e) => e.reason(),
        };
        state
            .metrics
            .planner_decisions
            .with_label_values(&[info.name.as_str(), reason])
            .inc();
    }
    result
}

/// What the policy is asked about, as read from the store.
struct Gathered {
    windows: Vec<LoadMatrix>,
    base_version: Option<i64>,
    current: Option<Arc<PublishedPlan>>,
    excluded: Vec<usize>,
    streak: u32,
}

async fn gather(
    state: &AppState,
    entry: &ClusterEntry,
    info: &ClusterInfo,
    trigger: Trigger,
) -> Result<Gathered, CycleError> {
    let cluster = &info.name;
    let topology = &info.topology;
    let config = &state.config;
    let closed_before = config.windows().closed_before(now_ms());
    let stored = state.store.load_windows(
        cluster,
        info.lineage,
        closed_before,
        config.planning.windows_needed(),
        WindowShape::of(topology),
    );
    let stored = state.metrics.time_store("load_windows", stored).await?;
    let windows = stored
        .iter()
        .map(|w| to_matrix(w, topology))
        .collect::<Result<Vec<_>, _>>()?;
    if windows.is_empty() {
        state
            .metrics
            .forget_observed(cluster.as_str(), topology.num_layers(), topology.num_gpus());
        return Err(CycleError::NoTelemetry);
    }

    let base_version = state.store.latest_version(cluster).await?;
    let current = match base_version {
        Some(v) => state
            .plan_cache
            .plan(entry, v)
            .await?
            .filter(|p| p.lineage == info.lineage),
        None => None,
    };
    match (&current, windows.last(), stored.last()) {
        // One missed window is a late worker; two, a silent cluster.
        (Some(current), Some(latest), Some(newest)) if newest.bucket + 2 >= closed_before => {
            observe(state, cluster, topology, &current.plan, latest);
            state
                .metrics
                .observed_window
                .with_label_values(&[cluster.as_str()])
                .set(config.windows().end_ms(newest.bucket) as f64 / 1000.0);
        }
        _ => state.metrics.forget_observed(
            cluster.as_str(),
            topology.num_layers(),
            topology.num_gpus(),
        ),
    }
    let excluded = if config.exclude_down_workers {
        state
            .store
            .workers(cluster)
            .await?
            .into_iter()
            .filter(|w| w.down_since_ms.is_some())
            .map(|w| w.gpu)
            .collect()
    } else {
        Vec::new()
    };
    let streak = match trigger {
        Trigger::Scheduled { .. } => state
            .store
            .decisions(cluster, 1)
            .await?
            .first()
            .map_or(0, |d| d.streak.clamp(0, i64::from(u32::MAX)) as u32),
        Trigger::Rebalance { .. } => 0,
    };
    Ok(Gathered {
        windows,
        base_version,
        current,
        excluded,
        streak,
    })
}

async fn cycle(
    state: &AppState,
    entry: &ClusterEntry,
    info: &ClusterInfo,
    trigger: Trigger,
) -> Result<Report, CycleError> {
    let cluster = &info.name;
    let topology = info.topology.clone();
    let gathered = gather(state, entry, info, trigger).await?;
    let base_version = gathered.base_version;
    let current = gathered.current.clone();

    let settings = state.config.planning;
    let decision = {
        let topology = topology.clone();
        let forced = matches!(trigger, Trigger::Rebalance { .. });
        tokio::task::spawn_blocking(move || {
            evaluate(
                &settings,
                &Situation {
                    topology: &topology,
                    windows: &gathered.windows,
                    current: gathered.current.as_ref().map(|c| &c.plan),
                    excluded: &gathered.excluded,
                    streak: gathered.streak,
                    forced,
                },
            )
        })
        .await
        .map_err(|e| CycleError::Join(e.to_string()))??
    };
    export_decision(state, cluster, &decision);

    let verdict = decision.verdict;
    let figures = PlanFigures {
        base_version,
        decision: decision.figures.clone(),
    };
    let report = |outcome| Report {
        outcome,
        reason: verdict.reason.as_str(),
        detail: decision.detail.clone(),
        figures: figures.clone(),
    };
    let now = now_ms();
    let candidate = &decision.candidate;
    match trigger {
        Trigger::Rebalance { dry_run: true } => {
            let doc = document(
                cluster,
                None,
                info.lineage,
                now,
                verdict.reason,
                &topology,
                candidate,
                &figures,
            );
            return Ok(report(Outcome::DryRun {
                candidate: Box::new(doc),
                unchanged: current.is_some_and(|c| same_plan(&c.plan, &candidate.plan)),
            }));
        }
        // A rebalance that does not publish leaves no trace in the log.
        Trigger::Rebalance { .. } if !verdict.publish => return Ok(report(Outcome::Skipped)),
        _ => {}
    }
    if let Some(current) =
        current.filter(|c| verdict.publish && same_plan(&c.plan, &candidate.plan))
    {
        let detail = format!(
            "the candidate equals plan version {} in force: nothing new to publish",
            current.version
        );
        // Like any other rebalance that publishes nothing, a forced one
        // leaves no row in the decision log.
        if let Trigger::Scheduled { cycle } = trigger {
            let row = decision_row(
                info,
                cycle,
                base_version,
                UNCHANGED,
                detail.clone(),
                Some(&decision),
            );
            record(state, &row).await?;
        }
        return Ok(Report {
            outcome: Outcome::Unchanged(current),
            reason: UNCHANGED,
            detail,
            figures,
        });
    }
    let cycle = match trigger {
        Trigger::Scheduled { cycle } => cycle,
        Trigger::Rebalance { .. } => state.store.next_cycle(cluster).await?.unwrap_or(0),
    };
    let row = decision_row(
        info,
        cycle,
        base_version,
        verdict.reason.as_str(),
        decision.detail.clone(),
        Some(&decision),
    );
    if !verdict.publish {
        record(state, &row).await?;
        return Ok(report(Outcome::Skipped));
    }
    let lineage = info.lineage;
    let publish = state.store.publish(
        cluster,
        base_version,
        now,
        |version| {
            let doc = document(
                cluster,
                Some(version),
                lineage,
                now,
                verdict.reason,
                &topology,
                candidate,
                &figures,
            );
            NewPlan {
                lineage,
                reason: verdict.reason.as_str().into(),
                stats: doc.stats.to_json(),
                document: doc.to_json(),
            }
        },
        Some(row),
    );
    let outcome = state.metrics.time_store("publish", publish).await?;
    match outcome {
        PublishOutcome::Superseded { latest } => Err(CycleError::Superseded { latest }),
        PublishOutcome::Published(row) => {
            let published = Arc::new(PublishedPlan::new(
                &row,
                topology.clone(),
                candidate.plan.clone(),
            ));
            state.plan_cache.announce(cluster, published.clone());
            export_published(state, cluster, &published, verdict.reason, candidate);
            info!(version = row.version, reason = row.reason, "published plan");
            Ok(report(Outcome::Published(published)))
        }
    }
}

/// Whether `candidate` would change nothing an engine loads or routes: the
/// same expert in every slot and the same shares.
fn same_plan(current: &Plan, candidate: &Plan) -> bool {
    current.phy2log() == candidate.phy2log()
        && current.replica_scope() == candidate.replica_scope()
        && match (current.replica_share(), candidate.replica_share()) {
            (None, None) => true,
            (Some(a), Some(b)) => a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(x, y)| (x - y).abs() <= SAME_SHARE),
            _ => false,
        }
}

/// The decision log's row for one cycle; `decision` is `None` when the
/// cycle ended before the policy decided.
fn decision_row(
    info: &ClusterInfo,
    cycle: i64,
    base_version: Option<i64>,
    reason: &str,
    detail: String,
    decision: Option<&Decision>,
) -> DecisionRow {
    let figures = decision.map(|d| &d.figures);
    DecisionRow {
        cluster: info.name.clone(),
        cycle,
        decided_at_ms: now_ms(),
        lineage: info.lineage,
        base_version,
        published_version: None,
        reason: reason.into(),
        detail,
        observed_imbalance: figures.and_then(|f| f.current_imbalance),
        predicted_imbalance: figures.map(|f| f.predicted_imbalance),
        migrations: figures.and_then(|f| f.migrations).map(|m| m as i64),
        net_gain: figures.and_then(|f| f.net_gain),
        // Zero after a publish: the trigger disarms.
        streak: decision.map_or(0, |d| i64::from(d.verdict.streak)),
    }
}

/// Stores a decision row, timed.
async fn record(state: &AppState, row: &DecisionRow) -> Result<(), StoreError> {
    let metrics = &state.metrics;
    metrics
        .time_store("record_decision", state.store.record_decision(row))
        .await
}

/// The figures behind a decision: how the candidate, the plan in force and
/// the bound compare on the estimate, and where the trigger stands.
fn export_decision(state: &AppState, cluster: &ClusterName, decision: &Decision) {
    if state.plan_cache.entry(cluster).is_none() {
        return; // deleted while this cycle ran: its gauges are gone
    }
    let m = &state.metrics;
    let c = [cluster.as_str()];
    let f = &decision.figures;
    m.solve_seconds
        .with_label_values(&c)
        .observe(f.solve_seconds);
    m.predicted_model_imbalance
        .with_label_values(&c)
        .set(f.predicted_imbalance);
    m.bound_model_imbalance
        .with_label_values(&c)
        .set(decision.candidate.stats.bound);
    match (f.current_imbalance, f.net_gain) {
        (Some(current), Some(net)) => {
            m.estimated_model_imbalance
                .with_label_values(&c)
                .set(current);
            m.net_gain.with_label_values(&c).set(net);
        }
        // No plan in force: nothing to compare with, and a figure left from
        // an earlier lineage would mislead.
        _ => {
            let _ = m.estimated_model_imbalance.remove_label_values(&c);
            let _ = m.net_gain.remove_label_values(&c);
        }
    }
    m.armed_cycles
        .with_label_values(&c)
        .set(i64::from(decision.verdict.streak));
    m.gain_threshold
        .with_label_values(&c)
        .set(state.config.planning.thresholds.threshold);
}

/// Gauges and counters of the plan just published.
fn export_published(
    state: &AppState,
    cluster: &ClusterName,
    published: &PublishedPlan,
    reason: Reason,
    candidate: &Candidate,
) {
    if state.plan_cache.entry(cluster).is_none() {
        return; // deleted while this cycle ran: its gauges are gone
    }
    let m = &state.metrics;
    let c = [cluster.as_str()];
    m.plan_version.with_label_values(&c).set(published.version);
    m.plan_published
        .with_label_values(&c)
        .set(published.created_at_ms as f64 / 1000.0);
    m.plan_publishes
        .with_label_values(&[cluster.as_str(), reason.as_str()])
        .inc();
    // The rollout starts now; the planner loop's ticks grow it while GPUs
    // are pending.
    m.rollout_seconds.with_label_values(&c).set(0.0);
    let migrations = candidate.migrations.unwrap_or(0) as i64;
    m.plan_migrations.with_label_values(&c).set(migrations);
    let floor = candidate
        .stats
        .replan
        .as_ref()
        .and_then(|r| r.migrations_bound)
        .unwrap_or(0) as i64;
    m.plan_migrations_bound.with_label_values(&c).set(floor);
    m.migrations_total
        .with_label_values(&c)
        .inc_by(migrations as u64);
    // Bytes are known only when the topology gives `expert_bytes`; a 0
    // would claim the move cost nothing.
    match candidate.stats.bytes_moved {
        Some(bytes) => {
            m.plan_moved_bytes.with_label_values(&c).set(bytes as i64);
            m.moved_bytes_total.with_label_values(&c).inc_by(bytes);
        }
        None => {
            let _ = m.plan_moved_bytes.remove_label_values(&c);
        }
    }
}

/// A stored window as the load matrix it must be; anything else is corrupt.
fn to_matrix(window: &LoadWindow, topology: &Topology) -> Result<LoadMatrix, StoreError> {
    let rows = window
        .load
        .chunks_exact(topology.num_logical_experts())
        .map(<[f64]>::to_vec)
        .collect();
    let corrupt = |e: ballast_solver::ParseError| StoreError::Corrupt {
        what: "load window",
        detail: e.to_string(),
    };
    let load = LoadMatrix::new(rows, topology).map_err(corrupt)?;
    let Some(covisit) = &window.covisit else {
        return Ok(load);
    };
    let (experts, groups) = (topology.num_logical_experts(), topology.num_groups().max(1));
    let rows = covisit
        .chunks_exact(experts * groups)
        .map(|layer| layer.chunks_exact(groups).map(<[f64]>::to_vec).collect())
        .collect();
    load.with_covisit(rows, topology).map_err(corrupt)
}

/// Exports the current plan's imbalance on the latest closed window.
fn observe(
    state: &AppState,
    cluster: &ClusterName,
    topology: &Topology,
    plan: &Plan,
    latest: &LoadMatrix,
) {
    let s = score::score(topology, latest, plan);
    let m = &state.metrics;
    m.observed_model_imbalance
        .with_label_values(&[cluster.as_str()])
        .set(s.model_imbalance);
    for (layer, l) in s.layers.iter().enumerate() {
        m.observed_layer_imbalance
            .with_label_values(&[cluster.as_str(), &layer.to_string()])
            .set(l.imbalance);
    }
    // Each GPU's share of the forward pass: its load summed over layers
    // over the ideal summed over layers, so 1.0 is a fair share and the
    // hottest GPU has the largest.
    let ideal: f64 = s.layers.iter().map(|l| l.ideal_load).sum();
    if ideal > 0.0 {
        let gpus = (0..topology.num_layers()).fold(vec![0.0; topology.num_gpus()], |mut sum, l| {
            let shares = plan.layer_shares(l, topology.num_logical_experts());
            let loads = score::gpu_loads(topology, latest.layer(l), plan.layer(l), &shares);
            sum.iter_mut().zip(loads).for_each(|(s, x)| *s += x);
            sum
        });
        for (gpu, load) in gpus.into_iter().enumerate() {
            m.observed_gpu_load
                .with_label_values(&[cluster.as_str(), &gpu.to_string()])
                .set(load / ideal);
        }
    }
}

/// The plan document (SPEC plan.json plus what the service adds). It carries
/// its topology so any version can be exported or diffed on its own.
#[allow(clippy::too_many_arguments)]
fn document(
    cluster: &ClusterName,
    version: Option<i64>,
    lineage: i64,
    created_at_ms: i64,
    reason: Reason,
    topology: &Topology,
    candidate: &Candidate,
    figures: &PlanFigures,
) -> PlanDocument {
    // Without `log2phy`/`logcnt`: they derive from `phy2log` and are ten
    // times its size (decode: 0.9 MB of 1 MB), which every poller would
    // download. Engines that want them ask for an export (`?format=`).
    PlanDocument {
        phy2log: candidate.plan.phy2log().to_vec(),
        replica_share: candidate.plan.replica_share().map(<[Vec<f64>]>::to_vec),
        replica_scope: candidate.plan.replica_scope().map(<[Vec<i64>]>::to_vec),
        cluster: cluster.to_string(),
        version,
        lineage,
        created_at: rfc3339(created_at_ms),
        reason: reason.as_str().to_owned(),
        topology: Some(topology.to_spec()),
        stats: PlanStats::new(&candidate.stats, figures),
    }
}
