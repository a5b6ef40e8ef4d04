use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn tokens_guard_worker_and_admin_routes() {
    let app = spawn_app_with(
        Db::Sqlite,
        &["--worker-token", "w-token", "--admin-token", "a-token"],
    )
    .await;
    let path = "/v1/clusters/c1";
    let r = app.put_json(path, &small_topology()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
    let r = app
        .client
        .put(app.url(path))
        .bearer_auth("w-token")
        .json(&small_topology())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .put(app.url(path))
        .bearer_auth("a-token")
        .json(&small_topology())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth("w-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}
