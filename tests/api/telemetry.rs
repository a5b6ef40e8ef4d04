use serde_json::{json, Value};

use ballast_protocol::window_binary::{self, ValueType};
use ballast_protocol::{RawLoad, RawWindow};

use crate::both;
use crate::helpers::*;

async fn tokens(app: &TestApp, cluster: &str) -> (u64, f64) {
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

fn total(w: &Value) -> f64 {
    w["logical_load"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_f64().unwrap())
        .sum()
}

both!(windows_are_idempotent_and_counted_once, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    let w = window(3, 7, 1.0);
    let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    for _ in 0..3 {
        let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
    }
    app.settle().await;
    assert_eq!(tokens(&app, "c1").await, (1, total(&w)));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ballast_ingest_windows_total{cluster=\"c1\",result=\"duplicate\"} 3"),
        "{metrics}"
    );
    app.stop().await;
});

both!(
    bad_windows_are_refused_and_nothing_is_stored,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        let good = window(0, 5, 1.0);
        assert_eq!(
            app.post_json("/v1/clusters/c1/telemetry", &good)
                .await
                .status(),
            202
        );
        let cases: Vec<(Value, u16, &str)> = vec![
            (
                json!({"worker": "node0-gpu0", "seq": 6, "logical_load": [[1.0]]}),
                422,
                "invalid_window",
            ),
            (
                {
                    let mut w = window(0, 6, 1.0);
                    w["logical_load"][3][9] = json!(-1);
                    w
                },
                422,
                "invalid_window",
            ),
            (
                {
                    let mut w = window(0, 6, 1.0);
                    w["worker"] = json!("node7-gpu0");
                    w
                },
                422,
                "unknown_worker",
            ),
            (window(0, 4, 1.0), 409, "seq_not_monotone"),
            (json!({"worker": "node0-gpu0"}), 400, "malformed_window"),
            (
                {
                    let mut w = window(0, 6, 1.0);
                    w["slot_load"] = json!([[1]]);
                    w
                },
                400,
                "malformed_window",
            ),
        ];
        for (body, status, code) in cases {
            let r = app.post_json("/v1/clusters/c1/telemetry", &body).await;
            assert_eq!(r.status(), status, "{code}");
            let err: Value = r.json().await.unwrap();
            assert_eq!(err["code"], code, "{err}");
            assert!(!err["message"].as_str().unwrap().is_empty());
        }
        let r = app
            .client
            .post(app.url("/v1/clusters/c1/telemetry"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        app.settle().await;
        assert_eq!(tokens(&app, "c1").await, (1, total(&good)));
        let workers = app.get_json("/v1/clusters/c1/workers").await;
        assert_eq!(workers["workers"][0]["last_seq"], 5);
        app.stop().await;
    }
);

both!(binary_encoding_matches_json, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    let w = window(2, 1, 2.0);
    let values: Vec<f64> = w["logical_load"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let raw = RawWindow {
        worker: "node0-gpu2".into(),
        seq: 1,
        start_ms: None,
        end_ms: None,
        load: RawLoad::Logical {
            rows: 26,
            cols: 64,
            values,
        },
        covisit: None,
    };
    let r = app
        .client
        .post(app.url("/v1/clusters/c1/telemetry"))
        .header("content-type", window_binary::CONTENT_TYPE)
        .body(window_binary::encode(&raw, ValueType::U32))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // The JSON form of the same (worker, seq) is the same window.
    let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/v1/clusters/c1/telemetry"))
        .header("content-type", window_binary::CONTENT_TYPE)
        .body(vec![1u8, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.settle().await;
    assert_eq!(tokens(&app, "c1").await, (1, total(&w)));
    app.stop().await;
});

both!(slot_load_maps_through_its_plan, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 1.0).await;
    app.settle().await;
    let version = app.rebalance("c1").await;
    let before = tokens(&app, "c1").await;
    let slot_load: Vec<Vec<u32>> = (0..26).map(|_| (0..10).map(|s| s + 1).collect()).collect();
    let body =
        json!({"worker": "node1-gpu1", "seq": 2, "plan_version": version, "slot_load": slot_load});
    let r = app.post_json("/v1/clusters/c1/telemetry", &body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let bad = json!({"worker": "node1-gpu1", "seq": 3, "plan_version": 99, "slot_load": slot_load});
    let r = app.post_json("/v1/clusters/c1/telemetry", &bad).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "unknown_plan_version"
    );
    app.settle().await;
    let after = tokens(&app, "c1").await;
    assert_eq!(after.0, before.0 + 1);
    assert_eq!(after.1, before.1 + 26.0 * 55.0);
    app.stop().await;
});
