//! Two service replicas on one PostgreSQL database: both ingest and serve,
//! telemetry is counted once whichever replica took it, concurrent
//! publishing never forks a version, and each replica learns of the other's
//! changes from PostgreSQL notifications (polling is set to a minute here,
//! so nothing else could deliver them in time).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{fresh_database, postgres_url, spawn_app_on, window, Db, TestApp};

async fn wait_for(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let r = app.get(path).await;
        if r.status().is_success() {
            let body: Value = r.json().await.unwrap();
            if ok(&body) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached the expected state on {}", app.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_postgres_without_forking() {
    if postgres_url().is_none() {
        eprintln!("skipped: BALLAST_TEST_POSTGRES_URL is not set");
        return;
    }
    let dir_a = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir_a.path()).await;
    let slow_polling = ["--sync-interval", "60s"];
    let a = spawn_app_on(&url, dir_a, &slow_polling).await;
    let b = spawn_app_on(&url, tempfile::tempdir().unwrap(), &slow_polling).await;

    a.create_small("c1").await;
    wait_for(&b, "/v1/clusters/c1", |_| true).await;

    // Workers spread over both replicas; every window is also re-sent to
    // the other replica, which must count it once.
    let mut sent = 0;
    for seq in 1..=3 {
        for gpu in 0..8 {
            let body = window(gpu, seq, 1.0);
            let (first, second) = if gpu % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let r = first.post_json("/v1/clusters/c1/telemetry", &body).await;
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            let r = second.post_json("/v1/clusters/c1/telemetry", &body).await;
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            sent += 1;
        }
    }
    for app in [&a, &b] {
        let w = app
            .get_json("/v1/clusters/c1/telemetry/windows?limit=1000")
            .await;
        let counted: u64 = w["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker_windows"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, sent, "{w}");
    }
    a.settle().await;

    // Both replicas publish at once, several times over, each time on a
    // new load (a plan equal to the one in force is not published again).
    // Experts 10 and 11 share a group: no one plan serves both hot.
    let mut published = Vec::new();
    for round in 0..4 {
        if round > 0 {
            a.send_hot_round("c1", 3 + round, 10 + round as usize % 2)
                .await;
            a.settle().await;
        }
        let (ra, rb) = tokio::join!(
            a.post("/v1/clusters/c1/rebalance"),
            b.post("/v1/clusters/c1/rebalance")
        );
        for r in [ra, rb] {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            match status {
                201 => published.push(body["version"].as_i64().unwrap()),
                409 => assert_eq!(body["code"], "superseded", "{body}"),
                // The slower replica planned against the faster one's plan.
                200 => assert_eq!(body["unchanged"], true, "{body}"),
                _ => panic!("rebalance answered {status}: {body}"),
            }
        }
    }
    assert!(published.len() >= 4, "{published:?}");
    let distinct: BTreeSet<i64> = published.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        published.len(),
        "a version was published twice"
    );
    let latest = *distinct.last().unwrap();
    assert_eq!(
        distinct,
        (1..=latest).collect::<BTreeSet<_>>(),
        "versions have a gap"
    );

    // Both serve the same history and converge on the same latest plan.
    for app in [&a, &b] {
        let plan = wait_for(app, "/v1/clusters/c1/plans/latest", |p| {
            p["version"] == latest
        })
        .await;
        assert_eq!(plan["lineage"], 1);
        let history = app.get_json("/v1/clusters/c1/plans").await;
        let versions: BTreeSet<i64> = history["plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, distinct);
    }

    // A long-poll on one replica wakes when the other publishes.
    let client = b.client.clone();
    let url = b.url("/v1/clusters/c1/plans/latest?wait=20s");
    let etag = format!("\"{latest}\"");
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = client
            .get(url)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        (body["version"].as_i64(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send_hot_round("c1", 7, 12).await;
    a.settle().await;
    let next = a.rebalance("c1").await;
    let (woke_with, waited) = waiter.await.unwrap();
    assert_eq!(woke_with, Some(next));
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");

    a.stop().await;
    b.stop().await;
}
