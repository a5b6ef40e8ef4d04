//! Workers: liveness and the plan version each one applied.

use crate::domain::{ClusterName, WorkerName};
use sqlx::Row;

use super::{to_usize, Store, StoreResult};

/// A worker as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub name: String,
    pub gpu: usize,
    pub last_seq: i64,
    pub last_seen_at_ms: Option<i64>,
    pub down_since_ms: Option<i64>,
    pub applied_version: Option<i64>,
    pub applied_at_ms: Option<i64>,
}

/// Result of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Recorded,
    UnknownWorker,
    UnknownVersion,
}

impl Store {
    /// Ordered by GPU.
    pub async fn workers(&self, cluster: &ClusterName) -> StoreResult<Vec<WorkerRow>> {
        let rows = sqlx::query(
            "SELECT name, gpu, last_seq, last_seen_at_ms, down_since_ms, applied_version, applied_at_ms
             FROM workers WHERE cluster = $1 ORDER BY gpu",
        )
        .bind(cluster.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRow {
                    name: r.try_get("name")?,
                    gpu: to_usize("gpu", r.try_get("gpu")?)?,
                    last_seq: r.try_get("last_seq")?,
                    last_seen_at_ms: r.try_get("last_seen_at_ms")?,
                    down_since_ms: r.try_get("down_since_ms")?,
                    applied_version: r.try_get("applied_version")?,
                    applied_at_ms: r.try_get("applied_at_ms")?,
                })
            })
            .collect()
    }

    /// Records that `worker` runs plan `version` (which must exist).
    pub async fn ack(
        &self,
        cluster: &ClusterName,
        worker: &WorkerName,
        version: i64,
        now_ms: i64,
    ) -> StoreResult<AckOutcome> {
        let mut tx = self.write().await?;
        let exists = sqlx::query("SELECT 1 FROM plans WHERE cluster = $1 AND version = $2")
            .bind(cluster.as_str())
            .bind(version)
            .fetch_optional(&mut *tx.tx)
            .await?;
        if exists.is_none() {
            return Ok(AckOutcome::UnknownVersion);
        }
        let updated = sqlx::query(
            "UPDATE workers SET applied_version = $3, applied_at_ms = $4 WHERE cluster = $1 AND name = $2",
        )
        .bind(cluster.as_str())
        .bind(worker.as_str())
        .bind(version)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(AckOutcome::UnknownWorker);
        }
        sqlx::query(
            "INSERT INTO acks (cluster, worker, version, acked_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (cluster, worker, version) DO NOTHING",
        )
        .bind(cluster.as_str())
        .bind(worker.as_str())
        .bind(version)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(AckOutcome::Recorded)
    }

    /// Marks workers silent since before `silent_before_ms` as down. Workers
    /// never heard from stay "unknown": they may not report telemetry at all.
    pub async fn mark_down(
        &self,
        cluster: &ClusterName,
        silent_before_ms: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let n = sqlx::query(
            "UPDATE workers SET down_since_ms = $3
             WHERE cluster = $1 AND down_since_ms IS NULL AND last_seen_at_ms IS NOT NULL AND last_seen_at_ms < $2",
        )
        .bind(cluster.as_str())
        .bind(silent_before_ms)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
