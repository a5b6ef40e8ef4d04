//! What `/metrics` says about a cluster: freshness, the observed figures
//! only while the telemetry is fresh, and rejections by cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::both;
use crate::helpers::*;

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// Polls `/metrics` until `check` holds (or fails after 10 s).
async fn until(app: &TestApp, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(app).await;
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

both!(observed_figures_follow_the_telemetry, |db| async move {
    // Scheduled cycles every 300 ms over 200 ms windows.
    let app = spawn_app_with(db, &["--plan-interval", "300ms"]).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 3.0).await;
    until(
        &app,
        "the first plan, published by a scheduled cycle",
        |m| m.contains("ballast_plan_version{cluster=\"c1\"} 1"),
    )
    .await;
    // The workers keep reporting until a cycle has scored the plan in
    // force on a fresh window and decided.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 2;
    let text = loop {
        app.send_round("c1", seq, 3.0).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let text = metrics(&app).await;
        // The cycle sets the observed figures before it solves, the
        // estimate's after.
        if text.contains("ballast_observed_model_imbalance_ratio{cluster=\"c1\"}")
            && text.contains("ballast_estimated_model_imbalance_ratio{cluster=\"c1\"}")
        {
            break text;
        }
        assert!(Instant::now() < deadline, "never observed:\n{text}");
    };
    for series in [
        "ballast_observed_layer_imbalance_ratio{cluster=\"c1\",layer=\"0\"}",
        "ballast_observed_gpu_load_ratio{cluster=\"c1\",gpu=\"7\"}",
        "ballast_observed_window_end_timestamp_seconds{cluster=\"c1\"}",
        "ballast_telemetry_latest_window_end_timestamp_seconds{cluster=\"c1\"}",
        "ballast_estimated_model_imbalance_ratio{cluster=\"c1\"}",
        "ballast_planner_net_gain_ratio{cluster=\"c1\"}",
        "ballast_planner_armed_cycles{cluster=\"c1\"}",
        "ballast_store_operation_duration_seconds_count{operation=\"ingest_batch\"}",
        "ballast_store_operation_duration_seconds_count{operation=\"load_windows\"}",
        "ballast_store_operation_duration_seconds_count{operation=\"publish\"}",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // Every worker falls silent: two windows later the observed figures
    // go, instead of holding their last values; the age stays readable.
    let text = until(&app, "observed figures dropped once stale", |m| {
        !m.contains("ballast_observed_model_imbalance_ratio{")
    })
    .await;
    assert!(!text.contains("ballast_observed_gpu_load_ratio{"), "{text}");
    assert!(
        !text.contains("ballast_observed_layer_imbalance_ratio{"),
        "{text}"
    );
    assert!(text.contains("ballast_telemetry_latest_window_end_timestamp_seconds{cluster=\"c1\"}"));
    app.stop().await;
});

both!(rejections_carry_their_cluster, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    let bad = json!({"worker": "node0-gpu0", "seq": 0, "logical_load": [[1.0]]});
    let r = app.post_json("/v1/clusters/c1/telemetry", &bad).await;
    assert_eq!(r.status(), 422);
    // A cluster that does not exist mints no series of its own.
    let r = app.post_json("/v1/clusters/nope/telemetry", &bad).await;
    assert_eq!(r.status(), 404);
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "ballast_ingest_rejections_total{cluster=\"c1\",reason=\"invalid_window\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "ballast_ingest_rejections_total{cluster=\"\",reason=\"cluster_not_found\"} 1"
        ),
        "{text}"
    );
    assert!(!text.contains("nope"), "{text}");
    // Deleting the cluster drops its gauges.
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    app.rebalance("c1").await;
    assert!(metrics(&app)
        .await
        .contains("ballast_plan_version{cluster=\"c1\"} 1"));
    let r = app
        .client
        .delete(app.url("/v1/clusters/c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let text = metrics(&app).await;
    assert!(
        !text.contains("ballast_plan_version{cluster=\"c1\"}"),
        "{text}"
    );
    app.stop().await;
});
