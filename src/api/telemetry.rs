//! `POST /v1/clusters/{cluster}/telemetry` (one worker window, JSON or the
//! binary encoding) and `GET .../telemetry/windows` (the aggregated windows).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use ballast_protocol::{
    window_binary, ErrorCode, LoadWindow, LoadWindows, RawWindow, ReceiptStatus, TelemetryReceipt,
    WindowSpan,
};
use serde::Deserialize;

use super::error::ApiError;
use super::{cluster_entry, parse_limit};
use crate::domain::load_codec;
use crate::domain::{TelemetryWindow, WindowError, WindowLoad};
use crate::plan_cache::ClusterEntry;
use crate::state::AppState;
use crate::store::telemetry::{IngestOutcome, StagedWindow};
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

pub async fn post(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TelemetryReceipt>), ApiError> {
    let started = Instant::now();
    let result = ingest(&state, &cluster, &headers, &body).await;
    let m = &state.metrics;
    match &result {
        Ok((status, _)) => {
            let label = if *status == StatusCode::ACCEPTED {
                "accepted"
            } else {
                "duplicate"
            };
            m.ingest_windows.with_label_values(&[label]).inc();
            m.ingest_seconds.observe(started.elapsed().as_secs_f64());
        }
        Err(err) => m
            .ingest_rejections
            .with_label_values(&[err.code.as_str()])
            .inc(),
    }
    result
}

async fn ingest(
    state: &AppState,
    cluster: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Json<TelemetryReceipt>), ApiError> {
    let encoding = encoding(headers)?;
    state
        .metrics
        .ingest_bytes
        .with_label_values(&[encoding.label()])
        .inc_by(body.len() as u64);
    let entry = cluster_entry(state, cluster).await?;
    let info = entry.info();
    let raw = match encoding {
        Encoding::Json => RawWindow::from_json(body),
        Encoding::Binary => window_binary::decode(body),
    }
    .map_err(|e| ApiError::bad_request(ErrorCode::MalformedWindow, e.to_string()))?;
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
        })
        .await?;
    let grid = state.config.windows();
    match outcome {
        IngestOutcome::Accepted | IngestOutcome::Duplicate => {
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
    let len = info.topology.num_layers() * info.topology.num_logical_experts();
    let limit = parse_limit(query.limit.as_deref())?;
    let windows = state
        .store
        .load_windows(
            &info.name,
            info.lineage,
            i64::MAX,
            limit,
            info.topology.num_layers(),
            len,
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
