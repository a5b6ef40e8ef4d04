//! Telemetry: idempotent ingest of worker windows, and the fold that sums
//! them into per-cluster load windows.
//!
//! Ingest stages windows in short transactions, several windows per commit
//! when they arrive together (see [`crate::ingest_queue`]). Staged windows are folded into `load_windows`
//! by the planner, under the cluster lock, and deleted in the same
//! transaction, so each accepted window is counted exactly once even when
//! the process dies mid-fold.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{to_usize, Store, StoreResult, WriteTx};
use crate::domain::load_codec;

/// The outcome of storing one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// New window, staged durably.
    Accepted,
    /// `(worker, seq)` was accepted before; nothing changed.
    Duplicate,
    /// `seq` is below the worker's last accepted one and was never accepted.
    NotMonotone { last_seq: i64 },
    /// The worker is not part of the cluster's current topology.
    UnknownWorker,
}

/// One window to stage.
#[derive(Debug, Clone)]
pub struct StagedWindow {
    pub cluster: String,
    pub lineage: i64,
    pub worker: String,
    pub seq: i64,
    pub bucket: i64,
    pub load: Vec<u8>,
}

/// What a fold did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldOutcome {
    /// Staged rows removed (including ones of an older lineage, dropped).
    pub consumed: usize,
    /// Windows added to load windows.
    pub windows: usize,
    pub buckets: usize,
}

/// One aggregated cluster window.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadWindow {
    pub bucket: i64,
    /// Worker windows summed into it.
    pub windows: usize,
    /// `L x E`, row-major.
    pub load: Vec<f64>,
}

impl Store {
    /// Stores a batch of windows in one transaction (group commit): either
    /// every outcome holds or, on error, nothing of the batch was stored.
    /// A `(worker, seq)` repeated inside the batch counts once.
    pub async fn ingest_batch(
        &self,
        windows: &[StagedWindow],
        now_ms: i64,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let mut tx = self.write().await?;
        let mut outcomes = Vec::with_capacity(windows.len());
        for w in windows {
            outcomes.push(stage(&mut tx, w, now_ms).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Folds up to `limit` staged windows of `cluster` into their load
    /// windows (`len` = L x E values each). Windows staged under an older
    /// lineage no longer fit and are dropped.
    pub async fn fold(
        &self,
        cluster: &str,
        lineage: i64,
        len: usize,
        limit: usize,
        now_ms: i64,
    ) -> StoreResult<FoldOutcome> {
        let mut tx = self.write().await?;
        self.lock_cluster(&mut tx, cluster).await?;
        let rows = sqlx::query(
            "SELECT worker, seq, lineage, bucket, load FROM telemetry_pending WHERE cluster = $1 LIMIT $2",
        )
        .bind(cluster)
        .bind(limit as i64)
        .fetch_all(&mut *tx.tx)
        .await?;
        if rows.is_empty() {
            return Ok(FoldOutcome::default());
        }
        let mut sums: BTreeMap<i64, (usize, Vec<f64>)> = BTreeMap::new();
        let mut windows = 0;
        for row in &rows {
            let worker: String = row.try_get("worker")?;
            let seq: i64 = row.try_get("seq")?;
            if row.try_get::<i64, _>("lineage")? == lineage {
                let blob: Vec<u8> = row.try_get("load")?;
                let entry = sums
                    .entry(row.try_get("bucket")?)
                    .or_insert_with(|| (0, vec![0.0; len]));
                load_codec::add_into(&blob, &mut entry.1)?;
                entry.0 += 1;
                windows += 1;
            }
            sqlx::query(
                "DELETE FROM telemetry_pending WHERE cluster = $1 AND worker = $2 AND seq = $3",
            )
            .bind(cluster)
            .bind(&worker)
            .bind(seq)
            .execute(&mut *tx.tx)
            .await?;
        }
        for (&bucket, (count, sum)) in &mut sums {
            let existing = sqlx::query(
                "SELECT windows, load FROM load_windows WHERE cluster = $1 AND lineage = $2 AND bucket = $3",
            )
            .bind(cluster)
            .bind(lineage)
            .bind(bucket)
            .fetch_optional(&mut *tx.tx)
            .await?;
            if let Some(row) = existing {
                let blob: Vec<u8> = row.try_get("load")?;
                load_codec::add_into(&blob, sum)?;
                *count += to_usize("window count", row.try_get("windows")?)?;
            }
            sqlx::query(
                "INSERT INTO load_windows (cluster, lineage, bucket, windows, load, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (cluster, lineage, bucket)
                 DO UPDATE SET windows = excluded.windows, load = excluded.load, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(cluster)
            .bind(lineage)
            .bind(bucket)
            .bind(*count as i64)
            .bind(load_codec::encode_f64(sum))
            .bind(now_ms)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await?;
        Ok(FoldOutcome {
            consumed: rows.len(),
            windows,
            buckets: sums.len(),
        })
    }

    /// The newest `limit` load windows of a lineage with `bucket < before`,
    /// oldest first.
    pub async fn load_windows(
        &self,
        cluster: &str,
        lineage: i64,
        before: i64,
        limit: usize,
        len: usize,
    ) -> StoreResult<Vec<LoadWindow>> {
        let rows = sqlx::query(
            "SELECT bucket, windows, load FROM load_windows
             WHERE cluster = $1 AND lineage = $2 AND bucket < $3
             ORDER BY bucket DESC LIMIT $4",
        )
        .bind(cluster)
        .bind(lineage)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut out = rows
            .iter()
            .map(|row| {
                let blob: Vec<u8> = row.try_get("load")?;
                Ok(LoadWindow {
                    bucket: row.try_get("bucket")?,
                    windows: to_usize("window count", row.try_get("windows")?)?,
                    load: load_codec::decode(&blob, len)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Staged windows not folded yet.
    pub async fn pending_windows(&self, cluster: &str) -> StoreResult<usize> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM telemetry_pending WHERE cluster = $1")
                .bind(cluster)
                .fetch_one(self.pool())
                .await?;
        to_usize("count", n)
    }

    /// Drops load windows older than `windows_before_bucket` and receipts
    /// older than `receipts_before_ms`.
    pub async fn prune(
        &self,
        cluster: &str,
        windows_before_bucket: i64,
        receipts_before_ms: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let a = sqlx::query("DELETE FROM load_windows WHERE cluster = $1 AND bucket < $2")
            .bind(cluster)
            .bind(windows_before_bucket)
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        let b = sqlx::query(
            "DELETE FROM telemetry_receipts WHERE cluster = $1 AND received_at_ms < $2",
        )
        .bind(cluster)
        .bind(receipts_before_ms)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(a + b)
    }
}

/// Stages one window inside `tx`: advance the worker's `last_seq` (the
/// monotonicity check and the row lock in one statement), record the
/// receipt, stage the load.
async fn stage(tx: &mut WriteTx<'_>, w: &StagedWindow, now_ms: i64) -> StoreResult<IngestOutcome> {
    let advanced = sqlx::query(
        "UPDATE workers SET last_seq = $3, last_seen_at_ms = $4, down_since_ms = NULL
         WHERE cluster = $1 AND name = $2 AND last_seq < $3",
    )
    .bind(&w.cluster)
    .bind(&w.worker)
    .bind(w.seq)
    .bind(now_ms)
    .execute(&mut *tx.tx)
    .await?
    .rows_affected();
    if advanced == 0 {
        let seen = sqlx::query(
            "SELECT 1 FROM telemetry_receipts WHERE cluster = $1 AND worker = $2 AND seq = $3",
        )
        .bind(&w.cluster)
        .bind(&w.worker)
        .bind(w.seq)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if seen.is_some() {
            return Ok(IngestOutcome::Duplicate);
        }
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM workers WHERE cluster = $1 AND name = $2")
                .bind(&w.cluster)
                .bind(&w.worker)
                .fetch_optional(&mut *tx.tx)
                .await?;
        return Ok(match last {
            Some(last_seq) => IngestOutcome::NotMonotone { last_seq },
            None => IngestOutcome::UnknownWorker,
        });
    }
    sqlx::query(
        "INSERT INTO telemetry_receipts (cluster, worker, seq, received_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&w.cluster)
    .bind(&w.worker)
    .bind(w.seq)
    .bind(now_ms)
    .execute(&mut *tx.tx)
    .await?;
    sqlx::query(
        "INSERT INTO telemetry_pending (cluster, worker, seq, lineage, bucket, load) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&w.cluster)
    .bind(&w.worker)
    .bind(w.seq)
    .bind(w.lineage)
    .bind(w.bucket)
    .bind(&w.load)
    .execute(&mut *tx.tx)
    .await?;
    Ok(IngestOutcome::Accepted)
}
