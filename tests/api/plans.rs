use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::both;
use crate::helpers::*;

both!(
    rebalance_needs_telemetry_and_dry_run_publishes_nothing,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        let r = app.post("/v1/clusters/c1/rebalance").await;
        assert_eq!(r.status(), 409);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "no_telemetry");
        app.send_round("c1", 1, 3.0).await;
        app.settle().await;
        let r = app.post("/v1/clusters/c1/rebalance?dry_run=true").await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["published"], false);
        assert_eq!(body["candidate"]["phy2log"].as_array().unwrap().len(), 26);
        // A perfect plan may land a rounding error below 1.0.
        assert!(body["figures"]["predicted_imbalance"].as_f64().unwrap() >= 1.0 - 1e-9);
        assert_eq!(app.get("/v1/clusters/c1/plans/latest").await.status(), 404);
        app.stop().await;
    }
);

both!(latest_etag_long_poll_and_history, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    assert_eq!(app.rebalance("c1").await, 1);
    let r = app.get("/v1/clusters/c1/plans/latest").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let plan: Value = r.json().await.unwrap();
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["reason"], "forced");
    assert_eq!(plan["stats"]["policy"], "optimal");
    // The served document leaves out the derived fields; the figures under
    // optimal routing never lose to the plan's own split.
    assert!(plan.get("log2phy").is_none() && plan.get("logcnt").is_none());
    let routed = plan["stats"]["optimal_routing"]["model_imbalance"]
        .as_f64()
        .unwrap();
    assert!(routed <= plan["stats"]["model_imbalance"].as_f64().unwrap() + 1e-9);
    let r = app
        .client
        .get(app.url("/v1/clusters/c1/plans/latest"))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // A long-poll returns as soon as a newer plan exists.
    let client = app.client.clone();
    let url = app.url("/v1/clusters/c1/plans/latest?wait=20s");
    let waiter = tokio::spawn(async move {
        let r = client
            .get(url)
            .header("if-none-match", "\"1\"")
            .send()
            .await
            .unwrap();
        (r.status(), Instant::now(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    app.send_hot_round("c1", 2, 40).await;
    app.settle().await;
    assert_eq!(app.rebalance("c1").await, 2);
    let published = Instant::now();
    let (status, woke, body) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["version"], 2);
    assert!(woke.saturating_duration_since(published) < Duration::from_secs(1));
    // A long-poll that sees nothing new answers 304 after the wait.
    let r = app
        .client
        .get(app.url("/v1/clusters/c1/plans/latest?wait=200ms"))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let history = app.get_json("/v1/clusters/c1/plans").await;
    let plans = history["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["reason"], "forced");
    assert!(plans[0]["stats"]["migrations"].is_number());
    let r = app
        .client
        .get(app.url("/v1/clusters/c1/plans/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 1);
    assert_eq!(app.get("/v1/clusters/c1/plans/9").await.status(), 404);
    assert_eq!(app.get("/v1/clusters/c1/plans/x").await.status(), 400);
    app.stop().await;
});

both!(diff_and_exports, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    app.rebalance("c1").await;
    app.send_hot_round("c1", 2, 40).await;
    app.settle().await;
    app.rebalance("c1").await;
    let diff = app.get_json("/v1/clusters/c1/plans/2/diff?from=1").await;
    let loads: u64 = diff["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["loads"].as_u64().unwrap())
        .sum();
    assert_eq!(diff["migrations"].as_u64().unwrap(), loads);
    let plan2 = app.get_json("/v1/clusters/c1/plans/2").await;
    assert_eq!(plan2["stats"]["migrations"].as_u64().unwrap(), loads);
    // The proven floor: no plan within the tolerance moves fewer.
    let floor = plan2["stats"]["replan"]["migrations_bound"]
        .as_u64()
        .expect("a re-plan reports its migrations floor");
    assert!(floor <= loads, "floor {floor} > {loads}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let gauge = format!("ballast_plan_migrations_bound{{cluster=\"c1\"}} {floor}");
    assert!(metrics.contains(&gauge), "{gauge} missing");
    // Forced re-plans are decisions and publishes like the loop's, with
    // the time of the latest.
    for line in [
        "ballast_planner_decisions_total{cluster=\"c1\",reason=\"forced\"} 2",
        "ballast_plan_publishes_total{cluster=\"c1\",reason=\"forced\"} 2",
        &format!("ballast_plan_migrations{{cluster=\"c1\"}} {loads}"),
        "ballast_plan_version{cluster=\"c1\"} 2",
        "ballast_plan_published_timestamp_seconds{cluster=\"c1\"} ",
        "ballast_bound_model_imbalance_ratio{cluster=\"c1\"} ",
        "ballast_rollout_duration_seconds{cluster=\"c1\"} ",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // A dry run decides nothing.
    let dry = app
        .client
        .post(app.url("/v1/clusters/c1/rebalance?dry_run=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status(), 200);
    assert_eq!(dry.json::<Value>().await.unwrap()["dry_run"], true);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("ballast_planner_decisions_total{cluster=\"c1\",reason=\"forced\"} 2"));
    let same = app.get_json("/v1/clusters/c1/plans/2/diff?from=2").await;
    assert_eq!(same["migrations"], 0);

    let sglang = app
        .get_json("/v1/clusters/c1/plans/latest?format=sglang")
        .await;
    assert_eq!(sglang.as_object().unwrap().len(), 1);
    // The small preset has one dense layer first: 27 hidden layers.
    let rows = sglang["physical_to_logical_map"].as_array().unwrap();
    assert_eq!(rows.len(), 27);
    assert_eq!(Value::Array(rows[1..].to_vec()), plan2["phy2log"]);
    let vllm = app.get_json("/v1/clusters/c1/plans/2?format=vllm").await;
    assert_eq!(vllm, plan2["phy2log"]);
    let state = app
        .get_json("/v1/clusters/c1/plans/2?format=vllm-eplb-state")
        .await;
    assert!(state["logical_replica_count"].is_array());
    let r = app.get("/v1/clusters/c1/plans/latest?format=trtllm").await;
    assert_eq!(r.headers()["content-type"], "application/yaml");
    let yaml = r.text().await.unwrap();
    assert!(yaml.starts_with("num_slots: 80"));
    assert!(yaml.contains("\n  1: [") && yaml.contains("\n  26: ["));
    let r = app.get("/v1/clusters/c1/plans/latest?format=onnx").await;
    assert_eq!(r.status(), 400);

    // Without the model layout, the engines that index by model layer are
    // refused with a message that names the field to add.
    let mut bare = small_topology();
    for field in ["num_hidden_layers", "first_moe_layer", "mtp_layers"] {
        bare.as_object_mut().unwrap().remove(field);
    }
    app.put_json("/v1/clusters/c1", &bare).await;
    app.send_round("c1", 3, 3.0).await;
    app.settle().await;
    app.rebalance("c1").await;
    let r = app.get("/v1/clusters/c1/plans/latest?format=sglang").await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_topology");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("`first_moe_layer`"));
    let r = app.get("/v1/clusters/c1/plans/latest?format=vllm").await;
    assert_eq!(r.status(), 200);
    app.stop().await;
});

both!(sse_streams_new_plans, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 3.0).await;
    app.settle().await;
    app.rebalance("c1").await;
    let r = app.get("/v1/clusters/c1/plans/stream").await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let mut published = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("id: 2") {
        let chunk = tokio::time::timeout_at(deadline.into(), body.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("id: 1") && !published {
            published = true;
            app.send_hot_round("c1", 2, 40).await;
            app.settle().await;
            app.rebalance("c1").await;
        }
    }
    assert!(text.contains("event: plan"));
    app.stop().await;
});

both!(
    planner_loop_publishes_and_records_decisions,
    |db| async move {
        let app = spawn_app_with(db, &["--plan-interval", "200ms", "--confirm-cycles", "1"]).await;
        app.create_small("c1").await;
        app.send_round("c1", 1, 3.0).await;
        let mut published = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if app.get("/v1/clusters/c1/plans/latest").await.status() == 200 {
                published = true;
                break;
            }
        }
        assert!(published, "the loop publishes the first plan");
        // Steady load: later cycles find nothing worth moving.
        app.send_round("c1", 2, 3.0).await;
        // A cycle re-plans before it decides (about 2 s in a debug build).
        let deadline = Instant::now() + Duration::from_secs(30);
        let reasons = loop {
            let decisions = app.get_json("/v1/clusters/c1/decisions?limit=100").await;
            let reasons: Vec<String> = decisions["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["reason"].as_str().unwrap().to_string())
                .collect();
            if reasons.iter().any(|r| r == "below_threshold") || Instant::now() > deadline {
                break reasons;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
        assert!(reasons.contains(&"initial"), "{reasons:?}");
        assert!(reasons.contains(&"below_threshold"), "{reasons:?}");
        let latest = app.get_json("/v1/clusters/c1/plans/latest").await;
        assert_eq!(
            latest["version"], 1,
            "steady load must not churn plans: {reasons:?}"
        );
        app.stop().await;
    }
);

both!(
    a_forced_replan_equal_to_the_plan_in_force_publishes_nothing,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        app.send_round("c1", 1, 3.0).await;
        app.settle().await;
        assert_eq!(app.rebalance("c1").await, 1);
        // The same load again: the migration-aware candidate is the plan in force.
        for path in [
            "/v1/clusters/c1/rebalance?dry_run=true",
            "/v1/clusters/c1/rebalance",
        ] {
            let r = app.post(path).await;
            assert_eq!(r.status(), 200, "{path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["published"], false, "{path}: {body}");
            assert_eq!(body["unchanged"], true, "{path}: {body}");
        }
        let r = app.post("/v1/clusters/c1/rebalance").await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["version"], 1, "{body}");
        assert_eq!(body["reason"], "unchanged");
        assert!(
            body["detail"].as_str().unwrap().contains("version 1"),
            "{body}"
        );
        let history = app.get_json("/v1/clusters/c1/plans").await;
        assert_eq!(history["plans"].as_array().unwrap().len(), 1);
        let r = app
            .client
            .get(app.url("/v1/clusters/c1/plans/latest"))
            .header("if-none-match", "\"1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "no new version for GPUs to acknowledge");
        // A load that calls for other placements still publishes.
        app.send_hot_round("c1", 2, 40).await;
        app.settle().await;
        let r = app.post("/v1/clusters/c1/rebalance").await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (body["version"].clone(), body["unchanged"].clone()),
            (2.into(), false.into()),
            "{body}"
        );
        app.stop().await;
    }
);
