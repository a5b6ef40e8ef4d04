//! Issue 13, item 9: a dead GPU must not cost locality. With
//! `--exclude-down-workers` a plan made while a GPU is down gives that GPU
//! no load, keeps every group on its node (the node has one GPU fewer) and
//! moves nothing it need not; when the GPU is back it carries load again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

/// 2 nodes × 4 GPUs × 12 slots for 64 experts in 8 groups: a node hosts 32
/// experts, so with one GPU down its 36 live slots still hold them all.
fn roomy_topology() -> Value {
    json!({"num_layers": 26, "num_logical_experts": 64, "num_groups": 8,
           "num_nodes": 2, "gpus_per_node": 4, "slots_per_gpu": 12})
}

const SLOTS_PER_GPU: usize = 12;
const SLOTS_PER_NODE: usize = 48;
const EXPERTS_PER_GROUP: usize = 8;
/// node1-gpu1.
const DEAD: usize = 5;

fn rows(plan: &Value, field: &str) -> Option<Vec<Vec<f64>>> {
    plan[field].as_array().map(|layers| {
        layers
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    })
}

/// The node holding each group's replicas, per layer; panics when a group
/// spans nodes.
fn homes(phy2log: &[Vec<f64>]) -> Vec<Vec<usize>> {
    phy2log
        .iter()
        .enumerate()
        .map(|(l, row)| {
            let mut home = vec![usize::MAX; 8];
            for (slot, &e) in row.iter().enumerate() {
                let group = e as usize / EXPERTS_PER_GROUP;
                let node = slot / SLOTS_PER_NODE;
                assert!(
                    home[group] == usize::MAX || home[group] == node,
                    "layer {l}: group {group} is on nodes {} and {node}",
                    home[group]
                );
                home[group] = node;
            }
            home
        })
        .collect()
}

/// GPU `gpu`'s slots in one layer.
fn gpu_slots(row: &[f64], gpu: usize) -> &[f64] {
    &row[gpu * SLOTS_PER_GPU..(gpu + 1) * SLOTS_PER_GPU]
}

async fn wait_for_status(app: &TestApp, gpu: usize, status: &str) {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let workers = app.get_json("/v1/clusters/c1/workers").await;
        if workers["workers"][gpu]["status"] == status && workers["workers"][0]["status"] == "up" {
            return;
        }
    }
    panic!("worker {gpu} never became {status}");
}

both!(a_down_gpu_keeps_the_plan_node_local, |db| async move {
    let app = spawn_app_with(db, &["--worker-timeout", "1s", "--exclude-down-workers"]).await;
    let r = app.put_json("/v1/clusters/c1", &roomy_topology()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    let v1 = app.rebalance("c1").await;
    let before = app.get_json(&format!("/v1/clusters/c1/plans/{v1}")).await;
    let old = rows(&before, "phy2log").unwrap();
    let old_homes = homes(&old);

    // Every GPU reports the same load, but GPU 5 falls silent until `dead`
    // is cleared.
    let (stop, dead) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
    );
    let reporter = {
        let (client, url) = (app.client.clone(), app.url("/v1/clusters/c1/telemetry"));
        let (stop, dead) = (stop.clone(), dead.clone());
        tokio::spawn(async move {
            let mut seq = 2;
            while !stop.load(Ordering::Relaxed) {
                for gpu in (0..8).filter(|&g| g != DEAD || !dead.load(Ordering::Relaxed)) {
                    let r = client
                        .post(&url)
                        .json(&window(gpu, seq, 3.0))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_for_status(&app, DEAD, "down").await;
    app.settle().await;
    let v2 = app.rebalance("c1").await;
    let during = app.get_json(&format!("/v1/clusters/c1/plans/{v2}")).await;
    assert_eq!(during["stats"]["excluded_gpus"], json!([DEAD]));
    assert_eq!(
        during["stats"]["placement"], "hierarchical",
        "{}",
        during["stats"]
    );
    let new = rows(&during, "phy2log").unwrap();
    let shares = rows(&during, "replica_share").expect("shares zero the down GPU");
    // Node-local, every group where it was, nothing loaded onto the dead GPU
    // and no load on it.
    assert_eq!(homes(&new), old_homes);
    for (l, (row, share)) in new.iter().zip(&shares).enumerate() {
        assert_eq!(gpu_slots(row, DEAD), gpu_slots(&old[l], DEAD), "layer {l}");
        assert!(
            gpu_slots(share, DEAD).iter().all(|&s| s == 0.0),
            "layer {l}"
        );
        // The same load: node 0, which lost nothing, keeps its slots.
        assert_eq!(row[..SLOTS_PER_NODE], old[l][..SLOTS_PER_NODE], "layer {l}");
    }
    // Whatever moved, moved within node 1's live GPUs.
    let migrations = during["stats"]["migrations"].as_u64().unwrap();
    assert!(migrations <= 26 * 36, "{migrations}");

    // The GPU comes back: the next plan loads it again.
    dead.store(false, Ordering::Relaxed);
    wait_for_status(&app, DEAD, "up").await;
    app.settle().await;
    let v3 = app.rebalance("c1").await;
    let after = app.get_json(&format!("/v1/clusters/c1/plans/{v3}")).await;
    assert_eq!(after["stats"]["excluded_gpus"], json!([]));
    let back = rows(&after, "phy2log").unwrap();
    homes(&back);
    if let Some(shares) = rows(&after, "replica_share") {
        assert!(shares
            .iter()
            .all(|s| gpu_slots(s, DEAD).iter().sum::<f64>() > 0.0));
    }
    stop.store(true, Ordering::Relaxed);
    reporter.await.unwrap();
    app.stop().await;
});
