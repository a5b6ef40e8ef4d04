//! The fault suite for ingest and topologies (issue 13, items 1, 2, 3, 6
//! and the body-parsing part of 7): each test reproduces a defect an audit
//! found, as a hostile or unlucky client would meet it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::both;
use crate::helpers::*;

/// `--window` in [`FAST`].
const WINDOW_MS: i64 = 200;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// `(worker windows, tokens)` over the current lineage's load windows.
async fn counted(app: &TestApp, cluster: &str) -> (u64, f64) {
    let w = app
        .get_json(&format!(
            "/v1/clusters/{cluster}/telemetry/windows?limit=1000"
        ))
        .await;
    let windows = w["windows"].as_array().unwrap();
    (
        windows
            .iter()
            .map(|w| w["worker_windows"].as_u64().unwrap())
            .sum(),
        windows.iter().map(|w| w["tokens"].as_f64().unwrap()).sum(),
    )
}

/// Sends `windows` all at once (so that they share group-commit batches)
/// and returns each one's status and body.
async fn send_together(app: &TestApp, cluster: &str, windows: &[Value]) -> Vec<(u16, Value)> {
    let path = format!("/v1/clusters/{cluster}/telemetry");
    let sends = windows.iter().map(|w| {
        let path = &path;
        async move {
            let r = app.post_json(path, w).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    join_all(sends).await
}

/// A connection to the app's database, beside it.
async fn database(app: &TestApp) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&app.database_url)
        .await
        .expect("connect to the test database")
}

/// Writes one layer row of a cluster load window by hand (lineage 1).
async fn store_layer(app: &TestApp, cluster: &str, bucket: i64, blob: Vec<u8>) {
    let mut db = database(app).await;
    sqlx::query(
        "INSERT INTO load_window_layers (cluster, lineage, bucket, layer, windows, load, updated_at_ms)
         VALUES ($1, 1, $2, 0, 1, $3, 0)",
    )
    .bind(cluster)
    .bind(bucket)
    .bind(blob)
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
}

both!(
    agents_restarting_at_seq_0_after_a_topology_change_are_counted,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        for seq in 0..4 {
            app.send_round("c1", seq, 1.0).await;
        }
        let mut changed = small_topology();
        changed["slots_per_gpu"] = json!(12);
        let r = app.put_json("/v1/clusters/c1", &changed).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["new_lineage"], true);
        // Restarted agents begin again at 0, all at once: seqs 0..3 were
        // used in the old lineage and are new in this one.
        for seq in 0..4 {
            let round: Vec<Value> = (0..8).map(|gpu| window(gpu, seq, 2.0)).collect();
            for (status, body) in send_together(&app, "c1", &round).await {
                assert_eq!(status, 202, "seq {seq}: {body}");
                assert_eq!(body["status"], "accepted", "{body}");
            }
        }
        // Idempotency still holds within the new lineage.
        let r = app
            .post_json("/v1/clusters/c1/telemetry", &window(5, 3, 2.0))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
        app.settle().await;
        assert_eq!(counted(&app, "c1").await.0, 32);
        let workers = app.get_json("/v1/clusters/c1/workers").await;
        for w in workers["workers"].as_array().unwrap() {
            assert_eq!(w["last_seq"], 3, "{w}");
        }
        app.stop().await;
    }
);

both!(
    one_bad_worker_does_not_fail_healthy_workers_in_its_batch,
    |db| async move {
        let app = spawn_app(db).await;
        for c in ["c1", "c2", "c3"] {
            app.create_small(c).await;
        }
        for seq in 0..3 {
            app.send_round("c1", seq, 1.0).await;
        }
        let mut changed = small_topology();
        changed["slots_per_gpu"] = json!(12);
        assert_eq!(
            app.put_json("/v1/clusters/c1", &changed).await.status(),
            200
        );
        // Worker 0 of c1 restarts at 0 (a seq its old lineage used); the
        // other workers of c1 carry on above anything the old lineage saw,
        // and c2 and c3 are busy beside it, so that windows share batches.
        let mut healthy_failures = Vec::new();
        let mut restarted = Vec::new();
        for round in 0..10 {
            let c1: Vec<Value> = (0..8)
                .map(|gpu| {
                    let seq = if gpu == 0 { round } else { 100 + round };
                    window(gpu, seq, 1.0)
                })
                .collect();
            let others: Vec<Value> = (0..8).map(|gpu| window(gpu, round, 1.0)).collect();
            let (c1, c2, c3) = tokio::join!(
                send_together(&app, "c1", &c1),
                send_together(&app, "c2", &others),
                send_together(&app, "c3", &others)
            );
            let healthy = c1.iter().skip(1).chain(&c2).chain(&c3);
            for (status, body) in healthy {
                if *status != 202 {
                    healthy_failures.push(format!("round {round}: {status} {body}"));
                }
            }
            restarted.push(c1[0].clone());
        }
        assert!(healthy_failures.is_empty(), "{healthy_failures:#?}");
        for (status, body) in restarted {
            assert_eq!(status, 202, "the restarted worker: {body}");
        }
        app.settle().await;
        for c in ["c1", "c2", "c3"] {
            assert_eq!(counted(&app, c).await.0, 80, "{c}");
        }
        app.stop().await;
    }
);

both!(
    a_corrupt_stored_window_fails_only_its_own_cluster,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("sick").await;
        app.create_small("well").await;
        // A stored window of `sick` that no longer decodes (unknown tag),
        // in the bucket its next windows land in.
        let end = now_ms() - 1_000;
        store_layer(&app, "sick", end.div_euclid(WINDOW_MS), vec![9, 9, 9]).await;
        let mut failures = Vec::new();
        let mut sick_answers = Vec::new();
        for seq in 0..5 {
            let mut sick: Vec<Value> = (0..8).map(|gpu| window(gpu, seq, 1.0)).collect();
            for w in &mut sick {
                w["window_end"] = json!(rfc3339(end));
            }
            let well: Vec<Value> = (0..8).map(|gpu| window(gpu, seq, 1.0)).collect();
            let (sick, well) = tokio::join!(
                send_together(&app, "sick", &sick),
                send_together(&app, "well", &well)
            );
            for (status, body) in well {
                if status != 202 {
                    failures.push(format!("well seq {seq}: {status} {body}"));
                }
            }
            sick_answers.extend(sick);
        }
        assert!(failures.is_empty(), "{failures:#?}");
        for (status, body) in sick_answers {
            // Its own data is bad: a server error that says so, not "the
            // database is unavailable".
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["code"], "stored_data_corrupt", "{body}");
        }
        app.settle().await;
        assert_eq!(counted(&app, "well").await.0, 40);
        app.stop().await;
    }
);

both!(
    rebalance_on_a_corrupt_window_names_the_corruption,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        // A closed window whose sums overflowed (what 1e308 loads left behind).
        let bucket = (now_ms() - 5_000).div_euclid(WINDOW_MS);
        let mut blob = vec![2u8];
        for _ in 0..64 {
            blob.extend_from_slice(&f64::INFINITY.to_le_bytes());
        }
        store_layer(&app, "c1", bucket, blob).await;
        let r = app.post("/v1/clusters/c1/rebalance").await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["code"], "stored_data_corrupt", "{body}");
        app.stop().await;
    }
);

both!(overflowing_loads_are_refused, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    for (seq, value) in [
        (1, json!(1e308)),
        (2, json!(1.0000001e15)),
        (3, json!(1e300)),
    ] {
        let mut w = window(0, seq, 1.0);
        if seq == 1 {
            // Every cell: finite, but its sums are not.
            w["logical_load"] = json!(vec![vec![value.clone(); 64]; 26]);
        } else {
            w["logical_load"][25][63] = value.clone();
        }
        let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
        assert_eq!(r.status(), 422, "{value}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_window", "{body}");
        assert!(body["message"].as_str().unwrap().contains("1e15"), "{body}");
    }
    // The largest count allowed is accepted; nothing of the others was stored.
    let mut w = window(0, 4, 1.0);
    w["logical_load"][0][0] = json!(1e15);
    assert_eq!(
        app.post_json("/v1/clusters/c1/telemetry", &w)
            .await
            .status(),
        202
    );
    app.settle().await;
    assert_eq!(counted(&app, "c1").await.0, 1);
    let workers = app.get_json("/v1/clusters/c1/workers").await;
    assert_eq!(workers["workers"][0]["last_seq"], 4);
    app.stop().await;
});

both!(absurd_topologies_are_refused_at_once, |db| async move {
    let app = spawn_app(db).await;
    // Each case: fields set on the small topology, and what the message names.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"num_nodes": 500_000_000}), "num_nodes"),
        (
            json!({"num_nodes": 100_000, "gpus_per_node": 8}),
            "num_nodes",
        ),
        // Fine one by one, too many GPUs together.
        (
            json!({"num_nodes": 1000, "gpus_per_node": 100}),
            "GPUs in all",
        ),
        (json!({"num_layers": 1_000_000}), "num_layers"),
        (
            json!({"num_logical_experts": i64::MAX}),
            "num_logical_experts",
        ),
        (json!({"slots_per_gpu": 100_000}), "slots_per_gpu"),
        (json!({"num_groups": 4096}), "num_groups"),
        // Contract: unknown fields and nulls are refused, not ignored.
        (json!({"gpu_speeds": vec![1.0; 8]}), "gpu_speeds"),
        (json!({"gpu_speed": null}), "gpu_speed"),
    ];
    for (patch, named) in cases {
        let mut t = small_topology();
        for (field, value) in patch.as_object().unwrap() {
            t[field] = value.clone();
        }
        let started = Instant::now();
        let r = app.put_json("/v1/clusters/c1", &t).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{patch}");
        // Not a topology document: 400; a well-formed one refused: 422.
        let malformed = named.starts_with("gpu_speed");
        assert_eq!(r.status(), if malformed { 400 } else { 422 }, "{patch}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_topology", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{patch}: {body}"
        );
        assert_eq!(app.get("/v1/clusters/c1").await.status(), 404);
    }
    // A body no topology needs is refused before it is parsed.
    let mut t = small_topology();
    t["gpu_speed"] = json!(vec![1.0; 60_000]);
    let r = app.put_json("/v1/clusters/c1", &t).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );
    // DeepSeek-V3 decode scale still fits.
    let decode: Value =
        serde_json::from_str(include_str!("../../data/topologies/decode.json")).unwrap();
    assert_eq!(app.put_json("/v1/clusters/c1", &decode).await.status(), 201);
    app.stop().await;
});

both!(
    window_bodies_are_parsed_as_the_contract_says,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        let mut ragged = window(0, 1, 1.0);
        ragged["logical_load"][7] = json!([1, 2, 3]);
        let mut both_loads = window(0, 1, 1.0);
        both_loads["slot_load"] = json!([[1]]);
        both_loads["plan_version"] = json!(1);
        let cases: Vec<(Value, u16, &str)> = vec![
            // Ragged rows are a shape error like any other.
            (ragged, 422, "invalid_window"),
            (both_loads, 400, "malformed_window"),
            (
                json!({"worker": "node0-gpu0", "seq": 1}),
                400,
                "malformed_window",
            ),
        ];
        for (body, status, code) in cases {
            let r = app.post_json("/v1/clusters/c1/telemetry", &body).await;
            assert_eq!(r.status(), status, "{code}");
            assert_eq!(r.json::<Value>().await.unwrap()["code"], code);
        }
        // A body larger than any window of this topology (26 x 64 values
        // and 26 x 64 x 8 co-visit counts, about 720 KB): refused unread.
        // (Small enough for the client to finish sending before the
        // refusal, which a real client need not.)
        let huge = format!(
            "{{\"worker\": \"node0-gpu0\", \"seq\": 1, \"logical_load\": [[{}0]]}}",
            "0,".repeat(400_000)
        );
        let r = app
            .client
            .post(app.url("/v1/clusters/c1/telemetry"))
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["connection"], "close");
        assert_eq!(r.headers()["connection"], "close");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "payload_too_large"
        );
        let r = app
            .post_json("/v1/clusters/c1/telemetry", &window(0, 1, 1.0))
            .await;
        assert_eq!(r.status(), 202);
        app.stop().await;
    }
);

both!(deleting_a_cluster_removes_everything, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.create_small("c2").await;
    app.send_round("c1", 1, 1.0).await;
    app.send_round("c2", 1, 1.0).await;
    app.settle().await;
    let version = app.rebalance("c1").await;
    let r = app
        .post_json(
            "/v1/clusters/c1/workers/node0-gpu0/ack",
            &json!({"version": version}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let r = app
        .client
        .delete(app.url("/v1/clusters/c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app.get("/v1/clusters/c1").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "cluster_not_found"
    );
    let r = app
        .client
        .delete(app.url("/v1/clusters/c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .post_json("/v1/clusters/c1/telemetry", &window(0, 2, 1.0))
        .await;
    assert_eq!(r.status(), 404);
    let mut db = database(&app).await;
    for table in [
        "clusters WHERE name = 'c1'",
        "workers WHERE cluster = 'c1'",
        "telemetry_receipts WHERE cluster = 'c1'",
        "load_window_layers WHERE cluster = 'c1'",
        "plans WHERE cluster = 'c1'",
        "acks WHERE cluster = 'c1'",
        "planner_decisions WHERE cluster = 'c1'",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    db.close().await.unwrap();
    // The other cluster is untouched.
    assert_eq!(counted(&app, "c2").await.0, 8);
    // Created again, it starts afresh.
    app.create_small("c1").await;
    let c = app.get_json("/v1/clusters/c1").await;
    assert_eq!(c["lineage"], 1);
    assert_eq!(c["latest_version"], Value::Null);
    let r = app.get("/v1/clusters/c1/plans/latest").await;
    assert_eq!(r.status(), 404);
    let r = app
        .post_json("/v1/clusters/c1/telemetry", &window(0, 1, 1.0))
        .await;
    assert_eq!(r.status(), 202);
    app.stop().await;
});
