//! The HTTP API. [`routes`] is the one table of every route, its access
//! level and handler; the router and the OpenAPI consistency test both read
//! it. Every body is a `ballast_protocol` type; every error, including the
//! framework's own (unknown route, body too large, bad query), leaves as
//! the protocol's `{"code": .., "message": ..}`.

pub mod auth;
pub mod clusters;
pub mod diff;
pub mod error;
pub mod health;
pub mod openapi;
#[cfg(test)]
mod openapi_agreement;
pub mod plans;
pub mod rebalance;
pub mod stream;
pub mod telemetry;
pub mod trace;
pub mod workers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use ballast_protocol::ErrorCode;

use crate::domain::ClusterName;
use crate::plan_cache::{ClusterEntry, PublishedPlan};
use crate::state::AppState;
use error::ApiError;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Worker,
    Admin,
}

/// One row of the route table.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

/// Every route of the service.
pub fn routes() -> Vec<Route> {
    use Access::*;
    let r = |method, path, access, handler| Route {
        method,
        path,
        access,
        handler,
    };
    vec![
        r("GET", "/healthz", Public, get(health::healthz)),
        r("GET", "/readyz", Public, get(health::readyz)),
        r("GET", "/metrics", Public, get(health::metrics)),
        r("GET", "/v1/openapi.json", Public, get(openapi::document)),
        r("GET", "/v1/clusters", Worker, get(clusters::list)),
        r(
            "PUT",
            "/v1/clusters/{cluster}",
            Admin,
            put(clusters::put).layer(DefaultBodyLimit::max(clusters::MAX_TOPOLOGY_BYTES)),
        ),
        r(
            "DELETE",
            "/v1/clusters/{cluster}",
            Admin,
            delete(clusters::delete),
        ),
        r("GET", "/v1/clusters/{cluster}", Worker, get(clusters::get)),
        r(
            "POST",
            "/v1/clusters/{cluster}/telemetry",
            Worker,
            post(telemetry::post),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/telemetry/windows",
            Worker,
            get(telemetry::windows),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/telemetry/trace",
            Worker,
            get(trace::trace),
        ),
        r(
            "POST",
            "/v1/clusters/{cluster}/rebalance",
            Admin,
            post(rebalance::post),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/decisions",
            Worker,
            get(workers::decisions),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans",
            Worker,
            get(plans::list),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans/latest",
            Worker,
            get(plans::latest),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans/stream",
            Worker,
            get(stream::stream),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans/{version}",
            Worker,
            get(plans::by_version),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans/{version}/diff",
            Worker,
            get(diff::diff),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/plans/{version}/rollout",
            Worker,
            get(workers::rollout),
        ),
        r(
            "GET",
            "/v1/clusters/{cluster}/workers",
            Worker,
            get(workers::list),
        ),
        r(
            "POST",
            "/v1/clusters/{cluster}/workers/{worker}/ack",
            Worker,
            post(workers::ack),
        ),
    ]
}

/// Request ids: a per-process counter (`x-request-id`), kept if the client sent one.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        HeaderValue::from_str(&format!("{id:x}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Builds the application's router.
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for route in routes() {
        let handler = match route.access {
            Access::Public => route.handler,
            Access::Worker => route
                .handler
                .route_layer(from_fn_with_state(state.clone(), auth::require_worker)),
            Access::Admin => route
                .handler
                .route_layer(from_fn_with_state(state.clone(), auth::require_admin)),
        };
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    let header = header::HeaderName::from_static("x-request-id");
    router
        .fallback(|| async { ApiError::not_found(ErrorCode::NotFound, "no such route") })
        .layer(from_fn_with_state(state.clone(), record_metrics))
        .layer(from_fn(json_errors))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // A client that stops sending its body mid-way fails (400) instead
        // of holding the request open.
        .layer(RequestBodyTimeoutLayer::new(state.config.body_read_timeout))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let uri = loggable_uri(req.uri());
            tracing::info_span!("request", method = %req.method(), uri = %uri, request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, Counter::default()))
        .with_state(state)
}

/// The request target as logs show it: the path, and the query with the
/// value of any parameter that may carry a secret (`token=`,
/// `access_token=`, `key=`, ...) replaced, so a client that puts its token
/// in the URL does not leak it into the logs.
fn loggable_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query = query
        .split('&')
        .map(|pair| {
            let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
            let lower = name.to_ascii_lowercase();
            let secret = ["token", "key", "secret", "auth", "pass", "sig"]
                .iter()
                .any(|word| lower.contains(word));
            if secret {
                format!("{name}=<redacted>")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{}?{query}", uri.path())
}

/// Counts requests and latency per route template (bounded labels).
async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Rewrites the framework's plain-text error responses as `{code, message}`.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return close_if_unread(response);
    }
    let code = match status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Unprocessable,
        _ => ErrorCode::Error,
    };
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    close_if_unread(ApiError::new(status, code, message).into_response())
}

/// A body refused as too large was left unread, so its connection cannot
/// carry another request: `Connection: close` says so (hyper then closes
/// it), or a client reuses it and its next request breaks.
fn close_if_unread(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub(crate) fn parse_cluster(name: &str) -> Result<ClusterName, ApiError> {
    ClusterName::parse(name)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidClusterName, e.to_string()))
}

/// An integer in a path or query: `395`, or `395.0` (JSON Schema's
/// `integer` includes numbers with a zero fraction, and clients generated
/// from the OpenAPI document may write them so).
pub(crate) fn parse_integer(text: &str) -> Option<i64> {
    let digits = match text.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole,
        Some(_) => return None,
        None => text,
    };
    digits.parse::<i64>().ok()
}

/// The largest `?limit=` the OpenAPI document allows.
pub(crate) const MAX_LIMIT: i64 = 1000;

/// `?limit=`: 1 to [`MAX_LIMIT`], 20 when absent; anything else is refused
/// (not clamped), as the OpenAPI document says.
pub(crate) fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(20);
    };
    parse_integer(text)
        .filter(|v| (1..=MAX_LIMIT).contains(v))
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit=`{text}`: use an integer from 1 to {MAX_LIMIT}"),
            )
        })
}

pub(crate) fn parse_version(text: &str) -> Result<i64, ApiError> {
    parse_integer(text).filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidVersion,
            format!("`{text}` is not a plan version (1, 2, ...)"),
        )
    })
}

/// The cluster's live entry, or 404.
pub(crate) async fn cluster_entry(
    state: &AppState,
    name: &str,
) -> Result<Arc<ClusterEntry>, ApiError> {
    let name = parse_cluster(name)?;
    state.plan_cache.load(&name).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::ClusterNotFound,
            format!("cluster {name} does not exist; PUT its topology first"),
        )
    })
}

/// Version `version` of the cluster's plans, or 404.
pub(crate) async fn plan_version(
    state: &AppState,
    entry: &ClusterEntry,
    version: i64,
) -> Result<Arc<PublishedPlan>, ApiError> {
    state.plan_cache.plan(entry, version).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::PlanNotFound,
            format!(
                "cluster {} has no plan version {version}",
                entry.info().name
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::loggable_uri;

    #[test]
    fn integers_and_limits_follow_the_document() {
        use super::{parse_integer, parse_limit};
        assert_eq!(parse_integer("395"), Some(395));
        assert_eq!(parse_integer("395.0"), Some(395));
        assert_eq!(parse_integer("395.5"), None);
        assert_eq!(parse_integer("9223372036854775808"), None);
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        for refused in ["0", "1001", "-1", "", "x"] {
            assert!(parse_limit(Some(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn query_secrets_stay_out_of_logs() {
        let uri = "/v1/clusters/a/plans?limit=5&access_token=s3cret&TOKEN=x&wait=1s"
            .parse()
            .unwrap();
        let logged = loggable_uri(&uri);
        assert!(!logged.contains("s3cret"), "{logged}");
        assert_eq!(
            logged,
            "/v1/clusters/a/plans?limit=5&access_token=<redacted>&TOKEN=<redacted>&wait=1s"
        );
        assert_eq!(loggable_uri(&"/healthz".parse().unwrap()), "/healthz");
    }
}
