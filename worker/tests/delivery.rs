//! Telemetry delivery against the real service going down and coming back:
//! windows are buffered and retried while it is down, the buffer drops its
//! oldest queued window when full, and after the restart every remaining
//! window is stored exactly once, in order; a re-sent window is recognised
//! as a duplicate, not counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_worker::agent::backoff::Backoff;
use ballast_worker::agent::client::ServiceClient;
use ballast_worker::agent::metrics::AgentMetrics;
use ballast_worker::agent::outbox::Outbox;
use ballast_worker::agent::window::PendingWindow;
use serde_json::{json, Value};
use tokio::sync::watch;

mod common;
use common::Service;

const CLUSTER: &str = "delivery";
const WORKER: &str = "node0-gpu1";

/// A 1-layer window whose load total is `10 + seq`, so totals identify it.
fn window(seq: i64) -> PendingWindow {
    let mut load = vec![0u64; 4];
    load[0] = 10 + seq as u64;
    let body = json!({"worker": WORKER, "seq": seq, "logical_load": [load]});
    PendingWindow {
        worker: WORKER.into(),
        seq,
        body: body.to_string().into_bytes(),
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(m: &AgentMetrics, outcome: &str) -> u64 {
    m.windows.with_label_values(&[outcome]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_windows_survive_an_outage_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), "127.0.0.1:0", &[]).await;
    let address = service.address.clone();
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{address}/v1/clusters/{CLUSTER}"))
        .json(
            &json!({"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                      "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    service.stop().await;

    // The service is down: the first window is retried, later ones queue.
    let metrics = Arc::new(AgentMetrics::new("test", 0).unwrap());
    let outbox = Arc::new(Outbox::new(3, metrics.clone()));
    let client = ServiceClient::new(&address, CLUSTER, None).unwrap();
    let (drained_tx, drained) = watch::channel(false);
    let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    let sender = tokio::spawn(outbox.clone().deliver(client, backoff, drained));
    outbox.push(window(0));
    wait_for("a failed attempt", || metrics.window_retries.get() >= 2).await;
    for seq in 1..5 {
        outbox.push(window(seq));
    }
    // Window 0 is in flight; 1..5 do not fit in 3 slots: 1 is dropped.
    assert_eq!(count(&metrics, "dropped"), 1);
    assert_eq!(metrics.windows_buffered.get(), 4);
    assert_eq!(count(&metrics, "sent"), 0);

    // Back on the same address and database.
    let listen = address.trim_start_matches("http://").to_owned();
    let service = Service::start(dir.path(), &listen, &[]).await;
    wait_for("the buffer to drain", || {
        metrics.windows_buffered.get() == 0
    })
    .await;
    assert_eq!(count(&metrics, "sent"), 4);

    // An answer lost in transit makes the agent send a window again; the
    // service recognises it.
    outbox.push(window(3));
    wait_for("the re-sent window", || count(&metrics, "duplicate") == 1).await;
    assert_eq!(count(&metrics, "sent"), 4);
    assert_eq!(count(&metrics, "rejected"), 0);
    drained_tx.send_replace(true);
    sender.await.unwrap();

    let workers: Value = http
        .get(format!("{address}/v1/clusters/{CLUSTER}/workers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == WORKER)
        .unwrap();
    assert_eq!(me["last_seq"], 4);
    // Stored load: windows 0, 2, 3, 4 once each (acknowledged means counted).
    let w: Value = http
        .get(format!("{address}/v1/clusters/{CLUSTER}/telemetry/windows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let windows = w["windows"].as_array().unwrap();
    let tokens: f64 = windows.iter().map(|x| x["tokens"].as_f64().unwrap()).sum();
    let counted: u64 = windows
        .iter()
        .map(|x| x["worker_windows"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 4, "{w}");
    assert_eq!(tokens, (10 + 12 + 13 + 14) as f64, "{w}");
    service.stop().await;
}
