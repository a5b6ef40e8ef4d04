//! `kill -9` during ingest and planning, then restart on the same database:
//! every acknowledged window is still there and counted once, and plan
//! versions continue without gaps or forks.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::both;
use crate::helpers::*;

struct Server {
    child: Child,
    address: String,
}

/// Starts the real binary and reads its address from the JSON start-up log.
fn start(database_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--database-url",
            database_url,
        ])
        .args(FAST)
        .env("BALLAST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ballast");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("the server logs before exiting")
            .unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "listening" {
                break format!("http://{}", v["address"].as_str().unwrap());
            }
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

both!(kill_9_loses_nothing_acknowledged, |db| async move {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(db, dir.path()).await;
    let client = reqwest::Client::new();
    let mut server = start(&url);
    let base = server.address.clone();
    let r = client
        .put(format!("{base}/v1/clusters/c1"))
        .json(&small_topology())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let versions = Arc::new(Mutex::new(Vec::new()));
    // The load's hot expert moves after every publish, so each forced
    // re-plan finds a new plan to publish (an equal one would not be).
    // Experts 10 and 11 share a group, so their replicas compete for the
    // same node's spare slots and no one plan serves both.
    let hot = Arc::new(AtomicUsize::new(10));
    let mut tasks = Vec::new();
    for gpu in 0..8usize {
        let (client, base, acked, attempted, hot) = (
            client.clone(),
            base.clone(),
            acked.clone(),
            attempted.clone(),
            hot.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for seq in 1..10_000i64 {
                attempted.lock().unwrap().insert((gpu, seq));
                match client
                    .post(format!("{base}/v1/clusters/c1/telemetry"))
                    .json(&hot_window(gpu, seq, hot.load(Ordering::Relaxed)))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().insert((gpu, seq));
                    }
                    _ => return,
                }
            }
        }));
    }
    {
        let (client, base, versions) = (client.clone(), base.clone(), versions.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match client
                    .post(format!("{base}/v1/clusters/c1/rebalance"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        versions
                            .lock()
                            .unwrap()
                            .push(body["version"].as_i64().unwrap());
                        let next = if hot.load(Ordering::Relaxed) == 10 {
                            11
                        } else {
                            10
                        };
                        hot.store(next, Ordering::Relaxed);
                        // Until the windows of the new load have closed.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(_) => return,
                }
            }
        }));
    }
    // Let ingest and planning overlap, then pull the plug.
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if versions.lock().unwrap().len() >= 3 && acked.lock().unwrap().len() >= 200 {
            break;
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    let versions = versions.lock().unwrap().clone();
    assert!(
        versions.len() >= 3 && acked.len() >= 200,
        "{} plans, {} windows",
        versions.len(),
        acked.len()
    );

    let mut server = start(&url);
    let base = server.address.clone();
    // Every acknowledged window survived: re-sending it is a duplicate.
    for &(gpu, seq) in &acked {
        let r = client
            .post(format!("{base}/v1/clusters/c1/telemetry"))
            .json(&window(gpu, seq, 2.0))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "window ({gpu}, {seq}) was acknowledged but lost"
        );
    }
    // Windows in flight at the kill either landed (duplicate) or land now.
    for &(gpu, seq) in attempted.difference(&acked) {
        let r = client
            .post(format!("{base}/v1/clusters/c1/telemetry"))
            .json(&window(gpu, seq, 2.0))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "in-flight window ({gpu}, {seq}): {}",
            r.status()
        );
    }
    // Each attempted window is counted exactly once, as soon as it is acknowledged.
    let w: Value = client
        .get(format!(
            "{base}/v1/clusters/c1/telemetry/windows?limit=1000"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counted = w["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_windows"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(counted as usize, attempted.len());
    // Versions continue: no gap, no fork, next one is max + 1.
    let plans: Value = client
        .get(format!("{base}/v1/clusters/c1/plans?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<i64> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_i64().unwrap())
        .collect();
    let max = stored[0];
    assert!(max >= *versions.iter().max().unwrap());
    assert_eq!(stored, (1..=max).rev().collect::<Vec<_>>());
    // A load no plan so far was fitted to, so the re-plan publishes.
    for gpu in 0..8 {
        let r = client
            .post(format!("{base}/v1/clusters/c1/telemetry"))
            .json(&hot_window(gpu, 20_000, 12))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client
        .post(format!("{base}/v1/clusters/c1/rebalance"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], max + 1);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
});
