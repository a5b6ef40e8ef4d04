//! Planner cycles: claiming them, and recording why each candidate was
//! published or skipped.

use crate::domain::ClusterName;
use sqlx::Row;

use super::{cluster_name, NullableF64, Store, StoreResult, WriteTx};

/// One planner decision as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    pub cluster: ClusterName,
    pub cycle: i64,
    pub decided_at_ms: i64,
    pub lineage: i64,
    pub base_version: Option<i64>,
    pub published_version: Option<i64>,
    pub reason: String,
    pub detail: String,
    pub observed_imbalance: Option<f64>,
    pub predicted_imbalance: Option<f64>,
    pub migrations: Option<i64>,
    pub net_gain: Option<f64>,
    /// Consecutive cycles the gain has stayed armed (hysteresis state).
    pub streak: i64,
}

impl Store {
    /// Claims the next planner cycle of `cluster` unless one started less
    /// than `interval_ms` ago (on any replica). Returns the cycle number.
    pub async fn claim_cycle(
        &self,
        cluster: &ClusterName,
        now_ms: i64,
        interval_ms: i64,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.write().await?;
        let cycle: Option<i64> = sqlx::query_scalar(
            "UPDATE clusters SET last_cycle_at_ms = $2, cycles = cycles + 1
             WHERE name = $1 AND last_cycle_at_ms <= $3 RETURNING cycles",
        )
        .bind(cluster.as_str())
        .bind(now_ms)
        .bind(now_ms - interval_ms)
        .fetch_optional(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(cycle)
    }

    /// A cycle number for an out-of-schedule decision (manual rebalance).
    pub async fn next_cycle(&self, cluster: &ClusterName) -> StoreResult<Option<i64>> {
        let mut tx = self.write().await?;
        let cycle: Option<i64> = sqlx::query_scalar(
            "UPDATE clusters SET cycles = cycles + 1 WHERE name = $1 RETURNING cycles",
        )
        .bind(cluster.as_str())
        .fetch_optional(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(cycle)
    }

    pub(crate) async fn insert_decision(
        &self,
        tx: &mut WriteTx<'_>,
        d: &DecisionRow,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO planner_decisions (cluster, cycle, decided_at_ms, lineage, base_version, published_version,
                reason, detail, observed_imbalance, predicted_imbalance, migrations, net_gain, streak)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(d.cluster.as_str())
        .bind(d.cycle)
        .bind(d.decided_at_ms)
        .bind(d.lineage)
        .bind(d.base_version)
        .bind(d.published_version)
        .bind(&d.reason)
        .bind(&d.detail)
        .bind(NullableF64(d.observed_imbalance))
        .bind(NullableF64(d.predicted_imbalance))
        .bind(d.migrations)
        .bind(NullableF64(d.net_gain))
        .bind(d.streak)
        .execute(&mut *tx.tx)
        .await?;
        Ok(())
    }

    /// Records a decision that published nothing.
    pub async fn record_decision(&self, d: &DecisionRow) -> StoreResult<()> {
        let mut tx = self.write().await?;
        self.insert_decision(&mut tx, d).await?;
        tx.commit().await
    }

    /// Newest first.
    pub async fn decisions(
        &self,
        cluster: &ClusterName,
        limit: usize,
    ) -> StoreResult<Vec<DecisionRow>> {
        let rows = sqlx::query(
            "SELECT cluster, cycle, decided_at_ms, lineage, base_version, published_version, reason, detail,
                    observed_imbalance, predicted_imbalance, migrations, net_gain, streak
             FROM planner_decisions WHERE cluster = $1 ORDER BY cycle DESC LIMIT $2",
        )
        .bind(cluster.as_str())
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRow {
                    cluster: cluster_name(r, "cluster")?,
                    cycle: r.try_get("cycle")?,
                    decided_at_ms: r.try_get("decided_at_ms")?,
                    lineage: r.try_get("lineage")?,
                    base_version: r.try_get("base_version")?,
                    published_version: r.try_get("published_version")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    observed_imbalance: r.try_get("observed_imbalance")?,
                    predicted_imbalance: r.try_get("predicted_imbalance")?,
                    migrations: r.try_get("migrations")?,
                    net_gain: r.try_get("net_gain")?,
                    streak: r.try_get("streak")?,
                })
            })
            .collect()
    }
}
