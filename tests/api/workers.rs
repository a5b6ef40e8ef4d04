use std::time::Duration;

use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

both!(acks_and_rollout, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    let v = app.rebalance("c1").await;
    for gpu in 0..5 {
        let r = app
            .post_json(
                &format!("/v1/clusters/c1/workers/node{}-gpu{}/ack", gpu / 4, gpu % 4),
                &json!({"version": v}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let rollout = app
        .get_json(&format!("/v1/clusters/c1/plans/{v}/rollout"))
        .await;
    assert_eq!(rollout["applied"], 5);
    assert_eq!(rollout["complete"], false);
    assert_eq!(
        rollout["other_versions"][0]["workers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let r = app
        .post_json(
            "/v1/clusters/c1/workers/node0-gpu0/ack",
            &json!({"version": 42}),
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "unknown_plan_version"
    );
    let r = app
        .post_json(
            "/v1/clusters/c1/workers/node9-gpu0/ack",
            &json!({"version": v}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unknown_worker");
    app.stop().await;
});

both!(
    silent_workers_go_down_and_can_be_excluded,
    |db| async move {
        let app = spawn_app_with(db, &["--worker-timeout", "1s", "--exclude-down-workers"]).await;
        app.create_small("c1").await;
        app.send_round("c1", 1, 3.0).await;
        app.settle().await;
        app.rebalance("c1").await;
        // GPUs 0..7 keep reporting; node1-gpu3 (GPU 7) falls silent.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reporter = {
            let (client, url, stop) = (
                app.client.clone(),
                app.url("/v1/clusters/c1/telemetry"),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut seq = 2;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for gpu in 0..7 {
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
        let mut down = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let workers = app.get_json("/v1/clusters/c1/workers").await;
            if workers["workers"][7]["status"] == "down" && workers["workers"][0]["status"] == "up"
            {
                down = true;
                break;
            }
        }
        assert!(down, "the silent worker is marked down");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = app.rebalance("c1").await;
        let plan = app.get_json(&format!("/v1/clusters/c1/plans/{v}")).await;
        let shares = plan["replica_share"]
            .as_array()
            .expect("shares zero the excluded GPU");
        for layer in shares {
            let gpu7 = &layer.as_array().unwrap()[70..80];
            assert!(gpu7.iter().all(|s| s.as_f64().unwrap() == 0.0));
        }
        assert_eq!(plan["stats"]["excluded_gpus"], json!([7]));
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(
            metrics.contains("ballast_workers{cluster=\"c1\",state=\"down\"} 1"),
            "{metrics}"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reporter.await.unwrap();
        app.stop().await;
    }
);
