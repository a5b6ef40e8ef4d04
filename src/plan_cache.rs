//! The in-memory plan cache: what every request needs fast. Each cluster's
//! topology and its latest plan, already serialized, a few recent versions
//! parsed, plus a watch channel that wakes long-polls and SSE streams the
//! moment a newer plan exists.
//!
//! The database stays the source of truth. This replica's publications are
//! announced here directly; other replicas' publications and topology
//! changes arrive through [`PlanCache::sync`], which the sync task runs every
//! `--sync-interval`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use ballast_protocol::PlanDocument;
use ballast_solver::{Plan, Topology};
use tokio::sync::watch;

use crate::domain::ClusterName;
use crate::store::clusters::ClusterRow;
use crate::store::plans::PlanRow;
use crate::store::{Store, StoreError, StoreResult};

/// Plans of each cluster kept parsed in memory besides the latest one
/// (for diffs, exports and `slot_load` conversion).
const CACHED_VERSIONS: usize = 8;

/// A cluster's current shape.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub name: ClusterName,
    pub topology: Arc<Topology>,
    pub lineage: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A published plan, parsed and serialized once.
#[derive(Debug)]
pub struct PublishedPlan {
    pub version: i64,
    pub lineage: i64,
    pub created_at_ms: i64,
    pub reason: String,
    /// The topology the plan was made for (carried in its document).
    pub topology: Arc<Topology>,
    pub plan: Plan,
    /// The exact JSON body served.
    pub body: Bytes,
    /// `"<version>"`, the ETag.
    pub etag: String,
}

impl PublishedPlan {
    /// A stored plan, read through the protocol's plan document: the
    /// document carries the topology its placement is checked against. The
    /// row's columns (version, lineage, time, reason) are authoritative.
    pub fn from_row(row: &PlanRow) -> StoreResult<Self> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "plan document",
            detail,
        };
        let doc: PlanDocument =
            serde_json::from_str(&row.document).map_err(|e| corrupt(e.to_string()))?;
        let spec = doc
            .topology
            .clone()
            .ok_or_else(|| corrupt("no `topology`".into()))?;
        let topology = Topology::new(spec).map_err(|e| corrupt(e.to_string()))?;
        let plan = doc.plan(&topology).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self::new(row, Arc::new(topology), plan))
    }

    /// A stored plan whose topology and placement the caller already holds
    /// (the planner that just published it).
    pub fn new(row: &PlanRow, topology: Arc<Topology>, plan: Plan) -> Self {
        PublishedPlan {
            version: row.version,
            lineage: row.lineage,
            created_at_ms: row.created_at_ms,
            reason: row.reason.clone(),
            topology,
            plan,
            body: Bytes::from(row.document.clone()),
            etag: etag(row.version),
        }
    }
}

/// The ETag of a plan version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// One cluster's live state.
pub struct ClusterEntry {
    info: RwLock<Arc<ClusterInfo>>,
    latest: watch::Sender<Option<Arc<PublishedPlan>>>,
    versions: RwLock<HashMap<i64, Arc<PublishedPlan>>>,
}

impl ClusterEntry {
    fn new(info: ClusterInfo) -> Self {
        ClusterEntry {
            info: RwLock::new(Arc::new(info)),
            latest: watch::Sender::new(None),
            versions: RwLock::new(HashMap::new()),
        }
    }

    pub fn info(&self) -> Arc<ClusterInfo> {
        self.info
            .read()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The latest plan of the current lineage.
    pub fn latest(&self) -> Option<Arc<PublishedPlan>> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every newer plan.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PublishedPlan>>> {
        self.latest.subscribe()
    }

    fn cached(&self, version: i64) -> Option<Arc<PublishedPlan>> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions.get(&version).cloned()
    }

    fn remember(&self, plan: &Arc<PublishedPlan>) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.insert(plan.version, plan.clone());
        while versions.len() > CACHED_VERSIONS {
            let Some(oldest) = versions.keys().min().copied() else {
                break;
            };
            versions.remove(&oldest);
        }
    }

    /// Makes `plan` the latest if it is newer and of the current lineage.
    fn announce(&self, plan: Arc<PublishedPlan>) {
        self.remember(&plan);
        if plan.lineage != self.info().lineage {
            return;
        }
        self.latest.send_if_modified(|latest| {
            let newer = latest.as_ref().is_none_or(|l| l.version < plan.version);
            if newer {
                *latest = Some(plan.clone());
            }
            newer
        });
    }

    /// Drops every plan of a cluster that no longer exists.
    fn forget_plans(&self) {
        self.versions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.latest
            .send_if_modified(|latest| latest.take().is_some());
    }

    fn set_info(&self, info: ClusterInfo) {
        let lineage_changed = self.info().lineage != info.lineage;
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(info);
        if lineage_changed {
            // The old lineage's plan does not fit any more; waiters keep
            // waiting for the new lineage's first plan.
            self.latest
                .send_if_modified(|latest| latest.take().is_some());
        }
    }
}

/// All clusters known to this replica.
pub struct PlanCache {
    store: Arc<Store>,
    clusters: RwLock<HashMap<ClusterName, Arc<ClusterEntry>>>,
}

fn info_of(row: ClusterRow) -> StoreResult<ClusterInfo> {
    Ok(ClusterInfo {
        name: row.name,
        topology: Arc::new(row.topology),
        lineage: row.lineage,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    })
}

impl PlanCache {
    pub fn new(store: Arc<Store>) -> Self {
        PlanCache {
            store,
            clusters: RwLock::new(HashMap::new()),
        }
    }

    pub fn entry(&self, name: &ClusterName) -> Option<Arc<ClusterEntry>> {
        let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
        clusters.get(name).cloned()
    }

    pub fn entries(&self) -> Vec<Arc<ClusterEntry>> {
        let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = clusters.values().cloned().collect();
        all.sort_by(|a, b| a.info().name.cmp(&b.info().name));
        all
    }

    /// The cluster's entry, loading it from the database on a miss (another
    /// replica may have created it since the last sync).
    pub async fn load(&self, name: &ClusterName) -> StoreResult<Option<Arc<ClusterEntry>>> {
        if let Some(entry) = self.entry(name) {
            return Ok(Some(entry));
        }
        match self.store.cluster(name).await? {
            None => Ok(None),
            Some(row) => {
                let entry = self.install(info_of(row)?);
                self.refresh_latest(&entry).await?;
                Ok(Some(entry))
            }
        }
    }

    /// Records a cluster's (new) shape after a topology PUT or a sync. A
    /// cluster deleted and created again under the same name (another
    /// `created_at`) gets a fresh entry: its versions start again at 1.
    pub fn install(&self, info: ClusterInfo) -> Arc<ClusterEntry> {
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        match clusters.get(&info.name) {
            Some(entry) if entry.info().created_at_ms == info.created_at_ms => {
                entry.set_info(info);
                entry.clone()
            }
            _ => {
                let entry = Arc::new(ClusterEntry::new(info.clone()));
                if let Some(old) = clusters.insert(info.name.clone(), entry.clone()) {
                    old.forget_plans();
                }
                entry
            }
        }
    }

    /// Forgets a deleted cluster; long-polls waiting on it stop seeing a plan.
    pub fn remove(&self, name: &ClusterName) {
        let removed = self
            .clusters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(entry) = removed {
            entry.forget_plans();
        }
    }

    /// Announces a plan this replica just published.
    pub fn announce(&self, cluster: &ClusterName, plan: Arc<PublishedPlan>) {
        if let Some(entry) = self.entry(cluster) {
            entry.announce(plan);
        }
    }

    /// A plan by version, from memory or the database.
    pub async fn plan(
        &self,
        entry: &ClusterEntry,
        version: i64,
    ) -> StoreResult<Option<Arc<PublishedPlan>>> {
        if let Some(plan) = entry.cached(version) {
            return Ok(Some(plan));
        }
        let cluster = entry.info().name.clone();
        match self.store.plan(&cluster, version).await? {
            None => Ok(None),
            Some(row) => {
                let plan = Arc::new(PublishedPlan::from_row(&row)?);
                entry.remember(&plan);
                Ok(Some(plan))
            }
        }
    }

    async fn refresh_latest(&self, entry: &ClusterEntry) -> StoreResult<()> {
        let info = entry.info();
        if let Some(row) = self.store.latest_plan(&info.name, info.lineage).await? {
            let newer = entry.latest().is_none_or(|l| l.version < row.version);
            if newer {
                entry.announce(Arc::new(PublishedPlan::from_row(&row)?));
            }
        }
        Ok(())
    }

    /// Catches up with the database: new clusters, topology changes and
    /// plans published by other replicas.
    pub async fn sync(&self) -> StoreResult<()> {
        let heads = self.store.cluster_heads().await?;
        // Clusters deleted (by any replica) since the last sync.
        let gone: Vec<ClusterName> = {
            let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
            clusters
                .keys()
                .filter(|name| !heads.iter().any(|h| &h.cluster == *name))
                .cloned()
                .collect()
        };
        for name in &gone {
            // Checked again: this replica may have created it since `heads`.
            if self.store.cluster(name).await?.is_none() {
                self.remove(name);
            }
        }
        for head in heads {
            let entry = match self.entry(&head.cluster) {
                Some(entry) => {
                    let info = entry.info();
                    if info.lineage != head.lineage
                        || info.updated_at_ms != head.updated_at_ms
                        || info.created_at_ms != head.created_at_ms
                    {
                        match self.store.cluster(&head.cluster).await? {
                            Some(row) => self.install(info_of(row)?),
                            None => continue,
                        }
                    } else {
                        entry
                    }
                }
                None => match self.store.cluster(&head.cluster).await? {
                    Some(row) => self.install(info_of(row)?),
                    None => continue,
                },
            };
            let known = entry.latest().map(|l| l.version);
            if head.latest_version.is_some() && head.latest_version > known {
                self.refresh_latest(&entry).await?;
            }
        }
        Ok(())
    }
}
