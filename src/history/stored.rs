//! A cluster's stored history read page by page, in bucket order: what the
//! trace route streams and [`super::from_database`] iterates, so that both
//! select and shape the windows the same way.

use std::ops::Range;
use std::sync::Arc;

use ballast_protocol::TraceWindow;
use ballast_solver::Topology;

use super::HistoryError;
use crate::domain::ClusterName;
use crate::store::telemetry::{LoadWindow, WindowShape};
use crate::store::{redacted, Store, StoreError, StoreResult};
use crate::time::{now_ms, rfc3339, Span, WindowGrid};

/// Windows per page: a DeepSeek-sized window (58 × 256 values) is about
/// 120 KB, so a page stays under 8 MB however long the history is. With
/// co-visit counts (`K` more values per expert) a page holds `1 + K` times
/// fewer windows ([`StoredTrace::page_windows`]).
pub const PAGE_WINDOWS: usize = 64;

/// The closed windows of one cluster lineage that start in a span, still
/// to be read.
pub struct StoredTrace {
    store: Arc<Store>,
    cluster: ClusterName,
    lineage: i64,
    shape: WindowShape,
    grid: WindowGrid,
    /// The buckets not read yet.
    rest: Range<i64>,
}

impl StoredTrace {
    /// The windows of `cluster`'s lineage `lineage` (cut on `grid`, shaped
    /// as `topology`) that start in `span` and are closed at `now_ms`. The
    /// window still open, and any after it, are left out: their sums may
    /// still grow.
    pub fn new(
        store: Arc<Store>,
        cluster: ClusterName,
        lineage: i64,
        topology: &Topology,
        grid: WindowGrid,
        span: &Span,
        now_ms: i64,
    ) -> StoredTrace {
        let wanted = grid.starting_in(span);
        let end = wanted.end.min(grid.closed_before(now_ms)).max(wanted.start);
        StoredTrace {
            store,
            cluster,
            lineage,
            shape: WindowShape::of(topology),
            grid,
            rest: wanted.start..end,
        }
    }

    /// The next page of at most [`PAGE_WINDOWS`] windows, oldest first;
    /// empty once every window of the span was read.
    pub async fn next_page(&mut self) -> StoreResult<Vec<TraceWindow>> {
        if self.rest.is_empty() {
            return Ok(Vec::new());
        }
        let page = self
            .store
            .load_windows_in(
                &self.cluster,
                self.lineage,
                self.rest.clone(),
                self.page_windows(),
                self.shape,
            )
            .await?;
        self.rest.start = page.last().map_or(self.rest.end, |w| w.bucket + 1);
        page.iter().map(|w| self.trace_window(w)).collect()
    }

    /// Windows per page: fewer when windows may carry co-visit counts, so
    /// a page stays about as large.
    fn page_windows(&self) -> usize {
        (PAGE_WINDOWS / (1 + self.shape.groups)).max(1)
    }

    /// Flat `L x E x K` counts as `[L][E][K]` rows.
    fn covisit_rows(&self, covisit: &[f64]) -> Vec<Vec<Vec<f64>>> {
        let (experts, groups) = (self.shape.experts.max(1), self.shape.groups.max(1));
        covisit
            .chunks_exact(experts * groups)
            .map(|layer| layer.chunks_exact(groups).map(<[f64]>::to_vec).collect())
            .collect()
    }

    /// A stored window as a trace line: its bucket number is its index (so
    /// indices ascend, with gaps where no telemetry arrived).
    fn trace_window(&self, window: &LoadWindow) -> StoreResult<TraceWindow> {
        let index = u64::try_from(window.bucket).map_err(|_| StoreError::Corrupt {
            what: "load window",
            detail: format!("bucket {} is before 1970", window.bucket),
        })?;
        Ok(TraceWindow {
            window: index,
            start: Some(rfc3339(self.grid.start_ms(window.bucket))),
            end: Some(rfc3339(self.grid.end_ms(window.bucket))),
            load: window
                .load
                .chunks_exact(self.shape.experts.max(1))
                .map(<[f64]>::to_vec)
                .collect(),
            covisit: window.covisit.as_ref().map(|c| self.covisit_rows(c)),
        })
    }
}

/// [`super::from_database`]'s reader: a read-only connection and the trace
/// it reads.
pub(super) struct DatabaseTrace {
    trace: StoredTrace,
    /// The database URL without its password, for messages.
    url: String,
}

impl DatabaseTrace {
    /// Opens the database read-only and finds the cluster's topology and
    /// the grid its windows were cut on.
    pub(super) async fn open(
        url: &str,
        cluster: ClusterName,
        span: Span,
    ) -> Result<(Topology, DatabaseTrace), HistoryError> {
        let shown = redacted(url);
        let failed = |source| HistoryError::Database {
            url: shown.clone(),
            source,
        };
        let store = Store::connect_read_only(url, 2).await.map_err(failed)?;
        // A database that predates this version (or is no Ballast database)
        // has tables missing or different.
        if !store.migrations_applied().await.unwrap_or(false) {
            return Err(HistoryError::Schema { url: shown });
        }
        let Some(grid) = store.window_grid().await.map_err(failed)? else {
            return Err(HistoryError::NoGrid { url: shown });
        };
        let Some(row) = store.cluster(&cluster).await.map_err(failed)? else {
            return Err(HistoryError::UnknownCluster(cluster.to_string()));
        };
        let trace = StoredTrace::new(
            Arc::new(store),
            row.name,
            row.lineage,
            &row.topology,
            grid,
            &span,
            now_ms(),
        );
        Ok((row.topology, DatabaseTrace { trace, url: shown }))
    }

    /// The next page of windows, or `None` at the end.
    pub(super) async fn next_windows(&mut self) -> Result<Option<Vec<TraceWindow>>, HistoryError> {
        let page = self
            .trace
            .next_page()
            .await
            .map_err(|source| HistoryError::Database {
                url: self.url.clone(),
                source,
            })?;
        Ok((!page.is_empty()).then_some(page))
    }
}
