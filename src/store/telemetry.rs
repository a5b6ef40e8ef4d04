//! Telemetry: idempotent ingest of worker windows straight into per-cluster
//! load windows.
//!
//! A batch of windows (see [`crate::ingest_queue`]) is one transaction: for
//! each window, check that its cluster still has the topology lineage it was
//! validated against, advance the worker's `last_seq` (the monotonicity
//! check and the row lock in one statement) and record the
//! `(lineage, worker, seq)` receipt; then add the accepted windows into
//! their cluster load windows. Receipts are per lineage because a topology
//! change starts every worker's sequence again. The
//! receipts and the sums commit together, so each accepted window is counted
//! exactly once even when the process dies mid-batch, and nothing needs a
//! second pass over raw windows later.
//!
//! Windows are read back newest first for the planner ([`Store::load_windows`])
//! and in pages, oldest first, for a history reader ([`Store::load_windows_in`]);
//! bucket numbers mean times only on the [`WindowGrid`] the service records.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Range, RangeInclusive};

use sqlx::Row;

use super::{to_usize, Store, StoreError, StoreResult, WriteTx};
use ballast_solver::Topology;

use crate::domain::{load_codec, ClusterName, WorkerName};
use crate::time::WindowGrid;

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
    /// The cluster's topology changed after the window was validated
    /// against lineage `validated`; it fits lineage `current` no longer.
    TopologyChanged { validated: i64, current: i64 },
    /// The cluster was deleted after the window was validated.
    ClusterGone,
}

/// One validated window to store.
#[derive(Debug, Clone)]
pub struct StagedWindow {
    pub cluster: ClusterName,
    /// The topology lineage it was validated against.
    pub lineage: i64,
    pub worker: WorkerName,
    pub seq: i64,
    /// The cluster load window it counts towards.
    pub bucket: i64,
    /// Logical load, `L x E` values ([`load_codec`] form).
    pub load: Vec<u8>,
    /// `L x E` of that lineage's topology.
    pub values: usize,
    /// `L` of that lineage's topology.
    pub layers: usize,
    /// Co-visit counts, `L x E x K` row-major ([`load_codec`] form: about
    /// `K` times the load's bytes), when the window carried them.
    pub covisit: Option<Vec<u8>>,
    /// `K` of that lineage's topology.
    pub groups: usize,
}

/// The shape of a lineage's load windows: `L x E` load, `L x E x K`
/// co-visit counts (`groups` 0: read the load alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowShape {
    pub layers: usize,
    pub experts: usize,
    pub groups: usize,
}

impl WindowShape {
    pub fn of(topology: &Topology) -> Self {
        WindowShape {
            layers: topology.num_layers(),
            experts: topology.num_logical_experts(),
            groups: topology.num_groups(),
        }
    }

    /// The same windows without their co-visit counts (`K` times the
    /// load's size), for readers that need the load alone.
    pub fn load_only(self) -> Self {
        WindowShape { groups: 0, ..self }
    }

    fn load_len(self) -> usize {
        self.layers * self.experts
    }
}

/// One aggregated cluster window.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadWindow {
    pub bucket: i64,
    /// Worker windows summed into it.
    pub windows: usize,
    /// `L x E`, row-major.
    pub load: Vec<f64>,
    /// `L x E x K` co-visit counts, row-major, when every worker window
    /// summed into it carried them.
    pub covisit: Option<Vec<f64>>,
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
        // Cluster locks first, in name order: adding into a load window is a
        // read-modify-write that replicas must not interleave, and taking
        // them before any worker row keeps lock order fixed (no deadlocks).
        let clusters: BTreeSet<&ClusterName> = windows.iter().map(|w| &w.cluster).collect();
        let mut lineages: BTreeMap<&str, Option<i64>> = BTreeMap::new();
        for cluster in &clusters {
            self.lock_cluster(&mut tx, cluster).await?;
            // Under the lock a topology PUT (or DELETE) cannot slip in
            // between this read and the commit.
            let lineage: Option<i64> =
                sqlx::query_scalar("SELECT lineage FROM clusters WHERE name = $1")
                    .bind(cluster.as_str())
                    .fetch_optional(&mut *tx.tx)
                    .await?;
            lineages.insert(cluster.as_str(), lineage);
        }
        let mut sums: BTreeMap<(&str, i64, i64), BatchSum> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(windows.len());
        for w in windows {
            let outcome = match lineages.get(w.cluster.as_str()).copied().flatten() {
                None => IngestOutcome::ClusterGone,
                Some(current) if current != w.lineage => IngestOutcome::TopologyChanged {
                    validated: w.lineage,
                    current,
                },
                Some(_) => record_receipt(&mut tx, w, now_ms).await?,
            };
            if outcome == IngestOutcome::Accepted {
                let entry = sums
                    .entry((w.cluster.as_str(), w.lineage, w.bucket))
                    .or_insert_with(|| BatchSum {
                        windows: 0,
                        layers: w.layers,
                        load: vec![0.0; w.values],
                        covisit_windows: 0,
                        covisit: None,
                    });
                load_codec::add_into(&w.load, &mut entry.load)?;
                entry.windows += 1;
                if let Some(counts) = &w.covisit {
                    let sum = entry
                        .covisit
                        .get_or_insert_with(|| vec![0.0; w.values * w.groups]);
                    load_codec::add_into(counts, sum)?;
                    entry.covisit_windows += 1;
                }
            }
            outcomes.push(outcome);
        }
        for ((cluster, lineage, bucket), sum) in &mut sums {
            let window = WindowKey {
                cluster,
                lineage: *lineage,
                bucket: *bucket,
            };
            add_to_load_window(&mut tx, &window, sum, now_ms).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The newest `limit` load windows of a lineage with `bucket < before`,
    /// oldest first, shaped `shape`.
    pub async fn load_windows(
        &self,
        cluster: &ClusterName,
        lineage: i64,
        before: i64,
        limit: usize,
        shape: WindowShape,
    ) -> StoreResult<Vec<LoadWindow>> {
        // One snapshot: a late worker window committed between reading a
        // bucket's load and its co-visit rows would make them disagree.
        let mut tx = self.snapshot().await?;
        let buckets: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT bucket FROM load_window_layers
             WHERE cluster = $1 AND lineage = $2 AND bucket < $3
             ORDER BY bucket DESC LIMIT $4",
        )
        .bind(cluster.as_str())
        .bind(lineage)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let windows = match (buckets.last(), buckets.first()) {
            (Some(&oldest), Some(&newest)) => {
                load_window_rows(&mut tx, cluster, lineage, oldest..=newest, shape).await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(windows)
    }

    /// The oldest `limit` load windows of a lineage with a bucket in
    /// `buckets`, oldest first: one page of a cluster's history, read in
    /// bucket order so that a reader can page through any length of it.
    pub async fn load_windows_in(
        &self,
        cluster: &ClusterName,
        lineage: i64,
        buckets: Range<i64>,
        limit: usize,
        shape: WindowShape,
    ) -> StoreResult<Vec<LoadWindow>> {
        let mut tx = self.snapshot().await?;
        let page: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT bucket FROM load_window_layers
             WHERE cluster = $1 AND lineage = $2 AND bucket >= $3 AND bucket < $4
             ORDER BY bucket LIMIT $5",
        )
        .bind(cluster.as_str())
        .bind(lineage)
        .bind(buckets.start)
        .bind(buckets.end)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let windows = match (page.first(), page.last()) {
            (Some(&oldest), Some(&newest)) => {
                load_window_rows(&mut tx, cluster, lineage, oldest..=newest, shape).await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;
        Ok(windows)
    }

    /// Records the grid this service cuts load windows on (at start), and
    /// returns the one recorded before, if any.
    pub async fn record_window_grid(
        &self,
        grid: WindowGrid,
        now_ms: i64,
    ) -> StoreResult<Option<WindowGrid>> {
        let mut tx = self.write().await?;
        let before = window_grid(&mut tx.tx).await?;
        sqlx::query(
            "INSERT INTO window_grid (id, window_ms, grace_ms, recorded_at_ms) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET window_ms = excluded.window_ms,
                 grace_ms = excluded.grace_ms, recorded_at_ms = excluded.recorded_at_ms",
        )
        .bind(grid.len_ms())
        .bind(grid.grace_ms())
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// The grid the stored load windows were cut on, as the last service
    /// to start recorded it.
    pub async fn window_grid(&self) -> StoreResult<Option<WindowGrid>> {
        let mut conn = self.pool().acquire().await?;
        window_grid(&mut conn).await
    }

    /// Drops load windows older than `windows_before_bucket` and receipts
    /// older than `receipts_before_ms`.
    pub async fn prune(
        &self,
        cluster: &ClusterName,
        windows_before_bucket: i64,
        receipts_before_ms: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let a = sqlx::query("DELETE FROM load_window_layers WHERE cluster = $1 AND bucket < $2")
            .bind(cluster.as_str())
            .bind(windows_before_bucket)
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        let covisit =
            sqlx::query("DELETE FROM load_window_covisit WHERE cluster = $1 AND bucket < $2")
                .bind(cluster.as_str())
                .bind(windows_before_bucket)
                .execute(&mut *tx.tx)
                .await?
                .rows_affected();
        let b = sqlx::query(
            "DELETE FROM telemetry_receipts WHERE cluster = $1 AND received_at_ms < $2",
        )
        .bind(cluster.as_str())
        .bind(receipts_before_ms)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(a + covisit + b)
    }
}

async fn window_grid(conn: &mut sqlx::AnyConnection) -> StoreResult<Option<WindowGrid>> {
    let row = sqlx::query("SELECT window_ms, grace_ms FROM window_grid WHERE id = 1")
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(WindowGrid::from_millis(
            row.try_get("window_ms")?,
            row.try_get("grace_ms")?,
        ))
    })
    .transpose()
}

/// Checks one window of the cluster's current lineage inside `tx` and, when
/// it is new, advances the worker's `last_seq` and records its receipt.
async fn record_receipt(
    tx: &mut WriteTx<'_>,
    w: &StagedWindow,
    now_ms: i64,
) -> StoreResult<IngestOutcome> {
    let advanced = sqlx::query(
        "UPDATE workers SET last_seq = $3, last_seen_at_ms = $4, down_since_ms = NULL
         WHERE cluster = $1 AND name = $2 AND last_seq < $3",
    )
    .bind(w.cluster.as_str())
    .bind(w.worker.as_str())
    .bind(w.seq)
    .bind(now_ms)
    .execute(&mut *tx.tx)
    .await?
    .rows_affected();
    if advanced == 0 {
        let seen = sqlx::query(
            "SELECT 1 FROM telemetry_receipts
             WHERE cluster = $1 AND lineage = $2 AND worker = $3 AND seq = $4",
        )
        .bind(w.cluster.as_str())
        .bind(w.lineage)
        .bind(w.worker.as_str())
        .bind(w.seq)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if seen.is_some() {
            return Ok(IngestOutcome::Duplicate);
        }
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM workers WHERE cluster = $1 AND name = $2")
                .bind(w.cluster.as_str())
                .bind(w.worker.as_str())
                .fetch_optional(&mut *tx.tx)
                .await?;
        return Ok(match last {
            Some(last_seq) => IngestOutcome::NotMonotone { last_seq },
            None => IngestOutcome::UnknownWorker,
        });
    }
    sqlx::query(
        "INSERT INTO telemetry_receipts (cluster, lineage, worker, seq, received_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(w.cluster.as_str())
    .bind(w.lineage)
    .bind(w.worker.as_str())
    .bind(w.seq)
    .bind(now_ms)
    .execute(&mut *tx.tx)
    .await?;
    Ok(IngestOutcome::Accepted)
}

/// Every load window of a lineage with a bucket in `buckets`, oldest
/// first, assembled from its layer rows.
async fn load_window_rows(
    conn: &mut sqlx::AnyConnection,
    cluster: &ClusterName,
    lineage: i64,
    buckets: RangeInclusive<i64>,
    shape: WindowShape,
) -> StoreResult<Vec<LoadWindow>> {
    let (layers, len) = (shape.layers, shape.load_len());
    let rows = sqlx::query(
        "SELECT bucket, layer, windows, load FROM load_window_layers
         WHERE cluster = $1 AND lineage = $2 AND bucket >= $3 AND bucket <= $4
         ORDER BY bucket, layer",
    )
    .bind(cluster.as_str())
    .bind(lineage)
    .bind(*buckets.start())
    .bind(*buckets.end())
    .fetch_all(&mut *conn)
    .await?;
    let width = len / layers.max(1);
    let mut out: Vec<LoadWindow> = Vec::new();
    for row in &rows {
        let bucket: i64 = row.try_get("bucket")?;
        if out.last().is_none_or(|w| w.bucket != bucket) {
            out.push(LoadWindow {
                bucket,
                windows: to_usize("window count", row.try_get("windows")?)?,
                load: vec![0.0; len],
                covisit: None,
            });
        }
        let layer = to_usize("layer", row.try_get("layer")?)?;
        let blob: Vec<u8> = row.try_get("load")?;
        let window = out.last_mut().map(|w| &mut w.load[..]);
        let Some(values) = window.and_then(|w| w.get_mut(layer * width..(layer + 1) * width))
        else {
            return Err(StoreError::Corrupt {
                what: "load window",
                detail: format!("layer {layer} is outside {layers} layers"),
            });
        };
        load_codec::add_into(&blob, values)?;
    }
    attach_covisit(conn, cluster, lineage, buckets, shape, &mut out).await?;
    Ok(out)
}

/// Reads the co-visit rows of `buckets` into `windows` (sorted by
/// bucket): a window gets counts only when all `L x K` rows are there
/// and each sums as many worker windows as its load.
async fn attach_covisit(
    conn: &mut sqlx::AnyConnection,
    cluster: &ClusterName,
    lineage: i64,
    buckets: RangeInclusive<i64>,
    shape: WindowShape,
    windows: &mut [LoadWindow],
) -> StoreResult<()> {
    if shape.groups == 0 {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT bucket, layer, grp, windows, counts FROM load_window_covisit
         WHERE cluster = $1 AND lineage = $2 AND bucket >= $3 AND bucket <= $4
         ORDER BY bucket, layer, grp",
    )
    .bind(cluster.as_str())
    .bind(lineage)
    .bind(*buckets.start())
    .bind(*buckets.end())
    .fetch_all(&mut *conn)
    .await?;
    let WindowShape {
        layers,
        experts,
        groups,
    } = shape;
    let mut row_values = vec![0.0; experts];
    // (window index, rows read, complete so far)
    let mut current: Option<(usize, usize, bool)> = None;
    let finish = |windows: &mut [LoadWindow], current: Option<(usize, usize, bool)>| {
        if let Some((i, rows, complete)) = current {
            if !(complete && rows == layers * groups) {
                windows[i].covisit = None;
            }
        }
    };
    for row in &rows {
        let bucket: i64 = row.try_get("bucket")?;
        let Ok(i) = windows.binary_search_by_key(&bucket, |w| w.bucket) else {
            // Counts of a bucket without load: nothing to attach them to.
            continue;
        };
        if current.is_none_or(|(at, _, _)| at != i) {
            finish(windows, current);
            windows[i].covisit = Some(vec![0.0; shape.load_len() * groups]);
            current = Some((i, 0, true));
        }
        let layer = to_usize("layer", row.try_get("layer")?)?;
        let group = to_usize("group", row.try_get("grp")?)?;
        let counted = to_usize("window count", row.try_get("windows")?)?;
        if layer >= layers || group >= groups {
            return Err(StoreError::Corrupt {
                what: "co-visit counts",
                detail: format!(
                    "row (layer {layer}, group {group}) is outside {layers} layers x {groups} groups"
                ),
            });
        }
        let blob: Vec<u8> = row.try_get("counts")?;
        row_values.iter_mut().for_each(|v| *v = 0.0);
        load_codec::add_into(&blob, &mut row_values)?;
        if let Some((i, rows, complete)) = current.as_mut() {
            *rows += 1;
            *complete &= counted == windows[*i].windows;
            if let Some(cube) = windows[*i].covisit.as_mut() {
                for (expert, &v) in row_values.iter().enumerate() {
                    cube[(layer * experts + expert) * groups + group] = v;
                }
            }
        }
    }
    finish(windows, current);
    Ok(())
}

/// A batch's windows for one cluster load window, summed.
struct BatchSum {
    windows: usize,
    layers: usize,
    /// `L x E`.
    load: Vec<f64>,
    /// Windows that carried co-visit counts.
    covisit_windows: usize,
    /// `L x E x K`, the sum of their counts.
    covisit: Option<Vec<f64>>,
}

/// Which cluster load window.
struct WindowKey<'a> {
    cluster: &'a str,
    lineage: i64,
    bucket: i64,
}

/// Adds a batch's sum into a cluster load window: its load rows and, when
/// the batch carried them, its co-visit rows (the caller holds the cluster
/// lock).
async fn add_to_load_window(
    tx: &mut WriteTx<'_>,
    window: &WindowKey<'_>,
    batch: &mut BatchSum,
    now_ms: i64,
) -> StoreResult<()> {
    let layers = batch.layers;
    let experts = batch.load.len() / layers.max(1);
    let load = RowsAdded {
        table: RowTable::Load,
        rows: &mut batch.load,
        width: experts,
        windows: batch.windows,
    };
    add_rows(tx, window, load, now_ms).await?;
    if let Some(covisit) = &batch.covisit {
        let groups = covisit.len() / (layers * experts).max(1);
        // Transposed from `L x E x K` to (layer, group) rows of E values.
        let mut rows = vec![0.0; covisit.len()];
        for (i, &v) in covisit.iter().enumerate() {
            let (row, group) = (i / groups, i % groups);
            let (layer, expert) = (row / experts, row % experts);
            rows[(layer * groups + group) * experts + expert] = v;
        }
        let counts = RowsAdded {
            table: RowTable::Covisit { groups },
            rows: &mut rows,
            width: experts,
            windows: batch.covisit_windows,
        };
        add_rows(tx, window, counts, now_ms).await?;
    }
    Ok(())
}

/// The two tables of a cluster load window's rows, each row a blob of
/// `E` values with the count of worker windows summed into it.
#[derive(Debug, Clone, Copy)]
enum RowTable {
    /// `load_window_layers`: one row per layer.
    Load,
    /// `load_window_covisit`: one row per (layer, group).
    Covisit { groups: usize },
}

impl RowTable {
    fn select(self) -> &'static str {
        match self {
            RowTable::Load => {
                "SELECT layer, CAST(0 AS BIGINT) AS grp, windows, load AS blob FROM load_window_layers
                 WHERE cluster = $1 AND lineage = $2 AND bucket = $3"
            }
            RowTable::Covisit { .. } => {
                "SELECT layer, grp, windows, counts AS blob FROM load_window_covisit
                 WHERE cluster = $1 AND lineage = $2 AND bucket = $3"
            }
        }
    }

    fn upsert(self) -> &'static str {
        match self {
            RowTable::Load => {
                "INSERT INTO load_window_layers (cluster, lineage, bucket, layer, windows, load, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (cluster, lineage, bucket, layer)
                 DO UPDATE SET windows = excluded.windows, load = excluded.load, updated_at_ms = excluded.updated_at_ms"
            }
            RowTable::Covisit { .. } => {
                "INSERT INTO load_window_covisit (cluster, lineage, bucket, layer, windows, counts, updated_at_ms, grp)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (cluster, lineage, bucket, layer, grp)
                 DO UPDATE SET windows = excluded.windows, counts = excluded.counts, updated_at_ms = excluded.updated_at_ms"
            }
        }
    }

    fn what(self) -> &'static str {
        match self {
            RowTable::Load => "load window",
            RowTable::Covisit { .. } => "co-visit counts",
        }
    }

    /// Groups per layer: one row each (the load has one row per layer).
    fn groups(self) -> usize {
        match self {
            RowTable::Load => 1,
            RowTable::Covisit { groups } => groups.max(1),
        }
    }
}

/// A batch's rows for one table, row-major, `width` values each, summed
/// from `windows` worker windows.
struct RowsAdded<'a> {
    table: RowTable,
    rows: &'a mut [f64],
    width: usize,
    windows: usize,
}

/// Adds `added` into the window's stored rows of its table (a
/// read-modify-write under the cluster lock).
async fn add_rows(
    tx: &mut WriteTx<'_>,
    window: &WindowKey<'_>,
    added: RowsAdded<'_>,
    now_ms: i64,
) -> StoreResult<()> {
    let RowsAdded {
        table,
        rows,
        width,
        windows,
    } = added;
    let (groups, width) = (table.groups(), width.max(1));
    let layers = rows.len() / width / groups;
    let existing = sqlx::query(table.select())
        .bind(window.cluster)
        .bind(window.lineage)
        .bind(window.bucket)
        .fetch_all(&mut *tx.tx)
        .await?;
    let mut before = 0;
    for row in &existing {
        let layer = to_usize("layer", row.try_get("layer")?)?;
        let group = to_usize("group", row.try_get("grp")?)?;
        let at = (layer * groups + group) * width;
        let Some(values) = rows.get_mut(at..at + width).filter(|_| group < groups) else {
            return Err(StoreError::Corrupt {
                what: table.what(),
                detail: match table {
                    RowTable::Load => format!("layer {layer} is outside {layers} layers"),
                    RowTable::Covisit { .. } => format!(
                        "row (layer {layer}, group {group}) is outside {layers} layers x {groups} groups"
                    ),
                },
            });
        };
        let blob: Vec<u8> = row.try_get("blob")?;
        load_codec::add_into(&blob, values)?;
        before = to_usize("window count", row.try_get("windows")?)?;
    }
    for (i, values) in rows.chunks(width).enumerate() {
        let upsert = sqlx::query(table.upsert())
            .bind(window.cluster)
            .bind(window.lineage)
            .bind(window.bucket)
            .bind((i / groups) as i64)
            .bind((before + windows) as i64)
            .bind(load_codec::encode(values))
            .bind(now_ms);
        let upsert = match table {
            RowTable::Load => upsert,
            RowTable::Covisit { .. } => upsert.bind((i % groups) as i64),
        };
        upsert.execute(&mut *tx.tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(slots: usize) -> Topology {
        Topology::from_json(&format!(
            r#"{{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": {slots}}}"#
        ))
        .unwrap()
    }

    fn staged(cluster: &ClusterName, lineage: i64, seq: i64, t: &Topology) -> StagedWindow {
        StagedWindow {
            cluster: cluster.clone(),
            lineage,
            worker: WorkerName::of_gpu(0, t),
            seq,
            bucket: 1,
            load: load_codec::encode(&[1.0; 8]),
            values: 8,
            layers: 2,
            covisit: None,
            groups: 2,
        }
    }

    /// A window validated against a lineage that a topology PUT retired, or
    /// for a cluster deleted meanwhile, is refused under the cluster lock;
    /// seqs start again in the new lineage.
    #[tokio::test]
    async fn windows_count_only_in_the_lineage_they_were_validated_for() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("b.db").display());
        let store = Store::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let c = ClusterName::parse("c1").unwrap();
        let (old, new) = (topology(3), topology(4));
        store.put_cluster(&c, &old, 0).await.unwrap();
        let accepted = store.ingest_batch(&[staged(&c, 1, 5, &old)], 0).await;
        assert_eq!(accepted.unwrap(), [IngestOutcome::Accepted]);
        assert_eq!(store.put_cluster(&c, &new, 1).await.unwrap().lineage, 2);
        let late = store.ingest_batch(&[staged(&c, 1, 6, &old)], 1).await;
        assert_eq!(
            late.unwrap(),
            [IngestOutcome::TopologyChanged {
                validated: 1,
                current: 2
            }]
        );
        // Seq 5 was used in lineage 1; in lineage 2 it is new.
        let restarted = store.ingest_batch(&[staged(&c, 2, 5, &new)], 2).await;
        assert_eq!(restarted.unwrap(), [IngestOutcome::Accepted]);
        let again = store.ingest_batch(&[staged(&c, 2, 5, &new)], 2).await;
        assert_eq!(again.unwrap(), [IngestOutcome::Duplicate]);
        assert!(store.delete_cluster(&c).await.unwrap());
        let gone = store.ingest_batch(&[staged(&c, 2, 7, &new)], 3).await;
        assert_eq!(gone.unwrap(), [IngestOutcome::ClusterGone]);
        assert!(!store.delete_cluster(&c).await.unwrap());
    }
}
