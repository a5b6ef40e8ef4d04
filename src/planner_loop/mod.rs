//! The planner loop: every `--tick` it marks silent workers down, prunes old
//! windows, refreshes worker and rollout metrics, and runs each cluster's
//! planner cycle when one is due (`--plan-interval`, claimed in the database
//! so that only one replica plans a cluster per interval).
//!
//! The loop beats [`Heartbeat`](crate::state::Heartbeat) between steps; a
//! step that hangs (a stuck solve, a database that never answers) stops the
//! beats and turns `/readyz` red.

pub mod cycle;

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{info_span, warn, Instrument};

use crate::plan_cache::ClusterEntry;
use crate::state::AppState;
use crate::store::StoreError;
use crate::time::{millis, now_ms};

/// Ticks between retention sweeps.
const PRUNE_EVERY_TICKS: u64 = 60;

/// Runs until shutdown.
pub async fn run(state: AppState) {
    let mut ticker = tokio::time::interval(state.config.tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutting_down() => return,
        }
        state.heartbeat.beat();
        state
            .metrics
            .planner_heartbeat
            .with_label_values(&[] as &[&str])
            .set(now_ms() as f64 / 1000.0);
        for entry in state.plan_cache.entries() {
            if *state.shutdown.borrow() {
                return;
            }
            let name = entry.info().name.clone();
            let step = tick_cluster(&state, &entry, tick)
                .instrument(info_span!("planner_tick", cluster = %name));
            if let Err(err) = step.await {
                state.metrics.planner_errors.inc();
                warn!(cluster = %name, error = %err, "planner tick failed");
            }
            state.heartbeat.beat();
        }
        tick = tick.wrapping_add(1);
    }
}

async fn tick_cluster(state: &AppState, entry: &ClusterEntry, tick: u64) -> Result<(), StoreError> {
    let info = entry.info();
    let cluster = &info.name;
    let config = &state.config;
    let now = now_ms();
    state
        .store
        .mark_down(cluster, now - millis(config.worker_timeout), now)
        .await?;
    if tick.is_multiple_of(PRUNE_EVERY_TICKS) {
        let oldest = config.windows().bucket_of(now - millis(config.retention));
        state
            .store
            .prune(cluster, oldest, now - millis(config.dedup_horizon))
            .await?;
    }
    export_worker_metrics(state, entry, now).await?;
    let interval_ms = millis(config.plan_interval);
    if let Some(cycle_no) = state.store.claim_cycle(cluster, now, interval_ms).await? {
        match cycle::run(state, entry, cycle::Trigger::Scheduled { cycle: cycle_no }).await {
            Ok(_)
            | Err(cycle::CycleError::NoTelemetry)
            | Err(cycle::CycleError::Superseded { .. }) => {}
            Err(cycle::CycleError::Store(err)) => return Err(err),
            Err(err) => warn!(%cluster, error = %err, "planner cycle failed"),
        }
    }
    Ok(())
}

async fn export_worker_metrics(
    state: &AppState,
    entry: &ClusterEntry,
    now: i64,
) -> Result<(), StoreError> {
    let info = entry.info();
    let cluster = &info.name;
    let workers = state.store.workers(cluster).await?;
    let (mut up, mut down, mut unknown) = (0, 0, 0);
    for w in &workers {
        match (w.last_seen_at_ms, w.down_since_ms) {
            (None, _) => unknown += 1,
            (Some(_), Some(_)) => down += 1,
            (Some(_), None) => up += 1,
        }
    }
    let m = &state.metrics;
    for (label, n) in [("up", up), ("down", down), ("unknown", unknown)] {
        m.workers
            .with_label_values(&[cluster.as_str(), label])
            .set(n);
    }
    if let Some(latest) = entry.latest() {
        let pending = workers
            .iter()
            .filter(|w| w.applied_version != Some(latest.version))
            .count() as i64;
        m.rollout_pending_gpus
            .with_label_values(&[cluster.as_str()])
            .set(pending);
        // While GPUs are pending the gauge grows; once the last one acked it
        // keeps the time the rollout took (as of the last tick that saw it
        // pending) instead of dropping to 0, which would read as "instant".
        if pending > 0 {
            let age = Duration::from_millis(now.saturating_sub(latest.created_at_ms).max(0) as u64);
            m.rollout_seconds
                .with_label_values(&[cluster.as_str()])
                .set(age.as_secs_f64());
        }
        m.plan_version
            .with_label_values(&[cluster.as_str()])
            .set(latest.version);
        m.plan_published
            .with_label_values(&[cluster.as_str()])
            .set(latest.created_at_ms as f64 / 1000.0);
    }
    Ok(())
}
