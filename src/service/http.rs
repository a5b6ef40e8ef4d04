//! The HTTP listener: an accept loop that holds one permit per open
//! connection (`--max-connections`), and hyper's HTTP/1.1 connection
//! builder with its header-read timeout, which also bounds how long an
//! idle keep-alive connection is kept (hyper starts that clock whenever it
//! waits for a request head). Body reads are bounded in the router
//! (`RequestBodyTimeoutLayer`). Timeouts are hyper's and tower-http's, not
//! timers of our own.
//!
//! Only HTTP/1.1 is served: the service speaks plain HTTP, where HTTP/2
//! needs prior knowledge, and hyper-util's auto-detecting builder waits for
//! a connection's first bytes without any timeout, which is exactly the
//! idle-connection hole this module closes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

/// Connection-level limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest time a client may take to send a request head, counted from
    /// the moment the server waits for one (so also the idle keep-alive time).
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait in the kernel's accept backlog.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` turns true, then stops
/// accepting and lets open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        // Take the permit before accepting: at the limit, new connections
        // queue in the backlog instead of costing a file descriptor here.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // EMFILE and kin: back off instead of spinning; the
                // connections that hold descriptors time out meanwhile.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small responses (acks, receipts) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // Header timeouts, resets and malformed requests: the
                // client's problem, not the service's.
                debug!(%peer, error = %err, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that arrive through `accept`; the listener is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Raises the soft open-file limit to the hard limit (each connection is a
/// descriptor; the usual soft limit of 1,024 is far below what a loaded
/// service holds) and returns the soft limit in force, if known.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((_, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(soft) => Some(soft),
            Err(err) => {
                warn!(error = %err, "could not raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE)
                    .ok()
                    .map(|(soft, _)| soft)
            }
        },
        Err(err) => {
            warn!(error = %err, "could not read the open-file limit");
            None
        }
    }
}
