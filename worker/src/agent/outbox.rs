//! Telemetry delivery: a bounded buffer of closed windows and the task that
//! delivers them in order.
//!
//! Guarantees:
//! - A window keeps its `(worker, seq)` across retries, and the service
//!   counts a re-sent `(worker, seq)` once, so a retry after a lost answer
//!   never double-counts (it comes back as `duplicate`).
//! - Windows are delivered one at a time in the order they were closed, so
//!   every worker's `seq` reaches the service in increasing order.
//! - While the service is unreachable (connection errors, timeouts, 5xx,
//!   408, 429) the window being delivered is retried with jittered
//!   exponential backoff and new windows queue behind it. When the queue is
//!   full the *oldest queued* window is dropped and counted
//!   (`ballast_worker_windows_total{outcome="dropped"}`): recent load is
//!   worth more to a planner than old load, whose window it already planned.
//! - A window the service refuses (other 4xx) is logged, counted as
//!   `rejected` and not retried.
//! - At shutdown the buffer is delivered for at most the shutdown timeout;
//!   what is left is counted as dropped. Nothing is persisted: windows still
//!   buffered when the process dies are lost, and a restarted agent resumes
//!   numbering after the `last_seq` the service reports for its workers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{watch, Notify};
use tracing::{error, warn};

use super::backoff::Backoff;
use super::client::{Delivery, ServiceClient};
use super::metrics::AgentMetrics;
use super::window::PendingWindow;

/// The bounded window buffer shared by the compute thread and the sender.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<PendingWindow>>,
    capacity: usize,
    in_flight: AtomicUsize,
    notify: Notify,
    metrics: Arc<AgentMetrics>,
}

impl Outbox {
    /// A buffer of at most `capacity` queued windows (at least 1).
    pub fn new(capacity: usize, metrics: Arc<AgentMetrics>) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            in_flight: AtomicUsize::new(0),
            notify: Notify::new(),
            metrics,
        }
    }

    /// Queues a closed window, dropping the oldest queued one when full.
    pub fn push(&self, window: PendingWindow) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= self.capacity {
            if let Some(old) = queue.pop_front() {
                self.metrics.windows.with_label_values(&["dropped"]).inc();
                warn!(worker = %old.worker, seq = old.seq, "telemetry buffer full: dropped the oldest window");
            }
        }
        queue.push_back(window);
        self.update_gauge(queue.len());
        drop(queue);
        self.notify.notify_one();
    }

    /// Windows not yet delivered (queued or in flight).
    pub fn pending(&self) -> usize {
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        queued + self.in_flight.load(Ordering::SeqCst)
    }

    fn take(&self) -> Option<PendingWindow> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let window = queue.pop_front()?;
        self.in_flight.store(1, Ordering::SeqCst);
        self.update_gauge(queue.len());
        Some(window)
    }

    fn done(&self) {
        self.in_flight.store(0, Ordering::SeqCst);
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.update_gauge(queued);
    }

    fn update_gauge(&self, queued: usize) {
        let pending = queued + self.in_flight.load(Ordering::SeqCst);
        self.metrics
            .windows_buffered
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts every undelivered window as dropped (after the shutdown
    /// deadline passed) and empties the buffer.
    pub fn abandon(&self) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let lost = queue.len() + self.in_flight.swap(0, Ordering::SeqCst);
        queue.clear();
        self.metrics
            .windows
            .with_label_values(&["dropped"])
            .inc_by(lost as u64);
        self.update_gauge(0);
        lost
    }

    /// Delivers windows until `stop` is set and the buffer is empty.
    pub async fn deliver(
        self: Arc<Self>,
        client: ServiceClient,
        backoff: Backoff,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut rng = ChaCha8Rng::from_rng(&mut rand::rng());
        loop {
            let Some(window) = self.take() else {
                if *stop.borrow() {
                    return;
                }
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let mut attempt = 0;
            loop {
                match client.post_window(&window.body).await {
                    Ok(Delivery::Accepted) => {
                        self.metrics.windows.with_label_values(&["sent"]).inc();
                        break;
                    }
                    Ok(Delivery::Duplicate) => {
                        self.metrics.windows.with_label_values(&["duplicate"]).inc();
                        break;
                    }
                    Err(err) if err.is_retryable() => {
                        attempt += 1;
                        self.metrics.window_retries.inc();
                        let delay = backoff.delay(attempt, &mut rng);
                        warn!(worker = %window.worker, seq = window.seq, attempt, ?delay, error = %err, "telemetry delivery failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    Err(err) => {
                        self.metrics.windows.with_label_values(&["rejected"]).inc();
                        error!(worker = %window.worker, seq = window.seq, error = %err, "the service refused a telemetry window");
                        break;
                    }
                }
            }
            self.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(seq: i64) -> PendingWindow {
        PendingWindow {
            worker: "node0-gpu0".into(),
            seq,
            body: Vec::new(),
        }
    }

    fn dropped(m: &AgentMetrics) -> u64 {
        m.windows.with_label_values(&["dropped"]).get()
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_window() {
        let metrics = Arc::new(AgentMetrics::new("test", 0).unwrap());
        let outbox = Outbox::new(2, metrics.clone());
        for seq in 0..3 {
            outbox.push(window(seq));
        }
        assert_eq!(dropped(&metrics), 1);
        assert_eq!(outbox.pending(), 2);
        assert_eq!(outbox.take().unwrap().seq, 1);
        assert_eq!(metrics.windows_buffered.get(), 2);
        // The window in flight is never the one dropped.
        outbox.push(window(3));
        outbox.push(window(4));
        assert_eq!(dropped(&metrics), 2);
        assert_eq!(outbox.pending(), 3);
        outbox.done();
        assert_eq!(outbox.take().unwrap().seq, 3);
        assert_eq!(outbox.abandon(), 2);
        assert_eq!(dropped(&metrics), 4);
        assert_eq!(outbox.pending(), 0);
        assert_eq!(metrics.windows_buffered.get(), 0);
    }
}
