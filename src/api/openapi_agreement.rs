//! Proof that `openapi.json` documents exactly what the protocol types put
//! on the wire. Samples of every body, serialized from `ballast_protocol`
//! types (plan stats from real candidate solves), are checked against the
//! schema each route documents for them: a field sent but not documented, a
//! field documented but sent by no sample, a missing required field or a
//! wrong JSON type fails, as does a documented JSON body without samples.
//! A JSON Lines body (`application/x-ndjson`) is checked line by line: each
//! sample is one line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use ballast_protocol::*;
use ballast_solver::{LoadMatrix, Policy, Split, Topology};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::openapi::DOCUMENT;
use ballast_policy::candidate::{self, Candidate, CandidateInput};
use ballast_policy::Figures;

/// Where a body sits in the document: `(method, path, status)`, or
/// `(method, path, "request")` for a request body.
type Slot = (&'static str, &'static str, &'static str);

/// Checks sample values against schemas and remembers, per object schema,
/// which documented fields some sample sent.
struct Checker<'a> {
    doc: &'a Value,
    errors: Vec<String>,
    /// Object schema (by location) -> (documented fields, fields seen).
    objects: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

impl<'a> Checker<'a> {
    fn new(doc: &'a Value) -> Self {
        Checker {
            doc,
            errors: Vec::new(),
            objects: BTreeMap::new(),
        }
    }

    fn fail(&mut self, at: &str, what: String) {
        self.errors.push(format!("{at}: {what}"));
    }

    /// `value` (found at `at` in a sample) against `schema` (found at `location`).
    fn check(&mut self, at: &str, location: &str, schema: &Value, value: &Value) {
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            let resolved = target
                .strip_prefix('#')
                .and_then(|pointer| self.doc.pointer(pointer));
            match resolved {
                Some(resolved) => self.check(at, target, resolved, value),
                None => self.fail(at, format!("unresolvable $ref {target}")),
            }
            return;
        }
        if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
            let mut reasons = Vec::new();
            for (i, alternative) in alternatives.iter().enumerate() {
                let mut attempt = Checker::new(self.doc);
                attempt.check(at, &format!("{location}/oneOf/{i}"), alternative, value);
                if attempt.errors.is_empty() {
                    self.merge(attempt);
                    return;
                }
                reasons.extend(attempt.errors);
            }
            self.fail(at, format!("matches no alternative: {reasons:?}"));
            return;
        }
        if let Some(expected) = schema.get("const") {
            if expected != value {
                self.fail(
                    at,
                    format!("{value} is not the documented constant {expected}"),
                );
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                self.fail(
                    at,
                    format!("{value} is not among the documented {allowed:?}"),
                );
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.iter().any(|t| is_of_type(value, t)) {
                self.fail(
                    at,
                    format!("{value} is not of the documented type {types:?}"),
                );
            }
        }
        match value {
            Value::Object(fields) => {
                let Some(documented) = schema.get("properties").and_then(Value::as_object) else {
                    self.fail(at, "an object whose schema documents no fields".into());
                    return;
                };
                for required in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !fields.contains_key(required) {
                        self.fail(at, format!("required field `{required}` is not sent"));
                    }
                }
                let entry = self.objects.entry(location.to_owned()).or_default();
                entry.0.extend(documented.keys().cloned());
                entry.1.extend(fields.keys().cloned());
                for (name, field) in fields {
                    let at = format!("{at}.{name}");
                    match documented.get(name) {
                        Some(sub) => {
                            self.check(&at, &format!("{location}/properties/{name}"), sub, field)
                        }
                        None => self.fail(&at, "sent but not documented".into()),
                    }
                }
            }
            Value::Array(items) => match schema.get("items") {
                Some(item_schema) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(
                            &format!("{at}[{i}]"),
                            &format!("{location}/items"),
                            item_schema,
                            item,
                        );
                    }
                }
                None => self.fail(at, "an array whose schema documents no items".into()),
            },
            _ => {}
        }
    }

    fn merge(&mut self, other: Checker<'_>) {
        for (location, (documented, seen)) in other.objects {
            let entry = self.objects.entry(location).or_default();
            entry.0.extend(documented);
            entry.1.extend(seen);
        }
    }

    /// Every documented field of every object schema some sample reached
    /// was sent by some sample.
    fn finish(mut self) -> Vec<String> {
        for (location, (documented, seen)) in &self.objects {
            for missing in documented.difference(seen) {
                self.errors.push(format!(
                    "{location}: field `{missing}` is documented but no body sends it"
                ));
            }
        }
        self.errors
    }
}

fn is_of_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// A body as the service sends it; it must also read back as the same type
/// (clients deserialize what the service serializes).
fn wire<T: Serialize + DeserializeOwned>(body: &T) -> Value {
    let json = serde_json::to_value(body).expect("serializes");
    let back: T = serde_json::from_value(json.clone()).expect("reads back");
    assert_eq!(serde_json::to_value(&back).expect("serializes"), json);
    json
}

/// Samples of every documented JSON body.
struct Samples {
    bodies: Vec<(Slot, Vec<Value>)>,
    errors: Vec<Value>,
}

fn topology() -> Topology {
    // Every optional field set, so the topology schema is covered in full.
    Topology::from_json(
        r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 2,
            "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3,
            "gpu_speed": [1.0, 1.0, 2.0, 1.0], "expert_bytes": 1000,
            "num_hidden_layers": 3, "first_moe_layer": 1, "mtp_layers": 1}"#,
    )
    .expect("valid topology")
}

/// A candidate the way the planner computes one.
fn candidate(current: Option<&Candidate>, split: Split, load: [f64; 8]) -> Candidate {
    let t = topology();
    candidate::build(CandidateInput {
        estimate: LoadMatrix::new(vec![load.to_vec(), vec![1.0; 8]], &t).expect("load"),
        topology: t,
        current: current.map(|c| c.plan.clone()),
        policy: Policy::Optimal,
        split,
        balance_tolerance: 0.005,
        time_limit: Some(Duration::from_secs(5)),
        excluded: Vec::new(),
    })
    .expect("a candidate")
}

fn document(
    candidate: &Candidate,
    version: Option<i64>,
    reason: &str,
    figures: &PlanFigures,
) -> PlanDocument {
    PlanDocument {
        phy2log: candidate.plan.phy2log().to_vec(),
        replica_share: candidate.plan.replica_share().map(<[Vec<f64>]>::to_vec),
        replica_scope: candidate.plan.replica_scope().map(<[Vec<i64>]>::to_vec),
        cluster: "c1".into(),
        version,
        lineage: 1,
        created_at: crate::time::rfc3339(1_700_000_000_000),
        reason: reason.into(),
        topology: Some(topology().to_spec()),
        stats: PlanStats::new(&candidate.stats, figures),
    }
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(build_samples)
}

fn build_samples() -> Samples {
    let time = || crate::time::rfc3339(1_700_000_000_000);
    let spec = topology().to_spec();
    let bare = Topology::from_json(
        r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 1, "slots_per_gpu": 2}"#,
    )
    .expect("valid topology")
    .to_spec();

    let first = candidate(None, Split::Even, [8.0, 1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 2.0]);
    let replan = candidate(
        Some(&first),
        Split::Weighted,
        [1.0, 9.0, 1.0, 3.0, 1.0, 1.0, 6.0, 1.0],
    );
    let full_figures = PlanFigures {
        base_version: Some(1),
        decision: Figures {
            current_imbalance: Some(1.4),
            predicted_imbalance: 1.1,
            migrations: Some(3),
            migrated_bytes: Some(3000),
            net_gain: Some(0.2),
            solve_seconds: 0.5,
            load_windows: 4,
            excluded_gpus: vec![2],
            policy_fallback: Some("optimal-covisit needs co-visit counts and the estimate has none: planned with optimal".into()),
        },
    };
    let bare_figures = PlanFigures {
        base_version: None,
        decision: Figures {
            current_imbalance: None,
            predicted_imbalance: 1.2,
            migrations: None,
            migrated_bytes: None,
            net_gain: None,
            solve_seconds: 0.5,
            load_windows: 1,
            excluded_gpus: Vec::new(),
            policy_fallback: None,
        },
    };
    let mut published = document(&replan, Some(2), "gain_pays", &full_figures);
    // A co-visit plan's scope: slot 0 (on node 0) takes node 0's
    // co-visitors only, every other slot any token.
    published.replica_scope = Some(
        published
            .phy2log
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|s| if s == 0 { 0 } else { -1 })
                    .collect()
            })
            .collect(),
    );
    let initial = document(&first, Some(1), "initial", &bare_figures);
    let dry_run = document(&first, None, "below_threshold", &bare_figures);

    let readiness = |ok: bool| Readiness {
        ready: ok,
        checks: ReadinessChecks {
            database: Check {
                ok,
                error: (!ok).then(|| "database unreachable".into()),
            },
            migrations: Check {
                ok,
                error: (!ok).then(|| "2 migrations pending".into()),
            },
            planner: PlannerCheck {
                ok,
                last_progress_seconds_ago: ok.then_some(0.5),
                stall_timeout_seconds: 60.0,
            },
        },
    };
    let topology_update = |retired: Option<i64>| TopologyUpdate {
        cluster: "c1".into(),
        created: retired.is_none(),
        changed: true,
        lineage: 2,
        new_lineage: retired.is_some(),
        retired_version: retired,
        message: "topology changed".into(),
        topology: spec.clone(),
    };
    let receipt = |status| TelemetryReceipt {
        status,
        worker: "node0-gpu1".into(),
        seq: 4,
        window: WindowSpan {
            start: time(),
            end: time(),
        },
    };
    let rebalance = |doc: Option<PlanDocument>, figures: &PlanFigures| RebalanceResult {
        cluster: "c1".into(),
        dry_run: doc.is_some(),
        published: doc.is_none(),
        version: doc.is_none().then_some(2),
        unchanged: false,
        reason: "forced".into(),
        detail: "rebalance requested by an operator".into(),
        figures: figures.clone(),
        candidate: doc,
    };
    let decision = |full: bool| Decision {
        cycle: 7,
        decided_at: time(),
        lineage: 1,
        base_version: full.then_some(1),
        published_version: full.then_some(2),
        reason: if full { "gain_pays" } else { "below_threshold" }.into(),
        detail: "net gain".into(),
        current_imbalance: full.then_some(1.3),
        predicted_imbalance: full.then_some(1.1),
        migrations: full.then_some(3),
        net_gain: full.then_some(0.1),
        streak: 2,
    };
    let worker = |status: WorkerState, seen: bool| WorkerStatus {
        worker: "node0-gpu0".into(),
        gpu: 0,
        status,
        last_seq: seen.then_some(3),
        last_seen_at: seen.then(time),
        down_since: (status == WorkerState::Down).then(time),
        applied_version: seen.then_some(2),
        applied_at: seen.then(time),
    };
    let diff = |bytes: Option<u64>| PlanDiff {
        cluster: "c1".into(),
        from: 1,
        to: 2,
        migrations: 1,
        bytes,
        gpus: vec![GpuDiff {
            gpu: 1,
            worker: "node0-gpu1".into(),
            loads: 1,
            evictions: 1,
            bytes,
            layers: vec![LayerDiff {
                layer: 0,
                load: vec![3],
                evict: vec![5],
            }],
        }],
    };
    let plan_summary = |stats: Option<PlanStats>| PlanSummary {
        version: 2,
        lineage: 1,
        created_at: time(),
        reason: "forced".into(),
        stats,
    };
    let window_u64 = TelemetryWindow::<u64> {
        worker: "node0-gpu1".into(),
        seq: 3,
        window_start: Some(time()),
        window_end: Some(time()),
        logical_load: Some(vec![vec![1, 2]]),
        slot_load: None,
        plan_version: None,
        covisit: None,
    };
    // A window carries one load or the other, never both.
    let slot_window = TelemetryWindow::<u64> {
        logical_load: None,
        slot_load: Some(vec![vec![3, 4]]),
        plan_version: Some(2),
        covisit: None,
        ..window_u64.clone()
    };
    let window_f64 = TelemetryWindow::<f64> {
        worker: "node0-gpu1".into(),
        seq: 3,
        window_start: None,
        window_end: None,
        logical_load: Some(vec![vec![1.5, 2.0]]),
        slot_load: None,
        plan_version: None,
        covisit: Some(vec![vec![vec![1.5, 0.5], vec![1.0, 2.0]]]),
    };

    let clusters = "/v1/clusters/{cluster}";
    let bodies: Vec<(Slot, Vec<Value>)> = vec![
        (
            ("get", "/healthz", "200"),
            vec![wire(&Health {
                status: HealthStatus::Ok,
            })],
        ),
        (("get", "/readyz", "200"), vec![wire(&readiness(true))]),
        (("get", "/readyz", "503"), vec![wire(&readiness(false))]),
        (
            ("get", "/v1/clusters", "200"),
            vec![wire(&ClusterList {
                clusters: vec![
                    ClusterSummary {
                        cluster: "c1".into(),
                        lineage: 1,
                        latest_version: Some(3),
                    },
                    ClusterSummary {
                        cluster: "c2".into(),
                        lineage: 1,
                        latest_version: None,
                    },
                ],
            })],
        ),
        (("put", clusters, "request"), vec![wire(&spec), wire(&bare)]),
        (("put", clusters, "201"), vec![wire(&topology_update(None))]),
        (
            ("put", clusters, "200"),
            vec![wire(&topology_update(Some(4)))],
        ),
        (
            ("get", clusters, "200"),
            vec![wire(&Cluster {
                cluster: "c1".into(),
                topology: spec.clone(),
                lineage: 1,
                created_at: time(),
                updated_at: time(),
                latest_version: Some(2),
                workers: WorkerCounts {
                    up: 2,
                    down: 1,
                    unknown: 1,
                },
            })],
        ),
        (
            ("post", "/v1/clusters/{cluster}/telemetry", "request"),
            vec![wire(&window_u64), wire(&slot_window), wire(&window_f64)],
        ),
        (
            ("post", "/v1/clusters/{cluster}/telemetry", "202"),
            vec![wire(&receipt(ReceiptStatus::Accepted))],
        ),
        (
            ("post", "/v1/clusters/{cluster}/telemetry", "200"),
            vec![wire(&receipt(ReceiptStatus::Duplicate))],
        ),
        (
            ("get", "/v1/clusters/{cluster}/telemetry/windows", "200"),
            vec![wire(&LoadWindows {
                cluster: "c1".into(),
                lineage: 1,
                window_seconds: 10.0,
                windows: vec![LoadWindow {
                    start: time(),
                    end: time(),
                    worker_windows: 4,
                    tokens: 1024.0,
                }],
            })],
        ),
        (
            ("get", "/v1/clusters/{cluster}/telemetry/trace", "200"),
            vec![
                wire(&TraceWindow {
                    window: 170_000_000,
                    start: Some(time()),
                    end: Some(time()),
                    load: vec![vec![1.0, 2.0], vec![0.0, 4.5]],
                    covisit: Some(vec![
                        vec![vec![1.0, 0.5], vec![2.0, 2.0]],
                        vec![vec![0.0, 0.0], vec![4.5, 1.0]],
                    ]),
                }),
                wire(&TraceWindow {
                    window: 3,
                    start: None,
                    end: None,
                    load: vec![vec![1.0]],
                    covisit: None,
                }),
            ],
        ),
        (
            ("post", "/v1/clusters/{cluster}/rebalance", "201"),
            vec![wire(&rebalance(None, &full_figures))],
        ),
        (
            ("post", "/v1/clusters/{cluster}/rebalance", "200"),
            vec![
                wire(&rebalance(Some(dry_run), &bare_figures)),
                wire(&RebalanceResult {
                    published: false,
                    unchanged: true,
                    reason: "unchanged".into(),
                    detail: "the candidate equals plan version 2 in force".into(),
                    ..rebalance(None, &full_figures)
                }),
            ],
        ),
        (
            ("get", "/v1/clusters/{cluster}/decisions", "200"),
            vec![wire(&DecisionList {
                cluster: "c1".into(),
                decisions: vec![decision(true), decision(false)],
            })],
        ),
        (
            ("get", "/v1/clusters/{cluster}/plans", "200"),
            vec![wire(&PlanList {
                cluster: "c1".into(),
                lineage: 1,
                plans: vec![
                    plan_summary(Some(published.stats.clone())),
                    plan_summary(None),
                ],
            })],
        ),
        (
            ("get", "/v1/clusters/{cluster}/plans/latest", "200"),
            vec![wire(&published), wire(&initial)],
        ),
        (
            ("get", "/v1/clusters/{cluster}/plans/{version}", "200"),
            vec![wire(&published), wire(&initial)],
        ),
        (
            ("get", "/v1/clusters/{cluster}/plans/{version}/diff", "200"),
            vec![wire(&diff(Some(1000))), wire(&diff(None))],
        ),
        (
            (
                "get",
                "/v1/clusters/{cluster}/plans/{version}/rollout",
                "200",
            ),
            vec![wire(&Rollout {
                cluster: "c1".into(),
                version: 2,
                published_at: time(),
                current_lineage: true,
                gpus: 4,
                applied: 1,
                complete: false,
                applied_workers: vec!["node0-gpu0".into()],
                other_versions: vec![
                    VersionWorkers {
                        version: Some(1),
                        workers: vec!["node0-gpu1".into()],
                    },
                    VersionWorkers {
                        version: None,
                        workers: vec!["node1-gpu0".into()],
                    },
                ],
            })],
        ),
        (
            ("get", "/v1/clusters/{cluster}/workers", "200"),
            vec![wire(&WorkerList {
                cluster: "c1".into(),
                workers: vec![
                    worker(WorkerState::Up, true),
                    worker(WorkerState::Down, true),
                    worker(WorkerState::Unknown, false),
                ],
            })],
        ),
        (
            (
                "post",
                "/v1/clusters/{cluster}/workers/{worker}/ack",
                "request",
            ),
            vec![wire(&AckRequest { version: 2 })],
        ),
        (
            ("post", "/v1/clusters/{cluster}/workers/{worker}/ack", "200"),
            vec![wire(&AckReceipt {
                worker: "node0-gpu0".into(),
                applied_version: 2,
                acked_at: time(),
            })],
        ),
    ];
    let errors = ErrorCode::ALL
        .iter()
        .map(|&code| {
            wire(&ErrorBody {
                code,
                message: "what went wrong".into(),
            })
        })
        .collect();
    Samples { bodies, errors }
}

/// Media types whose bodies are JSON: a whole body, or one line of one.
const JSON_MEDIA: [&str; 2] = ["application/json", "application/x-ndjson"];

/// The schema of a JSON (or JSON Lines) body in `content`, if it has one.
fn json_schema(content: &Value) -> Option<&Value> {
    JSON_MEDIA
        .iter()
        .find_map(|media| content.get(*media))?
        .get("schema")
}

/// The JSON schema of a body slot, if the document has one.
fn schema_at(doc: &Value, (method, path, status): Slot) -> Option<&Value> {
    let operation = doc.get("paths")?.get(path)?.get(method)?;
    let content = if status == "request" {
        operation.get("requestBody")?.get("content")?
    } else {
        operation.get("responses")?.get(status)?.get("content")?
    };
    json_schema(content)
}

/// Every disagreement between `doc` and the protocol types.
fn disagreements(doc: &Value) -> Vec<String> {
    let samples = samples();
    let mut checker = Checker::new(doc);
    let mut sampled = BTreeSet::new();
    for (slot, values) in &samples.bodies {
        sampled.insert(*slot);
        let Some(schema) = schema_at(doc, *slot) else {
            checker.fail(&format!("{slot:?}"), "no JSON schema documented".into());
            continue;
        };
        let location = format!("{} {} {}", slot.0, slot.1, slot.2);
        for (i, value) in values.iter().enumerate() {
            checker.check(&format!("{slot:?}#{i}"), &location, schema, value);
        }
    }
    // Every documented JSON body has samples; errors share one body.
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let mut slots: Vec<String> = operation["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            if operation.get("requestBody").is_some() {
                slots.push("request".into());
            }
            for status in slots {
                let slot_name = format!("{method} {path} {status}");
                let content = if status == "request" {
                    &operation["requestBody"]["content"]
                } else {
                    &operation["responses"][&status]["content"]
                };
                let Some(schema) = json_schema(content) else {
                    continue;
                };
                let has_samples = sampled
                    .iter()
                    .any(|(m, p, s)| *m == method && *p == path && *s == status);
                if has_samples {
                    // Checked above.
                } else if status.starts_with('4') || status.starts_with('5') {
                    for (i, error) in samples.errors.iter().enumerate() {
                        checker.check(&format!("{slot_name}#{i}"), &slot_name, schema, error);
                    }
                } else if path == "/v1/openapi.json" {
                    // This document itself: free-form by nature.
                } else {
                    checker.fail(&slot_name, "documented JSON body without samples".into());
                }
            }
        }
    }
    checker.finish()
}

fn document_json() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json parses")
}

/// The wire strings of an enum's variants, as the document lists them at `pointer`.
fn documented_enum(doc: &Value, pointer: &str) -> BTreeSet<String> {
    doc.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn wire_strings<T: Serialize>(variants: &[T]) -> BTreeSet<String> {
    variants
        .iter()
        .filter_map(|v| serde_json::to_value(v).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_document_and_the_types_agree() {
    let errors = disagreements(&document_json());
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Every query and path parameter's bounds are the ones the server's
/// parsers enforce: what the document allows is served, what it forbids is
/// refused (schemathesis checks both ways against a live server).
#[test]
fn parameters_match_the_parsers() {
    use super::plans::{parse_wait, WAIT_PATTERN};
    use super::{parse_limit, parse_version, MAX_LIMIT};
    let doc = document_json();
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let schema = &p["schema"];
                let at = format!("{method} {path} {name}");
                match name {
                    "limit" => {
                        assert_eq!(schema["minimum"], 1, "{at}");
                        assert_eq!(schema["maximum"], MAX_LIMIT, "{at}");
                        assert_eq!(schema["default"], 20, "{at}");
                    }
                    "version" | "from" => {
                        assert_eq!(schema["minimum"], 1, "{at}");
                        assert_eq!(schema["maximum"], i64::MAX, "{at}");
                    }
                    "wait" => assert_eq!(schema["pattern"], WAIT_PATTERN, "{at}"),
                    _ => continue,
                }
                seen.insert(name.to_owned());
            }
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
    assert!(parse_limit(Some("1001")).is_err());
    assert_eq!(parse_version("9223372036854775807").unwrap(), i64::MAX);
    assert!(parse_version("0").is_err());
    let max = Duration::from_secs(60);
    for ok in ["", "30", "30s", "500ms", "2m", "999999999m"] {
        assert!(parse_wait(ok, max).is_ok(), "wait={ok}");
    }
    for refused in ["1h", "1.5s", "1234567890s", " 3s", "s", "3 s"] {
        assert!(parse_wait(refused, max).is_err(), "wait={refused}");
    }
    let ack = doc
        .pointer("/paths/~1v1~1clusters~1{cluster}~1workers~1{worker}~1ack/post/requestBody/content/application~1json/schema/properties/version")
        .unwrap();
    assert_eq!(ack["minimum"], 1);
    assert_eq!(ack["maximum"], i64::MAX);
}

#[test]
fn enums_list_exactly_the_variants() {
    let doc = document_json();
    assert_eq!(
        documented_enum(&doc, "/components/schemas/Error/properties/code/enum"),
        wire_strings(&ErrorCode::ALL)
    );
    assert_eq!(
        documented_enum(
            &doc,
            "/components/schemas/Workers/properties/workers/items/properties/status/enum"
        ),
        wire_strings(&[WorkerState::Up, WorkerState::Down, WorkerState::Unknown])
    );
    assert_eq!(
        documented_enum(
            &doc,
            "/components/schemas/IngestResponse/properties/status/enum"
        ),
        wire_strings(&[ReceiptStatus::Accepted, ReceiptStatus::Duplicate])
    );
}

#[test]
fn an_undocumented_field_is_caught() {
    let mut doc = document_json();
    let lineage = doc
        .pointer_mut("/components/schemas/PlanDocument/properties")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.remove("lineage"));
    assert!(lineage.is_some());
    let errors = disagreements(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".lineage: sent but not documented")),
        "{errors:?}"
    );
}

#[test]
fn a_field_no_body_sends_is_caught() {
    let mut doc = document_json();
    doc["components"]["schemas"]["Rollout"]["properties"]["eta"] = json!({"type": "string"});
    let errors = disagreements(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Rollout: field `eta` is documented but no body sends it")),
        "{errors:?}"
    );
}

#[test]
fn a_wrong_type_or_missing_body_is_caught() {
    let mut doc = document_json();
    doc["components"]["schemas"]["Cluster"]["properties"]["lineage"] = json!({"type": "string"});
    if let Some(ok) = doc.pointer_mut("/paths/~1healthz/get/responses/200/content") {
        *ok = json!({});
    }
    doc["paths"]["/v1/clusters/{cluster}/workers"]["get"]["responses"]["206"] =
        json!({"content": {"application/json": {"schema": {"type": "object"}}}});
    let errors = disagreements(&doc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".lineage: 1 is not of the documented type")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"/healthz\", \"200\"): no JSON schema documented")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("206: documented JSON body without samples")),
        "{errors:?}"
    );
}
