//! A cluster's stored load history, read back for a replay: its topology
//! and its closed windows, oldest first, as [`TraceWindow`]s — the same
//! lines a trace file holds.
//!
//! Two sources give the same windows: [`from_database`] reads the
//! service's database directly (read-only), [`from_service`] asks a running
//! service over HTTP with a token (`GET .../telemetry/trace`), for a job
//! that has no database credentials. Both page through the history
//! ([`stored::StoredTrace`] on both ends), so memory stays bounded however
//! long it is.
//!
//! The replay command is synchronous, and the store and HTTP client are
//! async: each source runs on a thread of its own, with a private
//! single-threaded runtime, and hands windows over a bounded channel. The
//! caller gets a plain blocking iterator, usable from any thread (also
//! from inside an async runtime, where it only blocks). Dropping it stops
//! the reader at its next window.

mod remote;
pub mod stored;

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

use ballast_protocol::TraceWindow;
use ballast_solver::Topology;
use thiserror::Error;
use tokio::runtime::Runtime;

use crate::domain::names::NameError;
use crate::domain::ClusterName;
use crate::store::StoreError;
pub use crate::time::{Span, SpanError};
use stored::DatabaseTrace;

/// A cluster's history: the topology its windows are shaped by (`L × E`
/// load per window) and the windows, oldest first.
pub struct History {
    /// The cluster's current topology; every window is of its lineage.
    pub topology: Topology,
    /// The closed windows in the span, oldest first. An error ends the
    /// iteration (nothing follows it).
    pub windows: Box<dyn Iterator<Item = Result<TraceWindow, HistoryError>> + Send>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

/// Why a history could not be read, naming what failed.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error(transparent)]
    ClusterName(#[from] NameError),
    #[error("cluster {0} does not exist")]
    UnknownCluster(String),
    #[error("database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error(
        "database {url} is not a Ballast database this version can read \
         (start this version's `ballast serve` on it once to migrate it)"
    )]
    Schema { url: String },
    #[error(
        "database {url} records no load-window grid, so its windows have no times \
         (start this version's `ballast serve` on it once)"
    )]
    NoGrid { url: String },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}: {message} ({code})")]
    Service {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{url}: {what}")]
    Malformed { url: String, what: String },
    #[error("the history reader thread: {0}")]
    Reader(String),
}

/// Windows read ahead of the caller (besides the page being read).
const READ_AHEAD: usize = 8;

/// The cluster's stored history, read straight from the service's database
/// (`sqlite:PATH` or `postgres://...`, as `ballast serve --database-url`
/// takes it). The database is opened read-only, beside a running service
/// or not; it must have been migrated by this version's `serve`, which
/// also records the window grid that gives bucket numbers their times.
pub fn from_database(url: &str, cluster: &str, span: Span) -> Result<History, HistoryError> {
    let cluster = ClusterName::parse(cluster)?;
    let url = url.to_owned();
    spawn_reader(
        "ballast-history-db",
        move |runtime| runtime.block_on(DatabaseTrace::open(&url, cluster, span)),
        |runtime, trace| runtime.block_on(trace.next_windows()),
    )
}

/// The cluster's stored history, read from a running service at
/// `base_url` (`http://host:8420`) with its worker or admin token: the
/// topology from `GET /v1/clusters/{cluster}`, the windows streamed from
/// `GET /v1/clusters/{cluster}/telemetry/trace`. Plain HTTP, like the
/// worker (terminate TLS in front of the service).
pub fn from_service(
    base_url: &str,
    cluster: &str,
    token: Option<&str>,
    span: Span,
) -> Result<History, HistoryError> {
    let cluster = ClusterName::parse(cluster)?;
    let source = remote::Remote::new(base_url, &cluster, token, span)?;
    spawn_reader(
        "ballast-history-http",
        move |runtime| runtime.block_on(source.open()),
        |runtime, trace| runtime.block_on(trace.next_windows()),
    )
}

/// What a reader thread hands over.
enum Message {
    Window(TraceWindow),
    Failed(HistoryError),
    /// Every window was sent.
    End,
}

/// Starts a reader thread: `open` (on the thread's own runtime) finds the
/// topology and the state to read with, then `next` is called for batches
/// of windows until it returns `None`. Returns once `open` did.
fn spawn_reader<S, Open, Next>(
    name: &str,
    open: Open,
    mut next: Next,
) -> Result<History, HistoryError>
where
    Open: FnOnce(&Runtime) -> Result<(Topology, S), HistoryError> + Send + 'static,
    Next:
        FnMut(&Runtime, &mut S) -> Result<Option<Vec<TraceWindow>>, HistoryError> + Send + 'static,
{
    let (opened_tx, opened_rx) = sync_channel::<Result<Topology, HistoryError>>(1);
    let (tx, rx) = sync_channel::<Message>(READ_AHEAD);
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = opened_tx.send(Err(HistoryError::Reader(e.to_string())));
                    return;
                }
            };
            let mut state = match open(&runtime) {
                Ok((topology, state)) => {
                    if opened_tx.send(Ok(topology)).is_err() {
                        return;
                    }
                    state
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            // A failed send means the caller dropped the iterator: stop.
            let _ = pump(&runtime, &mut state, &mut next, &tx);
        })
        .map_err(|e| HistoryError::Reader(e.to_string()))?;
    let topology = opened_rx
        .recv()
        .map_err(|_| HistoryError::Reader("stopped before it opened the history".into()))??;
    Ok(History {
        topology,
        windows: Box::new(Windows {
            rx,
            finished: false,
        }),
    })
}

/// Sends every batch `next` yields, then the end (or the error).
fn pump<S, Next>(
    runtime: &Runtime,
    state: &mut S,
    next: &mut Next,
    tx: &SyncSender<Message>,
) -> Result<(), std::sync::mpsc::SendError<Message>>
where
    Next: FnMut(&Runtime, &mut S) -> Result<Option<Vec<TraceWindow>>, HistoryError>,
{
    loop {
        match next(runtime, state) {
            Ok(Some(batch)) => {
                for window in batch {
                    tx.send(Message::Window(window))?;
                }
            }
            Ok(None) => return tx.send(Message::End),
            Err(e) => return tx.send(Message::Failed(e)),
        }
    }
}

/// The caller's end of the channel. A reader that vanished without saying
/// it was done (it panicked) is an error, never a silently short history.
struct Windows {
    rx: Receiver<Message>,
    finished: bool,
}

impl Iterator for Windows {
    type Item = Result<TraceWindow, HistoryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = match self.rx.recv() {
            Ok(Message::Window(window)) => return Some(Ok(window)),
            Ok(Message::End) => None,
            Ok(Message::Failed(e)) => Some(Err(e)),
            Err(_) => Some(Err(HistoryError::Reader(
                "stopped before the end of the history".into(),
            ))),
        };
        self.finished = true;
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(i: u64) -> TraceWindow {
        TraceWindow {
            window: i,
            start: None,
            end: None,
            load: vec![vec![i as f64]],
            covisit: None,
        }
    }

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 1, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 1, "slots_per_gpu": 1}"#,
        )
        .unwrap()
    }

    #[test]
    fn batches_arrive_in_order_then_end() {
        let history = spawn_reader(
            "test",
            |_| Ok((topology(), 0u64)),
            |_, sent| {
                if *sent >= 100 {
                    return Ok(None);
                }
                let batch = (*sent..*sent + 7).map(window).collect();
                *sent += 7;
                Ok(Some(batch))
            },
        )
        .unwrap();
        assert_eq!(history.topology, topology());
        let got: Vec<u64> = history.windows.map(|w| w.unwrap().window).collect();
        assert_eq!(got, (0..105).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_ends_the_windows_and_open_errors_return_at_once() {
        let history = spawn_reader(
            "test",
            |_| Ok((topology(), false)),
            |_, failed| {
                if *failed {
                    return Err(HistoryError::UnknownCluster("late".into()));
                }
                *failed = true;
                Ok(Some(vec![window(0)]))
            },
        )
        .unwrap();
        let got: Vec<_> = history.windows.collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[1], Err(HistoryError::UnknownCluster(c)) if c == "late"));

        let err = spawn_reader(
            "test",
            |_| Err::<(Topology, ()), _>(HistoryError::UnknownCluster("c9".into())),
            |_, _| Ok(None),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "cluster c9 does not exist");
    }

    #[test]
    fn a_reader_that_dies_is_an_error_not_a_short_history() {
        let history = spawn_reader(
            "test",
            |_| Ok((topology(), ())),
            |_, _| -> Result<Option<Vec<TraceWindow>>, HistoryError> {
                panic!("reader bug (expected by this test)")
            },
        )
        .unwrap();
        let got: Vec<_> = history.windows.collect();
        assert!(
            matches!(got.as_slice(), [Err(HistoryError::Reader(_))]),
            "{got:?}"
        );
    }

    #[test]
    fn dropping_the_windows_stops_the_reader() {
        let (done_tx, done_rx) = sync_channel::<()>(1);
        let history = spawn_reader(
            "test",
            move |_| Ok((topology(), done_tx)),
            |_, _| Ok(Some(vec![window(0)])),
        )
        .unwrap();
        drop(history);
        // The reader's state (holding the sender) is dropped when it stops.
        assert!(done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Disconnected));
    }

    #[test]
    fn bad_names_and_databases_are_named() {
        let err = from_database("sqlite:x.db", "Bad Name", Span::ALL).unwrap_err();
        assert!(err.to_string().contains("cluster name `Bad Name`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = format!("sqlite:{}", dir.path().join("none.db").display());
        let err = from_database(&missing, "c1", Span::ALL).unwrap_err();
        assert!(matches!(err, HistoryError::Database { .. }), "{err}");
        assert!(
            !dir.path().join("none.db").exists(),
            "a read-only open creates nothing"
        );
        let err = from_database("mysql://h/db", "c1", Span::ALL).unwrap_err();
        assert!(
            err.to_string().contains("unsupported database URL"),
            "{err}"
        );
    }
}
