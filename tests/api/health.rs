use std::time::Duration;

use serde_json::Value;

use crate::both;
use crate::helpers::*;

both!(health_and_readiness, |db| async move {
    let app = spawn_app(db).await;
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    let mut ready = None;
    for _ in 0..100 {
        let r = app.get("/readyz").await;
        if r.status() == 200 {
            ready = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = ready.expect("service becomes ready");
    assert_eq!(ready["checks"]["migrations"]["ok"], true);
    assert_eq!(ready["checks"]["planner"]["ok"], true);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ballast_planner_heartbeat_timestamp_seconds"),
        "{metrics}"
    );
    app.stop().await;
});

both!(stalled_planner_turns_readiness_red, |db| async move {
    // A tick far longer than the stall timeout: the loop beats once at start,
    // then stays silent, exactly like a hung solve.
    let app = spawn_app_with(db, &["--tick", "1h", "--planner-stall-timeout", "300ms"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["planner"]["ok"], false);
    assert_eq!(body["checks"]["database"]["ok"], true);
    app.stop().await;
});

#[tokio::test]
async fn openapi_and_json_errors() {
    let app = spawn_app(Db::Sqlite).await;
    let doc = app.get_json("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let r = app.get("/no/such/route").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    let r = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );
    app.stop().await;
}
