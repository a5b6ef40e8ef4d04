//! Co-visit counts (issue 16) through the service: windows carry `covisit`
//! (JSON and `BLW2`), it is checked against the topology and the window's
//! load, stored beside the load windows, summed, exported in the trace and
//! read back by both history readers; `--policy optimal-covisit` plans with
//! it, and falls back to `optimal` (saying why) when the estimate has none.

use std::time::Duration;

use ballast::history::{self, Span};
use ballast::time::{now_ms, rfc3339};
use ballast_protocol::window_binary::{self, ValueType};
use ballast_protocol::{RawCovisit, RawLoad, RawWindow, TraceWindow};
use serde_json::{json, Value};

use crate::both;
use crate::helpers::*;

const HOUR_MS: i64 = 3_600_000;
const GROUPS: usize = 8;

/// Co-visit counts for a small-topology load (26 x 64, 8 groups of 8):
/// the expert's own group sees all its tokens, the others a fraction.
fn covisit_of(load: &[Vec<f64>], salt: usize) -> Vec<Vec<Vec<f64>>> {
    load.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(e, &x)| {
                    (0..GROUPS)
                        .map(|k| {
                            if k == e / 8 {
                                x
                            } else {
                                (x * ((e + k + salt) % 4) as f64 / 4.0).floor()
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn load_of(w: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(w["logical_load"].clone()).unwrap()
}

/// Worker `gpu`'s window with co-visit counts.
fn covisit_window(gpu: usize, seq: i64, skew: f64) -> Value {
    let mut w = window(gpu, seq, skew);
    w["covisit"] = json!(covisit_of(&load_of(&w), gpu));
    w
}

fn add3(sum: &mut [Vec<Vec<f64>>], x: &[Vec<Vec<f64>>]) {
    for (s, x) in sum.iter_mut().flatten().zip(x.iter().flatten()) {
        for (a, b) in s.iter_mut().zip(x) {
            *a += b;
        }
    }
}

async fn current_hour() -> i64 {
    let into = now_ms().rem_euclid(HOUR_MS);
    if into > HOUR_MS - 30_000 {
        tokio::time::sleep(Duration::from_millis((HOUR_MS - into + 100) as u64)).await;
    }
    now_ms().div_euclid(HOUR_MS)
}

async fn trace(app: &TestApp) -> Vec<TraceWindow> {
    let r = app.get("/v1/clusters/c1/telemetry/trace").await;
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

both!(
    covisit_is_checked_stored_summed_and_traced,
    |db| async move {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(db, dir.path()).await;
        let app = spawn_app_on(&url, tempfile::tempdir().unwrap(), &["--window", "1h"]).await;
        app.create_small("c1").await;
        let now = current_hour().await;
        let end = |hour: i64| json!(rfc3339(hour * HOUR_MS + 1_800_000));

        // Refused: counts above the expert's load, a wrong group count, counts
        // with slot load; nothing is stored.
        let mut over = covisit_window(0, 1, 1.0);
        over["covisit"][2][5][7] = json!(1e9);
        let mut short = covisit_window(0, 1, 1.0);
        short["covisit"][0][0] = json!([1.0]);
        let slot = json!({"worker": "node0-gpu0", "seq": 1, "plan_version": 1,
        "slot_load": vec![vec![1.0; 10]; 26], "covisit": covisit_of(&vec![vec![1.0; 64]; 26], 0)});
        for (w, status, needle) in [
            (&over, 422, "`covisit` layer 2 index 5: group 7"),
            (&short, 422, "covisit"),
            (&slot, 422, "only allowed with `logical_load`"),
        ] {
            let r = app.post_json("/v1/clusters/c1/telemetry", w).await;
            assert_eq!(r.status(), status);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "invalid_window", "{body}");
            assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
        }

        // Hour now-2: two workers, every window with counts (one of them in
        // the binary encoding); hour now-1: one worker without counts.
        let mut load_sum = vec![vec![0.0; 64]; 26];
        let mut covisit_sum = vec![vec![vec![0.0; GROUPS]; 64]; 26];
        for gpu in 0..2 {
            let mut w = covisit_window(gpu, 1, gpu as f64 + 1.0);
            w["window_end"] = end(now - 2);
            for (s, l) in load_sum.iter_mut().zip(load_of(&w)) {
                s.iter_mut().zip(l).for_each(|(a, b)| *a += b);
            }
            let counts: Vec<Vec<Vec<f64>>> = serde_json::from_value(w["covisit"].clone()).unwrap();
            add3(&mut covisit_sum, &counts);
            let r = if gpu == 0 {
                app.post_json("/v1/clusters/c1/telemetry", &w).await
            } else {
                let raw = RawWindow {
                    worker: w["worker"].as_str().unwrap().into(),
                    seq: 1,
                    start_ms: None,
                    end_ms: Some((now - 2) * HOUR_MS + 1_800_000),
                    load: RawLoad::Logical {
                        rows: 26,
                        cols: 64,
                        values: load_of(&w).concat(),
                    },
                    covisit: Some(RawCovisit::from_nested(counts).unwrap()),
                };
                let body = window_binary::encode(&raw, ValueType::U32);
                assert_eq!(&body[..4], b"BLW2");
                app.client
                    .post(app.url("/v1/clusters/c1/telemetry"))
                    .header("content-type", window_binary::CONTENT_TYPE)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            };
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
        let mut partial = covisit_window(0, 2, 3.0);
        partial["window_end"] = end(now - 1);
        let mut bare = window(1, 2, 3.0);
        bare["window_end"] = end(now - 1);
        for w in [&partial, &bare] {
            let r = app.post_json("/v1/clusters/c1/telemetry", w).await;
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
        app.settle().await;

        let all = trace(&app).await;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].load, load_sum);
        assert_eq!(all[0].covisit.as_ref(), Some(&covisit_sum));
        // A worker sent no counts: the window has none.
        assert_eq!(all[1].covisit, None);
        // The line carries `covisit` beside `load`.
        let r = app.get("/v1/clusters/c1/telemetry/trace").await;
        let first: Value =
            serde_json::from_str(r.text().await.unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["covisit"].as_array().unwrap().len(), 26);

        // Both history readers see the same.
        let address = app.address.clone();
        let served = tokio::task::spawn_blocking(move || {
            history::from_service(&address, "c1", None, Span::ALL)
                .unwrap()
                .windows
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(served, all);
        app.stop().await;
        let stored = tokio::task::spawn_blocking(move || {
            history::from_database(&url, "c1", Span::ALL)
                .unwrap()
                .windows
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(stored, all);
    }
);

/// Sends one window with co-visit counts from each of the 8 workers.
async fn send_covisit_round(app: &TestApp, seq: i64, with_counts: bool) {
    for gpu in 0..8 {
        let w = if with_counts {
            covisit_window(gpu, seq, 3.0)
        } else {
            window(gpu, seq, 3.0)
        };
        let r = app.post_json("/v1/clusters/c1/telemetry", &w).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
}

both!(
    optimal_covisit_policy_plans_or_falls_back,
    |db| async move {
        let mut args = FAST.to_vec();
        args.extend(["--policy", "optimal-covisit"]);
        let app = spawn_app_with(db, &args).await;
        app.create_small("c1").await;

        // With counts: the co-visit planner plans (its plan says which tokens
        // each slot may take); a build whose planner refuses falls back.
        send_covisit_round(&app, 1, true).await;
        app.settle().await;
        let r = app.post("/v1/clusters/c1/rebalance").await;
        let body: Value = r.json().await.unwrap();
        assert!(body["published"] == true, "{body}");
        let plan = app.get_json("/v1/clusters/c1/plans/latest").await;
        match body["figures"]
            .get("policy_fallback")
            .and_then(Value::as_str)
        {
            None => {
                assert_eq!(
                    plan["stats"]["policy"], "optimal-covisit",
                    "{}",
                    plan["stats"]
                );
                assert_eq!(plan["replica_scope"].as_array().unwrap().len(), 26);
                // Engine exports cannot say it, and say so.
                let r = app.get("/v1/clusters/c1/plans/latest?format=vllm").await;
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["x-ballast-drops-replica-scope"], "true");
            }
            Some(why) => {
                assert!(why.contains("optimal-covisit refused"), "{why}");
                assert_eq!(plan["stats"]["policy"], "optimal");
                assert!(plan.get("replica_scope").is_none_or(Value::is_null));
            }
        }

        // Without counts: `optimal`, and the decision says why.
        send_covisit_round(&app, 2, false).await;
        app.settle().await;
        let r = app.post("/v1/clusters/c1/rebalance?dry_run=true").await;
        let body: Value = r.json().await.unwrap();
        let why = body["figures"]["policy_fallback"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("needs co-visit counts"), "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("needs co-visit counts"),
            "{body}"
        );
        assert_eq!(body["candidate"]["stats"]["policy"], "optimal");
        app.stop().await;
    }
);

both!(
    a_window_and_its_counts_are_read_from_one_snapshot,
    |db| async move {
        use ballast::domain::load_codec;
        use ballast::domain::{ClusterName, WorkerName};
        use ballast::store::telemetry::{StagedWindow, WindowShape};
        use ballast::store::Store;

        // Late worker windows keep landing in a closed bucket while the
        // planner reads it: every read must see the load and the co-visit
        // rows of the same set of windows, or the counts are dropped and
        // `optimal-covisit` falls back for no reason.
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(db, dir.path()).await;
        let store = std::sync::Arc::new(Store::connect(&url, 4).await.unwrap());
        store.migrate().await.unwrap();
        let topology = ballast_solver::Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let cluster = ClusterName::parse("c1").unwrap();
        let lineage = store
            .put_cluster(&cluster, &topology, 0)
            .await
            .unwrap()
            .lineage;
        let worker = WorkerName::of_gpu(0, &topology);
        let writes = 150;
        let writer = {
            let (store, cluster) = (store.clone(), cluster.clone());
            tokio::spawn(async move {
                for seq in 0..writes {
                    let window = StagedWindow {
                        cluster: cluster.clone(),
                        lineage,
                        worker: worker.clone(),
                        seq,
                        bucket: 1,
                        load: load_codec::encode(&[2.0; 8]),
                        values: 8,
                        layers: 2,
                        covisit: Some(load_codec::encode(&[1.0; 16])),
                        groups: 2,
                    };
                    store.ingest_batch(&[window], seq).await.unwrap();
                }
            })
        };
        let shape = WindowShape::of(&topology);
        let (mut reads, mut torn) = (0, 0);
        while !writer.is_finished() {
            let windows = store
                .load_windows(&cluster, lineage, 2, 1, shape)
                .await
                .unwrap();
            for w in &windows {
                reads += 1;
                match &w.covisit {
                    // Each worker window adds 1 to every count and 2 to every load.
                    Some(counts) => {
                        assert!(counts.iter().all(|&c| c == w.windows as f64), "{w:?}");
                        assert!(w.load.iter().all(|&x| x == 2.0 * w.windows as f64));
                    }
                    None => torn += 1,
                }
            }
        }
        writer.await.unwrap();
        eprintln!("{reads} reads during {writes} writes, {torn} without counts");
        assert!(reads > 0);
        assert_eq!(torn, 0, "reads saw a window's load without its counts");
    }
);
