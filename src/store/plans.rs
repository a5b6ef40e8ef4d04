//! Published plans: immutable rows, one version sequence per cluster.
//!
//! Versions are allocated inside the publishing transaction, under the
//! cluster lock, as `max(version) + 1` — and only if the latest version is
//! still the one the candidate was computed against. Together with the
//! primary key this keeps versions gap-free and unforked across replicas.

use crate::domain::ClusterName;
use sqlx::Row;

use super::decisions::DecisionRow;
use super::{cluster_name, Store, StoreResult};

/// A stored plan.
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub cluster: ClusterName,
    pub version: i64,
    pub lineage: i64,
    pub created_at_ms: i64,
    pub reason: String,
    /// The exact JSON body served for this version.
    pub document: String,
}

/// A plan's listing entry (no document).
#[derive(Debug, Clone)]
pub struct PlanSummary {
    pub version: i64,
    pub lineage: i64,
    pub created_at_ms: i64,
    pub reason: String,
    pub stats: String,
}

/// The result of trying to publish.
#[derive(Debug)]
pub enum PublishOutcome {
    Published(PlanRow),
    /// Another publisher got there first: the latest version is now this.
    Superseded {
        latest: Option<i64>,
    },
}

/// What a publisher provides once it knows its version number.
pub struct NewPlan {
    pub lineage: i64,
    pub reason: String,
    pub stats: String,
    pub document: String,
}

/// Per cluster: its lineage and the latest plan of that lineage (for replicas
/// that watch for other replicas' publications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHead {
    pub cluster: ClusterName,
    pub lineage: i64,
    /// Tells a cluster deleted and created again from the one before.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub latest_version: Option<i64>,
}

fn plan_row(row: &sqlx::any::AnyRow) -> StoreResult<PlanRow> {
    Ok(PlanRow {
        cluster: cluster_name(row, "cluster")?,
        version: row.try_get("version")?,
        lineage: row.try_get("lineage")?,
        created_at_ms: row.try_get("created_at_ms")?,
        reason: row.try_get("reason")?,
        document: row.try_get("document")?,
    })
}

impl Store {
    /// Publishes the next version if the latest is still `expected_latest`.
    /// `build` gets the new version number and returns the plan; `decision`
    /// (if any) is recorded in the same transaction.
    pub async fn publish(
        &self,
        cluster: &ClusterName,
        expected_latest: Option<i64>,
        now_ms: i64,
        build: impl FnOnce(i64) -> NewPlan,
        decision: Option<DecisionRow>,
    ) -> StoreResult<PublishOutcome> {
        let mut tx = self.write().await?;
        self.lock_cluster(&mut tx, cluster).await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM plans WHERE cluster = $1")
                .bind(cluster.as_str())
                .fetch_one(&mut *tx.tx)
                .await?;
        if latest != expected_latest {
            return Ok(PublishOutcome::Superseded { latest });
        }
        let version = latest.unwrap_or(0) + 1;
        let plan = build(version);
        sqlx::query(
            "INSERT INTO plans (cluster, version, lineage, created_at_ms, reason, stats, document)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(cluster.as_str())
        .bind(version)
        .bind(plan.lineage)
        .bind(now_ms)
        .bind(&plan.reason)
        .bind(&plan.stats)
        .bind(&plan.document)
        .execute(&mut *tx.tx)
        .await?;
        if let Some(mut decision) = decision {
            decision.published_version = Some(version);
            self.insert_decision(&mut tx, &decision).await?;
        }
        self.announce_change(&mut tx, cluster).await?;
        tx.commit().await?;
        Ok(PublishOutcome::Published(PlanRow {
            cluster: cluster.to_owned(),
            version,
            lineage: plan.lineage,
            created_at_ms: now_ms,
            reason: plan.reason,
            document: plan.document,
        }))
    }

    pub async fn plan(&self, cluster: &ClusterName, version: i64) -> StoreResult<Option<PlanRow>> {
        let row = sqlx::query(
            "SELECT cluster, version, lineage, created_at_ms, reason, document FROM plans WHERE cluster = $1 AND version = $2",
        )
        .bind(cluster.as_str())
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(plan_row).transpose()
    }

    /// The latest plan of a lineage.
    pub async fn latest_plan(
        &self,
        cluster: &ClusterName,
        lineage: i64,
    ) -> StoreResult<Option<PlanRow>> {
        let row = sqlx::query(
            "SELECT cluster, version, lineage, created_at_ms, reason, document FROM plans
             WHERE cluster = $1 AND lineage = $2 ORDER BY version DESC LIMIT 1",
        )
        .bind(cluster.as_str())
        .bind(lineage)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(plan_row).transpose()
    }

    /// The latest version of the cluster, any lineage.
    pub async fn latest_version(&self, cluster: &ClusterName) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT max(version) FROM plans WHERE cluster = $1")
                .bind(cluster.as_str())
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Newest first.
    pub async fn plan_summaries(
        &self,
        cluster: &ClusterName,
        limit: usize,
    ) -> StoreResult<Vec<PlanSummary>> {
        let rows = sqlx::query(
            "SELECT version, lineage, created_at_ms, reason, stats FROM plans
             WHERE cluster = $1 ORDER BY version DESC LIMIT $2",
        )
        .bind(cluster.as_str())
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PlanSummary {
                    version: row.try_get("version")?,
                    lineage: row.try_get("lineage")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    reason: row.try_get("reason")?,
                    stats: row.try_get("stats")?,
                })
            })
            .collect()
    }

    /// Every cluster's lineage and latest plan version in that lineage.
    pub async fn cluster_heads(&self) -> StoreResult<Vec<ClusterHead>> {
        let rows = sqlx::query(
            "SELECT c.name, c.lineage, c.created_at_ms, c.updated_at_ms,
                    (SELECT max(p.version) FROM plans p WHERE p.cluster = c.name AND p.lineage = c.lineage) AS latest
             FROM clusters c",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClusterHead {
                    cluster: cluster_name(row, "name")?,
                    lineage: row.try_get("lineage")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                    latest_version: row.try_get("latest")?,
                })
            })
            .collect()
    }
}
