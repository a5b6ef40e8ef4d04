//! One planner cycle for one cluster: estimate the load from closed windows,
//! compute a migration-aware candidate off the async runtime, decide, and
//! publish or record why not. The scheduled loop and `POST .../rebalance`
//! both come through here.

use std::sync::Arc;

use ballast_protocol::{PlanDocument, PlanFigures, PlanStats};
use ballast_solver::{score, LoadMatrix, Plan, Topology};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, info_span, Instrument};

use super::candidate::{self, Candidate, CandidateError, CandidateInput};
use super::decide::{self, Evidence, Reason, Verdict};
use super::estimate;
use crate::plan_cache::{ClusterEntry, ClusterInfo, PublishedPlan};
use crate::state::{now_ms, AppState};
use crate::store::decisions::DecisionRow;
use crate::store::plans::{NewPlan, PublishOutcome};
use crate::store::StoreError;

/// Why the cycle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The loop claimed cycle `cycle`.
    Scheduled { cycle: i64 },
    /// An operator asked; `dry_run` computes without publishing.
    Rebalance { dry_run: bool },
}

/// The figures behind a decision (returned by rebalance, stored in stats).
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub base_version: Option<i64>,
    pub current_imbalance: Option<f64>,
    pub predicted_imbalance: f64,
    pub migrations: Option<usize>,
    pub migrated_bytes: Option<u64>,
    pub net_gain: Option<f64>,
    pub solve_seconds: f64,
    pub load_windows: usize,
    pub excluded_gpus: Vec<usize>,
}

/// What a cycle did.
#[derive(Debug)]
pub enum Outcome {
    Published(Arc<PublishedPlan>),
    Skipped,
    DryRun(Box<PlanDocument>),
}

#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub reason: &'static str,
    pub detail: String,
    pub figures: Figures,
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

/// Bucket of a window ending at `end_ms`.
pub fn bucket_of(end_ms: i64, window_ms: i64) -> i64 {
    end_ms.div_euclid(window_ms.max(1))
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
                let row = DecisionRow {
                    cluster: info.name.to_string(),
                    cycle,
                    decided_at_ms: now_ms(),
                    lineage: info.lineage,
                    base_version: None,
                    published_version: None,
                    reason: err.reason().into(),
                    detail: err.to_string(),
                    observed_imbalance: None,
                    predicted_imbalance: None,
                    migrations: None,
                    net_gain: None,
                    streak: 0,
                };
                if !matches!(err, CycleError::Store(_)) {
                    state.store.record_decision(&row).await?;
                }
            }
        }
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

async fn cycle(
    state: &AppState,
    entry: &ClusterEntry,
    info: &ClusterInfo,
    trigger: Trigger,
) -> Result<Report, CycleError> {
    let cluster = info.name.as_str();
    let topology = info.topology.clone();
    let len = topology.num_layers() * topology.num_logical_experts();

    let window_ms = state.config.window.as_millis() as i64;
    let grace_ms = state.config.window_grace.as_millis() as i64;
    let closed_before = bucket_of(now_ms() - grace_ms, window_ms);
    let windows = state
        .store
        .load_windows(
            cluster,
            info.lineage,
            closed_before,
            estimate::windows_needed(state.config.ewma_alpha),
            topology.num_layers(),
            len,
        )
        .await?;
    let estimate = estimate::ewma(
        windows.iter().map(|w| w.load.as_slice()),
        state.config.ewma_alpha,
    )
    .ok_or(CycleError::NoTelemetry)?;
    let estimate = to_matrix(&estimate, &topology)?;

    let base_version = state.store.latest_version(cluster).await?;
    let current = match base_version {
        Some(v) => state
            .registry
            .plan(entry, v)
            .await?
            .filter(|p| p.lineage == info.lineage),
        None => None,
    };
    if let (Some(current), Some(latest)) = (&current, windows.last()) {
        observe(state, cluster, &topology, &current.plan, &latest.load)?;
    }
    let excluded = if state.config.exclude_down_workers {
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
    let input = CandidateInput {
        topology: (*topology).clone(),
        estimate,
        current: current.as_ref().map(|c| c.plan.clone()),
        policy: state.config.policy,
        split: state.config.split,
        balance_tolerance: state.config.balance_tolerance,
        time_limit: state.config.solve_time_limit,
        excluded: excluded.clone(),
    };
    let candidate = tokio::task::spawn_blocking(move || candidate::build(input))
        .await
        .map_err(|e| CycleError::Join(e.to_string()))??;
    state
        .metrics
        .solve_seconds
        .with_label_values(&[cluster])
        .observe(candidate.solve_seconds);
    state
        .metrics
        .predicted_model_imbalance
        .with_label_values(&[cluster])
        .set(candidate.predicted);

    let streak = match trigger {
        Trigger::Scheduled { .. } => state
            .store
            .decisions(cluster, 1)
            .await?
            .first()
            .map_or(0, |d| d.streak.clamp(0, i64::from(u32::MAX)) as u32),
        Trigger::Rebalance { .. } => 0,
    };
    let verdict = decide::decide(
        &Evidence {
            current: candidate.current,
            candidate: candidate.predicted,
            migrations: candidate.migrations.unwrap_or(0),
            total_slots: topology.num_layers() * topology.num_slots(),
            forced: matches!(trigger, Trigger::Rebalance { .. }),
            must_replace: candidate.current_uses_excluded,
            streak,
        },
        &state.config.thresholds,
    );
    let figures = Figures {
        base_version,
        current_imbalance: candidate.current,
        predicted_imbalance: candidate.predicted,
        migrations: candidate.migrations,
        migrated_bytes: candidate
            .migrations
            .zip(topology.expert_bytes())
            .map(|(m, b)| m as u64 * b),
        net_gain: verdict.net_gain,
        solve_seconds: candidate.solve_seconds,
        load_windows: windows.len(),
        excluded_gpus: excluded,
    };
    let detail = explain(&verdict, &figures, state);
    let now = now_ms();
    let decision = |published: bool| DecisionRow {
        cluster: cluster.to_owned(),
        cycle: match trigger {
            Trigger::Scheduled { cycle } => cycle,
            Trigger::Rebalance { .. } => 0,
        },
        decided_at_ms: now,
        lineage: info.lineage,
        base_version,
        published_version: None,
        reason: verdict.reason.as_str().into(),
        detail: detail.clone(),
        observed_imbalance: candidate.current,
        predicted_imbalance: Some(candidate.predicted),
        migrations: candidate.migrations.map(|m| m as i64),
        net_gain: verdict.net_gain,
        streak: if published {
            0
        } else {
            i64::from(verdict.streak)
        },
    };

    if let Trigger::Rebalance { dry_run: true } = trigger {
        let doc = document(
            cluster,
            None,
            info.lineage,
            now,
            verdict.reason,
            &topology,
            &candidate,
            &figures,
        );
        return Ok(Report {
            outcome: Outcome::DryRun(Box::new(doc)),
            reason: verdict.reason.as_str(),
            detail,
            figures,
        });
    }
    if !verdict.publish {
        if let Trigger::Scheduled { .. } = trigger {
            state.store.record_decision(&decision(false)).await?;
        }
        return Ok(Report {
            outcome: Outcome::Skipped,
            reason: verdict.reason.as_str(),
            detail,
            figures,
        });
    }
    let mut row = decision(true);
    if let Trigger::Rebalance { .. } = trigger {
        row.cycle = state.store.next_cycle(cluster).await?.unwrap_or(0);
    }
    let lineage = info.lineage;
    let outcome = state
        .store
        .publish(
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
                    &candidate,
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
        )
        .await?;
    match outcome {
        PublishOutcome::Superseded { latest } => Err(CycleError::Superseded { latest }),
        PublishOutcome::Published(row) => {
            let published = Arc::new(PublishedPlan {
                version: row.version,
                lineage: row.lineage,
                created_at_ms: row.created_at_ms,
                reason: row.reason.clone(),
                topology: topology.clone(),
                plan: candidate.plan.clone(),
                body: row.document.clone().into(),
                etag: crate::plan_cache::etag(row.version),
            });
            state.registry.announce(cluster, published.clone());
            let m = &state.metrics;
            m.plan_version
                .with_label_values(&[cluster])
                .set(row.version);
            let migrations = candidate.migrations.unwrap_or(0) as i64;
            m.plan_migrations
                .with_label_values(&[cluster])
                .set(migrations);
            let floor = candidate
                .stats
                .replan
                .as_ref()
                .and_then(|r| r.migrations_bound)
                .unwrap_or(0) as i64;
            m.plan_migrations_bound
                .with_label_values(&[cluster])
                .set(floor);
            m.migrations_total
                .with_label_values(&[cluster])
                .inc_by(migrations as u64);
            info!(version = row.version, reason = row.reason, "published plan");
            Ok(Report {
                outcome: Outcome::Published(published),
                reason: verdict.reason.as_str(),
                detail,
                figures,
            })
        }
    }
}

fn to_matrix(flat: &[f64], topology: &Topology) -> Result<LoadMatrix, StoreError> {
    let rows = flat
        .chunks_exact(topology.num_logical_experts())
        .map(<[f64]>::to_vec)
        .collect();
    LoadMatrix::new(rows, topology).map_err(|e| StoreError::Corrupt {
        what: "load window",
        detail: e.to_string(),
    })
}

/// Exports the current plan's imbalance on the latest closed window.
fn observe(
    state: &AppState,
    cluster: &str,
    topology: &Topology,
    plan: &Plan,
    latest: &[f64],
) -> Result<(), StoreError> {
    let load = to_matrix(latest, topology)?;
    let s = score::score(topology, &load, plan);
    let m = &state.metrics;
    m.observed_model_imbalance
        .with_label_values(&[cluster])
        .set(s.model_imbalance);
    for (layer, l) in s.layers.iter().enumerate() {
        m.observed_layer_imbalance
            .with_label_values(&[cluster, &layer.to_string()])
            .set(l.imbalance);
    }
    Ok(())
}

fn explain(v: &Verdict, f: &Figures, state: &AppState) -> String {
    let t = &state.config.thresholds;
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

/// The plan document (SPEC plan.json plus what the service adds). It carries
/// its topology so any version can be exported or diffed on its own.
#[allow(clippy::too_many_arguments)]
fn document(
    cluster: &str,
    version: Option<i64>,
    lineage: i64,
    created_at_ms: i64,
    reason: Reason,
    topology: &Topology,
    candidate: &Candidate,
    figures: &Figures,
) -> PlanDocument {
    // Without `log2phy`/`logcnt`: they derive from `phy2log` and are ten
    // times its size (decode: 0.9 MB of 1 MB), which every poller would
    // download. Engines that want them ask for an export (`?format=`).
    PlanDocument {
        phy2log: candidate.plan.phy2log().to_vec(),
        replica_share: candidate.plan.replica_share().map(<[Vec<f64>]>::to_vec),
        cluster: cluster.to_owned(),
        version,
        lineage,
        created_at: crate::api::rfc3339(created_at_ms),
        reason: reason.as_str().to_owned(),
        topology: Some(topology.to_spec()),
        stats: PlanStats::new(&candidate.stats, &PlanFigures::from(figures)),
    }
}
