//! Clusters and their topology (with the worker rows it implies).

use ballast_solver::Topology;
use sqlx::Row;

use super::{cluster_name, Store, StoreError, StoreResult};
use crate::domain::{ClusterName, WorkerName};

/// A cluster as stored.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    pub name: ClusterName,
    pub topology: Topology,
    pub lineage: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a topology PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub created: bool,
    /// The topology differed from the stored one.
    pub changed: bool,
    pub lineage: i64,
    /// Latest plan of the previous lineage, when a change retired it.
    pub retired_version: Option<i64>,
}

/// The canonical text a topology is stored (and compared) as.
pub fn canonical_topology(topology: &Topology) -> String {
    // A TopologySpec is plain numbers and vectors: serialising cannot fail.
    serde_json::to_string(&topology.to_spec()).unwrap_or_default()
}

fn parse_row(row: &sqlx::any::AnyRow) -> StoreResult<ClusterRow> {
    let text: String = row.try_get("topology")?;
    let topology = Topology::from_json(&text).map_err(|e| StoreError::Corrupt {
        what: "topology",
        detail: e.to_string(),
    })?;
    Ok(ClusterRow {
        name: cluster_name(row, "name")?,
        topology,
        lineage: row.try_get("lineage")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

const SELECT: &str = "SELECT name, topology, lineage, created_at_ms, updated_at_ms FROM clusters";

impl Store {
    pub async fn cluster(&self, name: &ClusterName) -> StoreResult<Option<ClusterRow>> {
        let row = sqlx::query("SELECT name, topology, lineage, created_at_ms, updated_at_ms FROM clusters WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(parse_row).transpose()
    }

    pub async fn clusters(&self) -> StoreResult<Vec<ClusterRow>> {
        let rows = sqlx::query(SELECT).fetch_all(self.pool()).await?;
        rows.iter().map(parse_row).collect()
    }

    /// Creates or updates a cluster (its first planner cycle is due one
    /// plan interval later, once telemetry has had time to arrive). A changed topology starts a new lineage:
    /// its workers and load windows are replaced, since
    /// none of them fit the new shape; published plans stay readable.
    pub async fn put_cluster(
        &self,
        name: &ClusterName,
        topology: &Topology,
        now_ms: i64,
    ) -> StoreResult<PutOutcome> {
        let text = canonical_topology(topology);
        let mut tx = self.write().await?;
        self.lock_cluster(&mut tx, name).await?;
        let existing = sqlx::query("SELECT topology, lineage FROM clusters WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx.tx)
            .await?;
        let outcome = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO clusters (name, topology, lineage, created_at_ms, updated_at_ms, last_cycle_at_ms, cycles)
                     VALUES ($1, $2, 1, $3, $3, $3, 0)",
                )
                .bind(name.as_str())
                .bind(&text)
                .bind(now_ms)
                .execute(&mut *tx.tx)
                .await?;
                PutOutcome {
                    created: true,
                    changed: true,
                    lineage: 1,
                    retired_version: None,
                }
            }
            Some(row) => {
                let old_text: String = row.try_get("topology")?;
                let old_lineage: i64 = row.try_get("lineage")?;
                if old_text == text {
                    tx.tx.rollback().await?;
                    return Ok(PutOutcome {
                        created: false,
                        changed: false,
                        lineage: old_lineage,
                        retired_version: None,
                    });
                }
                let retired_version: Option<i64> = sqlx::query_scalar(
                    "SELECT max(version) FROM plans WHERE cluster = $1 AND lineage = $2",
                )
                .bind(name.as_str())
                .bind(old_lineage)
                .fetch_one(&mut *tx.tx)
                .await?;
                let lineage = old_lineage + 1;
                sqlx::query("UPDATE clusters SET topology = $2, lineage = $3, updated_at_ms = $4 WHERE name = $1")
                    .bind(name.as_str())
                    .bind(&text)
                    .bind(lineage)
                    .bind(now_ms)
                    .execute(&mut *tx.tx)
                    .await?;
                // Receipts are per lineage; the old lineage's can never
                // match again.
                for table in [
                    "DELETE FROM workers WHERE cluster = $1",
                    "DELETE FROM load_window_layers WHERE cluster = $1",
                    "DELETE FROM load_window_covisit WHERE cluster = $1",
                    "DELETE FROM telemetry_receipts WHERE cluster = $1",
                ] {
                    sqlx::query(table)
                        .bind(name.as_str())
                        .execute(&mut *tx.tx)
                        .await?;
                }
                PutOutcome {
                    created: false,
                    changed: true,
                    lineage,
                    retired_version,
                }
            }
        };
        for gpu in 0..topology.num_gpus() {
            sqlx::query(
                "INSERT INTO workers (cluster, name, gpu, last_seq) VALUES ($1, $2, $3, -1)",
            )
            .bind(name.as_str())
            .bind(WorkerName::of_gpu(gpu, topology).as_str())
            .bind(gpu as i64)
            .execute(&mut *tx.tx)
            .await?;
        }
        self.announce_change(&mut tx, name).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Removes a cluster and everything stored for it (workers, receipts,
    /// load windows, plans, acks, decisions) in one transaction under the
    /// cluster lock, so an ingest batch or a publish sees it whole or not at
    /// all. Returns whether it existed.
    pub async fn delete_cluster(&self, name: &ClusterName) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        self.lock_cluster(&mut tx, name).await?;
        let deleted = sqlx::query("DELETE FROM clusters WHERE name = $1")
            .bind(name.as_str())
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.tx.rollback().await?;
            return Ok(false);
        }
        for statement in [
            "DELETE FROM workers WHERE cluster = $1",
            "DELETE FROM telemetry_receipts WHERE cluster = $1",
            "DELETE FROM load_window_layers WHERE cluster = $1",
            "DELETE FROM load_window_covisit WHERE cluster = $1",
            "DELETE FROM plans WHERE cluster = $1",
            "DELETE FROM acks WHERE cluster = $1",
            "DELETE FROM planner_decisions WHERE cluster = $1",
        ] {
            sqlx::query(statement)
                .bind(name.as_str())
                .execute(&mut *tx.tx)
                .await?;
        }
        self.announce_change(&mut tx, name).await?;
        tx.commit().await?;
        Ok(true)
    }
}
