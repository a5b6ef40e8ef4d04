//! Group commit for telemetry: windows that arrive together are staged in
//! one transaction instead of one each.
//!
//! At decode scale (320 workers, a window each per second) ingest is bound
//! by commits, and on SQLite every commit waits its turn for the single
//! writer. Handlers hand their parsed window to a queue; the writer task takes
//! whatever has queued up (up to a batch), store it in one transaction and
//! answer every handler. A window is acknowledged only after its batch
//! committed; a failed batch stores nothing. When the failure may be one
//! window's own (the database refused a statement, stored data did not
//! parse) rather than the database's (unreachable, timed out), the batch is
//! split in halves that are stored apart, down to the one window at fault,
//! so that one worker's bad window never fails another's; otherwise every
//! handler gets the error and the workers retry. Either way nothing is
//! counted twice.

use std::ops::Range;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::telemetry::{IngestOutcome, StagedWindow};
use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// Windows stored per transaction at most.
const MAX_BATCH: usize = 128;
/// Windows waiting for a writer before handlers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// Why a window was not stored.
#[derive(Debug, Clone, Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("the service is shutting down")]
    Closed,
}

struct Job {
    window: StagedWindow,
    reply: oneshot::Sender<Result<IngestOutcome, IngestError>>,
}

/// The handlers' side of the queue; the writer task ends when it is dropped.
#[derive(Clone)]
pub struct IngestQueue {
    jobs: mpsc::Sender<Job>,
}

impl IngestQueue {
    /// Starts the one writer task. One on both back ends: SQLite has a
    /// single writer anyway, and on PostgreSQL concurrent batches would add
    /// into the same per-layer load-window rows and wait on each other's row
    /// locks, so one batch at a time commits soonest.
    pub fn start(store: Arc<Store>, metrics: Arc<Metrics>) -> IngestQueue {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_batches(store, metrics, receiver));
        IngestQueue { jobs }
    }

    /// Stores one window; returns once its batch committed.
    pub async fn submit(&self, window: StagedWindow) -> Result<IngestOutcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { window, reply })
            .await
            .map_err(|_| IngestError::Closed)?;
        answer.await.map_err(|_| IngestError::Closed)?
    }
}

async fn write_batches(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    mut receiver: mpsc::Receiver<Job>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        if receiver.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        // Workers in a fixed order within a batch (the store takes the
        // cluster locks first), for stable, deadlock-free row locking.
        jobs.sort_by(|a, b| {
            (&a.window.cluster, &a.window.worker, a.window.seq).cmp(&(
                &b.window.cluster,
                &b.window.worker,
                b.window.seq,
            ))
        });
        let (windows, replies): (Vec<_>, Vec<_>) = jobs
            .drain(..)
            .map(|job| (job.window, Some(job.reply)))
            .unzip();
        store_halving(&store, &metrics, &windows, replies).await;
    }
}

/// Stores `windows` in one transaction and answers each handler. When that
/// fails in a way one window may have caused, each half is tried again on
/// its own, and so on: one bad window among `n` costs about `2 log2 n`
/// extra transactions, and only its own handler gets the error.
async fn store_halving(
    store: &Store,
    metrics: &Metrics,
    windows: &[StagedWindow],
    mut replies: Vec<Option<oneshot::Sender<Result<IngestOutcome, IngestError>>>>,
) {
    // Ranges of `windows` still to store, each in one transaction.
    let mut pending: Vec<Range<usize>> = Vec::with_capacity(16);
    pending.push(0..windows.len());
    while let Some(range) = pending.pop() {
        let result = metrics
            .time_store(
                "ingest_batch",
                store.ingest_batch(&windows[range.clone()], now_ms()),
            )
            .await;
        let answers: Vec<Result<IngestOutcome, IngestError>> = match result {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(err) if range.len() > 1 && may_be_one_windows(&err) => {
                tracing::warn!(error = %err, windows = range.len(),
                    "ingest batch failed; storing its halves apart");
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
                continue;
            }
            Err(err) => {
                let err = Arc::new(err);
                range
                    .clone()
                    .map(|_| Err(IngestError::Store(err.clone())))
                    .collect()
            }
        };
        for (reply, answer) in replies[range].iter_mut().zip(answers) {
            // A handler that went away (client disconnected) needs no answer.
            if let Some(reply) = reply.take() {
                let _ = reply.send(answer);
            }
        }
    }
}

/// Whether a batch's failure may be caused by one of its windows (a
/// statement the database refused, stored data that does not parse) rather
/// than by the database being out of reach, which retrying window by window
/// would only make slower to report.
fn may_be_one_windows(err: &StoreError) -> bool {
    match err {
        StoreError::Database(sqlx::Error::Database(_)) => true,
        StoreError::Codec(_) | StoreError::Corrupt { .. } => true,
        StoreError::Database(_)
        | StoreError::Migrate(_)
        | StoreError::Url(_)
        | StoreError::MissingDirectory { .. }
        | StoreError::Unreachable { .. } => false,
    }
}
