//! Requests where the server and the OpenAPI document used to disagree
//! (issue 13, item 7): what the document allows is served, what it forbids
//! is refused.

use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

both!(limits_outside_the_document_are_refused, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    for path in [
        "/v1/clusters/c1/plans",
        "/v1/clusters/c1/decisions",
        "/v1/clusters/c1/telemetry/windows",
    ] {
        for limit in ["1001", "0", "-1"] {
            let r = app.get(&format!("{path}?limit={limit}")).await;
            assert_eq!(r.status(), 400, "{path}?limit={limit}");
            assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_query");
        }
        for limit in ["1", "1000", "395.0"] {
            let r = app.get(&format!("{path}?limit={limit}")).await;
            assert_eq!(r.status(), 200, "{path}?limit={limit}");
        }
    }
    app.stop().await;
});

both!(
    plan_versions_and_waits_follow_the_document,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        app.send_round("c1", 1, 2.0).await;
        app.settle().await;
        let v = app.rebalance("c1").await;
        // An empty wait is no wait; `395.0` is the integer 395.
        assert_eq!(
            app.get("/v1/clusters/c1/plans/latest?wait=").await.status(),
            200
        );
        assert_eq!(
            app.get(&format!("/v1/clusters/c1/plans/{v}.0"))
                .await
                .status(),
            200
        );
        // Versions beyond i64 are outside the document's maximum: 400, not 404.
        let r = app.get("/v1/clusters/c1/plans/9223372036854775808").await;
        assert_eq!(r.status(), 400);
        let r = app.get("/v1/clusters/c1/plans/latest?wait=1h").await;
        assert_eq!(r.status(), 400);
        app.stop().await;
    }
);

both!(acks_take_integral_numbers, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    app.send_round("c1", 1, 2.0).await;
    app.settle().await;
    let v = app.rebalance("c1").await;
    let path = "/v1/clusters/c1/workers/node0-gpu0/ack";
    let r = app.post_json(path, &json!({ "version": v as f64 })).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app.post_json(path, &json!({ "version": 1.5 })).await;
    assert_eq!(r.status(), 400);
    app.stop().await;
});

both!(a_topology_must_be_sent_as_json, |db| async move {
    let app = spawn_app(db).await;
    let body = serde_json::to_string(&small_topology()).unwrap();
    let r = app
        .client
        .put(app.url("/v1/clusters/c1"))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "unsupported_media_type"
    );
    let r = app
        .client
        .put(app.url("/v1/clusters/c1"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.stop().await;
});
