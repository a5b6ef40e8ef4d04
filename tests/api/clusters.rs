use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

both!(topology_lifecycle, |db| async move {
    let app = spawn_app(db).await;
    app.create_small("c1").await;
    let c = app.get_json("/v1/clusters/c1").await;
    assert_eq!(c["topology"]["num_logical_experts"], 64);
    assert_eq!(c["lineage"], 1);
    assert_eq!(c["workers"]["unknown"], 8);

    let r = app.put_json("/v1/clusters/c1", &small_topology()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["changed"], false);
    assert_eq!(body["new_lineage"], false);

    // With a plan in place, a new topology starts a new lineage.
    app.send_round("c1", 1, 1.0).await;
    app.settle().await;
    assert_eq!(app.rebalance("c1").await, 1);
    let mut bigger = small_topology();
    bigger["num_nodes"] = json!(4);
    let r = app.put_json("/v1/clusters/c1", &bigger).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["new_lineage"], true, "{body}");
    assert_eq!(body["lineage"], 2);
    assert_eq!(body["retired_version"], 1);
    let r = app.get("/v1/clusters/c1/plans/latest").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "no_plan");
    // The old plan stays readable, and versions keep counting.
    assert_eq!(app.get("/v1/clusters/c1/plans/1").await.status(), 200);
    for gpu in 0..16 {
        let mut w = window(gpu % 8, 10, 1.0);
        w["worker"] = json!(format!("node{}-gpu{}", gpu / 4, gpu % 4));
        let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    app.settle().await;
    assert_eq!(app.rebalance("c1").await, 2);
    app.stop().await;
});

both!(bad_topologies_and_names, |db| async move {
    let app = spawn_app(db).await;
    let r = app
        .put_json("/v1/clusters/c1", &json!({"num_layers": 1}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_topology");
    let mut t = small_topology();
    t["slots_per_gpu"] = json!(1);
    let r = app.put_json("/v1/clusters/c1", &t).await;
    // Well-formed but impossible: 422, like a load of the wrong shape.
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("slots_per_gpu"),
        "{body}"
    );
    // JSON Schema integers: `26.0` is the integer 26.
    let mut t = small_topology();
    t["num_layers"] = json!(26.0);
    t["first_moe_layer"] = json!(1.0);
    let r = app.put_json("/v1/clusters/c2", &t).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = app
        .put_json("/v1/clusters/Bad%20Name", &small_topology())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "invalid_cluster_name"
    );
    let r = app.get("/v1/clusters/missing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "cluster_not_found"
    );
    app.stop().await;
});
