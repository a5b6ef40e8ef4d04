//! `GET .../telemetry/trace` and the two history readers a replay uses
//! (`ballast::history::from_database`, `from_service`): the same closed
//! windows, oldest first, with the sums the workers sent.

use std::time::Duration;

use ballast::history::{self, History, HistoryError, Span};
use ballast::time::{now_ms, rfc3339};
use ballast_protocol::TraceWindow;
use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

const HOUR_MS: i64 = 3_600_000;

/// The hour the test runs in; waits out the last seconds of an hour, so
/// that the window sent "now" is still open when the test reads.
async fn current_hour() -> i64 {
    let into = now_ms().rem_euclid(HOUR_MS);
    if into > HOUR_MS - 30_000 {
        tokio::time::sleep(Duration::from_millis((HOUR_MS - into + 100) as u64)).await;
    }
    now_ms().div_euclid(HOUR_MS)
}

/// Worker `gpu`'s window `seq` of the small topology, ending in hour `hour`.
fn window_in(gpu: usize, seq: i64, skew: f64, hour: i64) -> Value {
    let mut w = window(gpu, seq, skew);
    w["window_end"] = json!(rfc3339(hour * HOUR_MS + 1_800_000));
    w
}

fn load_of(w: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(w["logical_load"].clone()).unwrap()
}

fn add(sum: &mut [Vec<f64>], load: &[Vec<f64>]) {
    for (s, l) in sum.iter_mut().zip(load) {
        for (a, b) in s.iter_mut().zip(l) {
            *a += b;
        }
    }
}

/// Sends windows into hours `now - 3 .. now - 1` (out of order, several
/// workers and rounds each) and one into the open hour; returns the hours
/// and the load each past hour must sum to.
async fn send_history(app: &TestApp, now: i64) -> Vec<(i64, Vec<Vec<f64>>)> {
    let mut sums = Vec::new();
    let mut seq = 1;
    for (back, workers, skew) in [(2, 2, 0.5), (3, 3, 2.0), (1, 1, 4.0)] {
        let hour = now - back;
        let mut sum = vec![vec![0.0; 64]; 26];
        for gpu in 0..workers {
            // Two rounds into the same window, so it sums across seqs too.
            for round in 0..2 {
                let w = window_in(gpu, seq + round, skew + round as f64, hour);
                let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
                assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
                add(&mut sum, &load_of(&w));
            }
        }
        seq += 2;
        sums.push((hour, sum));
    }
    // The open window: it must not be part of the trace yet.
    let r = app
        .post_json("/v1/clusters/c1/telemetry", &window(7, 1, 9.0))
        .await;
    assert_eq!(r.status(), 202);
    app.settle().await;
    sums.sort_by_key(|(hour, _)| *hour);
    sums
}

async fn trace(app: &TestApp, query: &str) -> Vec<TraceWindow> {
    let r = app
        .get(&format!("/v1/clusters/c1/telemetry/trace{query}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert_eq!(r.headers()["ballast-lineage"], "1");
    let text = r.text().await.unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn indices(windows: &[TraceWindow]) -> Vec<i64> {
    windows.iter().map(|w| w.window as i64).collect()
}

/// Everything a history yields, read off the async runtime (it blocks).
async fn drain(
    open: impl FnOnce() -> Result<History, HistoryError> + Send + 'static,
) -> (ballast_solver::Topology, Vec<TraceWindow>) {
    tokio::task::spawn_blocking(move || {
        let history = open().unwrap();
        let windows = history.windows.collect::<Result<Vec<_>, _>>().unwrap();
        (history.topology, windows)
    })
    .await
    .unwrap()
}

both!(trace_streams_closed_windows_oldest_first, |db| async move {
    // The database outlives the service (read offline at the end).
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(db, dir.path()).await;
    let app = spawn_app_on(&url, tempfile::tempdir().unwrap(), &["--window", "1h"]).await;
    app.create_small("c1").await;
    let now = current_hour().await;
    let sums = send_history(&app, now).await;

    let all = trace(&app, "").await;
    assert_eq!(indices(&all), vec![now - 3, now - 2, now - 1]);
    for (w, (hour, sum)) in all.iter().zip(&sums) {
        assert_eq!(w.start.as_deref(), Some(rfc3339(hour * HOUR_MS).as_str()));
        assert_eq!(
            w.end.as_deref(),
            Some(rfc3339((hour + 1) * HOUR_MS).as_str())
        );
        assert_eq!(&w.load, sum, "window {hour}");
    }

    // `since <= start < until`.
    let at = |hour: i64, ms: i64| rfc3339(hour * HOUR_MS + ms);
    let since = trace(&app, &format!("?since={}", at(now - 2, 0))).await;
    assert_eq!(indices(&since), vec![now - 2, now - 1]);
    let until = trace(&app, &format!("?until={}", at(now - 1, 0))).await;
    assert_eq!(indices(&until), vec![now - 3, now - 2]);
    let between = trace(
        &app,
        &format!("?since={}&until={}", at(now - 2, 1), at(now - 1, 1)),
    )
    .await;
    assert_eq!(indices(&between), vec![now - 1]);
    assert_eq!(between[0], all[2]);
    let open_only = trace(&app, &format!("?since={}", at(now, 0))).await;
    assert!(open_only.is_empty(), "the open window is left out");

    // The readers a replay uses agree with the route.
    let small = ballast_solver::Topology::from_json(&small_topology().to_string()).unwrap();
    let address = app.address.clone();
    let (topology, served) =
        drain(move || history::from_service(&address, "c1", None, Span::ALL)).await;
    assert_eq!(topology, small);
    assert_eq!(served, all);
    let db_url = url.clone();
    let (topology, stored) = drain(move || history::from_database(&db_url, "c1", Span::ALL)).await;
    assert_eq!(topology, small);
    assert_eq!(stored, all);
    let span = Span::parse(Some(&at(now - 2, 1)), Some(&at(now - 1, 1))).unwrap();
    let address = app.address.clone();
    let (_, served) = drain(move || history::from_service(&address, "c1", None, span)).await;
    let db_url = url.clone();
    let (_, stored) = drain(move || history::from_database(&db_url, "c1", span)).await;
    assert_eq!((served, stored), (between.clone(), between));
    // With no service running (an SQLite file closed cleanly) as well.
    app.stop().await;
    let (_, offline) = drain(move || history::from_database(&url, "c1", Span::ALL)).await;
    assert_eq!(offline, all);
});

both!(trace_pages_through_a_long_history, |db| async move {
    // More windows than three pages of the store hold, one second each.
    let app = spawn_app_with(db, &["--window", "1s"]).await;
    app.create_small("c1").await;
    let first = now_ms().div_euclid(1000) - 1000;
    let n = 150;
    for i in 0..n {
        let mut w = window(i as usize % 8, i / 8 + 1, (i % 5) as f64);
        w["window_end"] = json!(rfc3339((first + i) * 1000 + 500));
        let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    app.settle().await;
    let all = trace(&app, "").await;
    assert_eq!(indices(&all), (first..first + n).collect::<Vec<_>>());
    let address = app.address.clone();
    let (_, served) = drain(move || history::from_service(&address, "c1", None, Span::ALL)).await;
    assert_eq!(served, all);
    let url = app.database_url.clone();
    let (_, stored) = drain(move || history::from_database(&url, "c1", Span::ALL)).await;
    assert_eq!(stored, all);
    app.stop().await;
});

both!(
    trace_refuses_bad_spans_and_unknown_clusters,
    |db| async move {
        let app = spawn_app(db).await;
        app.create_small("c1").await;
        let r = app.get("/v1/clusters/nope/telemetry/trace").await;
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "cluster_not_found"
        );
        for (query, status) in [
            ("?since=yesterday", 400),
            ("?until=2026-13-40T00:00:00Z", 400),
            (
                "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                422,
            ),
            (
                "?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
                422,
            ),
        ] {
            let r = app
                .get(&format!("/v1/clusters/c1/telemetry/trace{query}"))
                .await;
            assert_eq!(r.status(), status, "{query}");
            assert_eq!(r.headers()["content-type"], "application/json");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "invalid_query", "{query}: {body}");
        }
        // No history yet: an empty trace, not an error.
        assert_eq!(
            app.get("/v1/clusters/c1/telemetry/trace")
                .await
                .text()
                .await
                .unwrap(),
            ""
        );

        let address = app.address.clone();
        let err = tokio::task::spawn_blocking(move || {
            history::from_service(&address, "nope", None, Span::ALL).unwrap_err()
        })
        .await
        .unwrap();
        assert!(
            matches!(&err, HistoryError::Service { status: 404, code, .. } if code == "cluster_not_found"),
            "{err}"
        );
        let url = app.database_url.clone();
        let err = tokio::task::spawn_blocking(move || {
            history::from_database(&url, "nope", Span::ALL).unwrap_err()
        })
        .await
        .unwrap();
        assert_eq!(err.to_string(), "cluster nope does not exist");
        app.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_needs_a_token_when_tokens_are_configured() {
    let app = spawn_app_with(
        Db::Sqlite,
        &["--worker-token", "w-token", "--admin-token", "a-token"],
    )
    .await;
    let r = app
        .client
        .put(app.url("/v1/clusters/c1"))
        .bearer_auth("a-token")
        .json(&small_topology())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let path = app.url("/v1/clusters/c1/telemetry/trace");
    let r = app.client.get(&path).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
    let r = app
        .client
        .get(&path)
        .bearer_auth("w-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let address = app.address.clone();
    let (refused, allowed) = tokio::task::spawn_blocking(move || {
        (
            history::from_service(&address, "c1", None, Span::ALL).unwrap_err(),
            history::from_service(&address, "c1", Some("w-token"), Span::ALL)
                .map(|h| h.windows.count()),
        )
    })
    .await
    .unwrap();
    let message = refused.to_string();
    assert!(
        message.contains("HTTP 401") && message.contains("unauthorized"),
        "{message}"
    );
    assert_eq!(allowed.unwrap(), 0);
    app.stop().await;
}
