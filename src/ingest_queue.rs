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
//! parse) rather than the database's (unreachable, timed out), the batch's
//! windows are stored again one transaction each, so that one worker's bad
//! window never fails another's; otherwise every handler gets the error and
//! the workers retry. Either way nothing is counted twice.

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

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
    pub fn start(store: Arc<Store>) -> IngestQueue {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_batches(store, receiver));
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

async fn write_batches(store: Arc<Store>, mut receiver: mpsc::Receiver<Job>) {
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
        let (windows, replies): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|job| (job.window, job.reply)).unzip();
        match store.ingest_batch(&windows, now_ms()).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A handler that went away (client disconnected) needs no answer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) if windows.len() > 1 && may_be_one_windows(&err) => {
                tracing::warn!(error = %err, windows = windows.len(),
                    "ingest batch failed; storing its windows one by one");
                for (window, reply) in windows.iter().zip(replies) {
                    let alone = store.ingest_batch(std::slice::from_ref(window), now_ms());
                    let result = match alone.await {
                        Ok(outcomes) => outcomes.first().copied().ok_or(IngestError::Closed),
                        Err(err) => Err(IngestError::Store(Arc::new(err))),
                    };
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(IngestError::Store(err.clone())));
                }
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
        StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Url(_) => false,
    }
}
