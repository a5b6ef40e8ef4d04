//! The service's HTTP API as the agent uses it: topology, worker sequence
//! numbers, telemetry windows, plan long-polls and acks. Every body is a
//! `ballast_protocol` type, the same the service answers with.

use std::collections::HashMap;
use std::time::Duration;

use ballast_protocol::{AckRequest, Cluster, ErrorBody, ErrorCode, PlanDocument, WorkerList};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, IF_NONE_MATCH};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use thiserror::Error;

use ballast_solver::Topology;

/// Longest a plain request (not a long-poll) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call to the service.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        /// The error body's code, when the answer was one.
        code: Option<ErrorCode>,
        body: String,
    },
    #[error("{url}: unexpected response: {detail}")]
    Malformed { url: String, detail: String },
}

impl ClientError {
    /// Worth retrying: the service or the network may recover (connection
    /// errors, timeouts, 5xx, 408, 429). Anything else is a refusal that a
    /// retry would only repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            ClientError::Malformed { .. } => false,
        }
    }
}

/// What the service said to a telemetry window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Stored now (202).
    Accepted,
    /// Stored before: an earlier attempt reached it (200).
    Duplicate,
}

/// The cluster as the service describes it.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub topology: Topology,
    pub lineage: i64,
}

/// A client for one cluster of one service.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base: String,
    cluster: String,
    token: Option<HeaderValue>,
}

impl ServiceClient {
    /// `base` is the service URL without a trailing slash.
    pub fn new(base: &str, cluster: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.to_owned(),
                source,
            })?;
        let token = token
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| ClientError::Malformed {
                    url: base.to_owned(),
                    detail: format!("the token is not a valid header value: {e}"),
                })
            })
            .transpose()?;
        Ok(ServiceClient {
            http,
            base: base.to_owned(),
            cluster: cluster.to_owned(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/clusters/{}{path}", self.base, self.cluster)
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => request.header(AUTHORIZATION, t.clone()),
            None => request,
        }
    }

    async fn send(&self, url: &str, request: RequestBuilder) -> Result<Response, ClientError> {
        self.authorized(request)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_owned(),
                source,
            })
    }

    async fn json<T: DeserializeOwned>(url: &str, response: Response) -> Result<T, ClientError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_owned(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }

    async fn refused(url: &str, response: Response) -> ClientError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<ErrorBody>(&body)
            .ok()
            .map(|e| e.code);
        ClientError::Status {
            url: url.to_owned(),
            status,
            code,
            body: body.chars().take(300).collect(),
        }
    }

    /// `GET /v1/clusters/{c}`: the topology this node must fit.
    pub async fn cluster(&self) -> Result<ClusterInfo, ClientError> {
        let url = self.url("");
        let r = self
            .send(&url, self.http.get(&url).timeout(REQUEST_TIMEOUT))
            .await?;
        if !r.status().is_success() {
            return Err(Self::refused(&url, r).await);
        }
        let body: Cluster = Self::json(&url, r).await?;
        let topology = Topology::new(body.topology).map_err(|e| ClientError::Malformed {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        Ok(ClusterInfo {
            topology,
            lineage: body.lineage,
        })
    }

    /// `GET .../workers`: the last accepted `seq` of each worker that has one.
    pub async fn last_seqs(&self) -> Result<HashMap<String, i64>, ClientError> {
        let url = self.url("/workers");
        let r = self
            .send(&url, self.http.get(&url).timeout(REQUEST_TIMEOUT))
            .await?;
        if !r.status().is_success() {
            return Err(Self::refused(&url, r).await);
        }
        let body: WorkerList = Self::json(&url, r).await?;
        Ok(body
            .workers
            .into_iter()
            .filter_map(|w| w.last_seq.map(|s| (w.worker, s)))
            .collect())
    }

    /// `POST .../telemetry` with a JSON window body (a serialized
    /// [`ballast_protocol::TelemetryWindow`]).
    pub async fn post_window(&self, body: &[u8]) -> Result<Delivery, ClientError> {
        let url = self.url("/telemetry");
        let request = self
            .http
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        let r = self.send(&url, request).await?;
        match r.status() {
            StatusCode::ACCEPTED => Ok(Delivery::Accepted),
            StatusCode::OK => Ok(Delivery::Duplicate),
            _ => Err(Self::refused(&url, r).await),
        }
    }

    /// `GET .../plans/latest?wait=` with `If-None-Match: known`: a plan newer
    /// than `known`, or `None` when none came within `wait`.
    pub async fn latest_plan(
        &self,
        known: Option<i64>,
        wait: Duration,
    ) -> Result<Option<PlanDocument>, ClientError> {
        let url = self.url("/plans/latest");
        let query = format!("{url}?wait={}ms", wait.as_millis());
        let mut request = self.http.get(&query).timeout(wait + REQUEST_TIMEOUT);
        if let Some(v) = known {
            request = request.header(IF_NONE_MATCH, format!("\"{v}\""));
        }
        let r = self.send(&url, request).await?;
        match r.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => Ok(Some(Self::json(&url, r).await?)),
            StatusCode::NOT_FOUND if known.is_none() => {
                // `no_plan`: the cluster exists but has no plan yet; any
                // other 404 (no such cluster) is a configuration error.
                match Self::refused(&url, r).await {
                    ClientError::Status {
                        code: Some(ErrorCode::NoPlan),
                        ..
                    } => Ok(None),
                    err => Err(err),
                }
            }
            _ => Err(Self::refused(&url, r).await),
        }
    }

    /// `POST .../workers/{worker}/ack`: `worker` now runs plan `version`.
    pub async fn ack(&self, worker: &str, version: i64) -> Result<(), ClientError> {
        let url = self.url(&format!("/workers/{worker}/ack"));
        let request = self
            .http
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .json(&AckRequest { version });
        let r = self.send(&url, request).await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused(&url, r).await)
        }
    }
}
