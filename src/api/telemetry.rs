//! `POST /v1/clusters/{cluster}/telemetry` (one worker window, JSON or the
//! binary encoding) and `GET .../telemetry/windows` (the aggregated windows).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use ballast_protocol::telemetry::MAX_COVISIT_VALUES;
use ballast_protocol::{
    window_binary, DecodeError, ErrorCode, LoadWindow, LoadWindows, RawWindow, ReceiptStatus,
    TelemetryReceipt, WindowSpan,
};
use ballast_solver::Topology;
use futures_util::StreamExt;
use serde::Deserialize;

use super::error::ApiError;
use super::{cluster_entry, parse_limit};
use crate::domain::{load_codec, ClusterName};
use crate::domain::{TelemetryWindow, WindowError, WindowLoad};
use crate::plan_cache::ClusterEntry;
use crate::state::AppState;
use crate::store::telemetry::{IngestOutcome, StagedWindow, WindowShape};
use crate::time::{now_ms, rfc3339};

#[derive(Clone, Copy)]
enum Encoding {
    Json,
    Binary,
}

impl Encoding {
    fn label(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Binary => "binary",
        }
    }
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(Encoding::Json)
    } else if media.eq_ignore_ascii_case(window_binary::CONTENT_TYPE) {
        Ok(Encoding::Binary)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type `{content_type}`: send application/json or {}",
                window_binary::CONTENT_TYPE
            ),
        ))
    }
}

fn invalid(err: WindowError) -> ApiError {
    let code = match err {
        WindowError::Worker(_) => ErrorCode::UnknownWorker,
        _ => ErrorCode::InvalidWindow,
    };
    ApiError::unprocessable(code, err.to_string())
}

/// The largest body a window for `topology` can need: the values at 48
/// bytes a number in JSON (20 digits, a separator and pretty-printing's
/// indentation) or 8 in the binary encoding, plus the worker name, times
/// and framing. A body above it cannot be a valid window, so it is refused
/// before it is read (a 32 MB body for a DeepSeek-V3 cluster used to cost
/// ~290 MB of memory to parse and refuse).
///
/// Co-visit counts (`L x E x K`, logical load only) add their values when
/// the topology may carry them ([`MAX_COVISIT_VALUES`]).
fn window_body_limit(topology: &Topology, encoding: Encoding) -> usize {
    let (layers, experts) = (topology.num_layers(), topology.num_logical_experts());
    let covisit = layers * experts * topology.num_groups();
    let covisit = if covisit <= MAX_COVISIT_VALUES {
        covisit
    } else {
        0
    };
    let values = layers * experts.max(topology.slots_per_gpu()) + covisit;
    match encoding {
        Encoding::Json => 16 * 1024 + values * 48,
        Encoding::Binary => window_binary::HEADER_V2 + usize::from(u16::MAX) + values * 8,
    }
}

/// Reads at most `limit` bytes of `body`; a longer one is refused with 413
/// as soon as its `Content-Length`, or its bytes, pass the limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("a window for this cluster's topology is at most {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(ErrorCode::BadRequest, format!("reading the body: {e}"))
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

pub async fn post(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<TelemetryReceipt>), ApiError> {
    let started = Instant::now();
    // The cluster's name once it is known to exist: a name from the path
    // alone would let any caller mint series.
    let mut known = None;
    let result = ingest(&state, &cluster, &headers, body, &mut known).await;
    let m = &state.metrics;
    let label = known.as_ref().map_or("", |c: &ClusterName| c.as_str());
    match &result {
        Ok((status, _)) => {
            let result = if *status == StatusCode::ACCEPTED {
                "accepted"
            } else {
                "duplicate"
            };
            m.ingest_windows.with_label_values(&[label, result]).inc();
            m.ingest_seconds
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
        }
        Err(err) => m
            .ingest_rejections
            .with_label_values(&[label, err.code.as_str()])
            .inc(),
    }
    result
}

async fn ingest(
    state: &AppState,
    cluster: &str,
    headers: &HeaderMap,
    body: Body,
    known: &mut Option<ClusterName>,
) -> Result<(StatusCode, Json<TelemetryReceipt>), ApiError> {
    let encoding = encoding(headers)?;
    let entry = cluster_entry(state, cluster).await?;
    let info = entry.info();
    *known = Some(info.name.clone());
    let limit = window_body_limit(&info.topology, encoding).min(state.config.max_body_bytes);
    let body = read_body(headers, body, limit).await?;
    state
        .metrics
        .ingest_bytes
        .with_label_values(&[info.name.as_str(), encoding.label()])
        .inc_by(body.len() as u64);
    let raw = match encoding {
        Encoding::Json => RawWindow::from_json(&body),
        Encoding::Binary => window_binary::decode(&body),
    }
    .map_err(|e| match e {
        // Ragged rows are a shape error like any other: 422.
        DecodeError::Shape { .. } | DecodeError::Refused { .. } => {
            ApiError::unprocessable(ErrorCode::InvalidWindow, e.to_string())
        }
        _ => ApiError::bad_request(ErrorCode::MalformedWindow, e.to_string()),
    })?;
    drop(body);
    let now = now_ms();
    let window = TelemetryWindow::from_raw(raw, &info.topology, now).map_err(invalid)?;
    let logical = logical_load(state, &entry, &window).await?;
    let bucket = state.config.windows().bucket_of(window.end_ms);
    let outcome = state
        .ingest
        .submit(StagedWindow {
            cluster: info.name.clone(),
            lineage: info.lineage,
            worker: window.worker.clone(),
            seq: window.seq,
            bucket,
            load: load_codec::encode(&logical),
            values: logical.len(),
            layers: info.topology.num_layers(),
            covisit: window.covisit.as_deref().map(load_codec::encode),
            groups: info.topology.num_groups(),
        })
        .await?;
    let grid = state.config.windows();
    match outcome {
        IngestOutcome::Accepted | IngestOutcome::Duplicate => {
            // The newest end, not the last one: a late retry must not make
            // the telemetry look older than it is.
            let newest = state
                .metrics
                .telemetry_latest_window
                .with_label_values(&[info.name.as_str()]);
            newest.set(newest.get().max(window.end_ms as f64 / 1000.0));
            let (status, receipt) = if outcome == IngestOutcome::Accepted {
                (StatusCode::ACCEPTED, ReceiptStatus::Accepted)
            } else {
                (StatusCode::OK, ReceiptStatus::Duplicate)
            };
            Ok((
                status,
                Json(TelemetryReceipt {
                    status: receipt,
                    worker: window.worker.as_str().to_owned(),
                    seq: window.seq,
                    window: WindowSpan {
                        start: rfc3339(grid.start_ms(bucket)),
                        end: rfc3339(grid.end_ms(bucket)),
                    },
                }),
            ))
        }
        IngestOutcome::NotMonotone { last_seq } => Err(ApiError::conflict(
            ErrorCode::SeqNotMonotone,
            format!(
                "seq {} of worker {} is below its last accepted seq {last_seq} and was never accepted",
                window.seq,
                window.worker.as_str()
            ),
        )),
        IngestOutcome::TopologyChanged { validated, current } => Err(ApiError::conflict(
            ErrorCode::LineageMismatch,
            format!(
                "the cluster's topology changed (lineage {validated} to {current}) while this window was stored; \
                 nothing was stored: read the cluster's topology and send windows for it"
            ),
        )),
        IngestOutcome::ClusterGone => Err(ApiError::not_found(
            ErrorCode::ClusterNotFound,
            format!("cluster {} was deleted; nothing was stored", info.name),
        )),
        IngestOutcome::UnknownWorker => Err(ApiError::unprocessable(
            ErrorCode::UnknownWorker,
            format!("worker {} is not part of the cluster's current topology", window.worker.as_str()),
        )),
    }
}

/// The window as logical load (`L x E`): `slot_load` is mapped through the
/// plan it was measured under.
async fn logical_load(
    state: &AppState,
    entry: &ClusterEntry,
    window: &TelemetryWindow,
) -> Result<Vec<f64>, ApiError> {
    match &window.load {
        WindowLoad::Logical(values) => Ok(values.clone()),
        WindowLoad::Slot {
            plan_version,
            values,
        } => {
            let info = entry.info();
            let plan = state
                .plan_cache
                .plan(entry, *plan_version)
                .await?
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        ErrorCode::UnknownPlanVersion,
                        format!("plan version {plan_version} does not exist"),
                    )
                })?;
            if plan.lineage != info.lineage {
                return Err(ApiError::conflict(
                    ErrorCode::StalePlanVersion,
                    format!(
                        "plan version {plan_version} belongs to an older topology (lineage {})",
                        plan.lineage
                    ),
                ));
            }
            Ok(plan
                .plan
                .logical_load_of_gpu(&info.topology, window.worker.gpu(), values))
        }
    }
}

#[derive(Deserialize)]
pub struct WindowsQuery {
    limit: Option<String>,
}

pub async fn windows(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<WindowsQuery>,
) -> Result<Json<LoadWindows>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let limit = parse_limit(query.limit.as_deref())?;
    let windows = state
        .store
        .load_windows(
            &info.name,
            info.lineage,
            i64::MAX,
            limit,
            // Token totals only: leave the co-visit counts unread.
            WindowShape::of(&info.topology).load_only(),
        )
        .await?;
    let grid = state.config.windows();
    let windows = windows
        .iter()
        .rev()
        .map(|w| LoadWindow {
            start: rfc3339(grid.start_ms(w.bucket)),
            end: rfc3339(grid.end_ms(w.bucket)),
            worker_windows: w.windows,
            tokens: w.load.iter().sum::<f64>(),
        })
        .collect();
    Ok(Json(LoadWindows {
        cluster: info.name.as_str().to_owned(),
        lineage: info.lineage,
        window_seconds: state.config.window.as_secs_f64(),
        windows,
    }))
}
