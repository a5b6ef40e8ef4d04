//! [`super::from_service`]'s side of the wire: the cluster's topology from
//! `GET /v1/clusters/{cluster}`, then the trace route's JSON Lines read
//! chunk by chunk, each complete line parsed as it arrives.

use std::time::Duration;

use ballast_protocol::{Cluster, ErrorBody, TraceWindow};
use ballast_solver::Topology;
use serde::de::DeserializeOwned;

use super::HistoryError;
use crate::api::trace::LINEAGE_HEADER;
use crate::domain::ClusterName;
use crate::time::Span;

/// How long to wait for a connection, and then for each read.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A service to read a cluster's history from, not contacted yet.
pub(super) struct Remote {
    client: reqwest::Client,
    /// `{base}/v1/clusters/{cluster}`.
    cluster_url: String,
    token: Option<String>,
    span: Span,
}

impl Remote {
    pub(super) fn new(
        base_url: &str,
        cluster: &ClusterName,
        token: Option<&str>,
        span: Span,
    ) -> Result<Remote, HistoryError> {
        let base = base_url.trim_end_matches('/');
        let refused = |message: &str| HistoryError::Http {
            url: base.to_owned(),
            message: message.to_owned(),
        };
        if base.starts_with("https://") {
            return Err(refused(
                "https is not supported: the service speaks plain HTTP \
                 (terminate TLS in front of it and give its http:// address)",
            ));
        }
        if !base.starts_with("http://") {
            return Err(refused("not an http:// address"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| refused(&chain(&e)))?;
        Ok(Remote {
            client,
            cluster_url: format!("{base}/v1/clusters/{cluster}"),
            token: token.map(str::to_owned),
            span,
        })
    }

    /// Fetches the topology and starts the trace.
    pub(super) async fn open(self) -> Result<(Topology, Lines), HistoryError> {
        let response = self.get(&self.cluster_url).await?;
        let body = response.bytes().await.map_err(|e| HistoryError::Http {
            url: self.cluster_url.clone(),
            message: chain(&e),
        })?;
        let cluster: Cluster = parse(&self.cluster_url, "the cluster", &body)?;
        let topology = Topology::new(cluster.topology).map_err(|e| HistoryError::Malformed {
            url: self.cluster_url.clone(),
            what: format!("the cluster's topology: {e}"),
        })?;
        let url = format!("{}/telemetry/trace{}", self.cluster_url, self.span.query());
        let response = self.get(&url).await?;
        // The topology and the windows must be of one lineage: a topology
        // PUT between the two requests would pair windows with the wrong shape.
        let lineage = response
            .headers()
            .get(LINEAGE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        if lineage != Some(cluster.lineage) {
            return Err(HistoryError::Malformed {
                url,
                what: format!(
                    "the windows are of lineage {lineage:?}, the topology read just before of lineage {}: \
                     the cluster's topology changed meanwhile; retry",
                    cluster.lineage
                ),
            });
        }
        let lines = Lines {
            layers: topology.num_layers(),
            experts: topology.num_logical_experts(),
            response,
            url,
            buf: Vec::new(),
            scanned: 0,
            line: 0,
            done: false,
        };
        Ok((topology, lines))
    }

    /// A GET that succeeded; any other status becomes the service's error.
    async fn get(&self, url: &str) -> Result<reqwest::Response, HistoryError> {
        let mut request = self.client.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| HistoryError::Http {
            url: url.to_owned(),
            message: chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.code.as_str().to_owned(), body.message),
            Err(_) => ("-".to_owned(), text.chars().take(200).collect()),
        };
        Err(HistoryError::Service {
            url: url.to_owned(),
            status: status.as_u16(),
            code,
            message,
        })
    }
}

/// The trace's lines as they arrive.
pub(super) struct Lines {
    layers: usize,
    experts: usize,
    response: reqwest::Response,
    url: String,
    /// Bytes received and not yet parsed (at most one partial line).
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no newline.
    scanned: usize,
    /// Lines parsed so far.
    line: usize,
    done: bool,
}

impl Lines {
    /// The windows of the next chunk (possibly none), or `None` at the end.
    pub(super) async fn next_windows(&mut self) -> Result<Option<Vec<TraceWindow>>, HistoryError> {
        if self.done {
            return Ok(None);
        }
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|e| HistoryError::Http {
                url: self.url.clone(),
                message: format!("after {} windows: {}", self.line, chain(&e)),
            })?;
        let mut windows = Vec::new();
        match chunk {
            Some(bytes) => {
                self.buf.extend_from_slice(&bytes);
                while let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                    let end = self.scanned + at;
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    self.scanned = 0;
                    if let Some(window) = self.parse_line(&line[..end])? {
                        windows.push(window);
                    }
                }
                self.scanned = self.buf.len();
            }
            None => {
                self.done = true;
                let rest = std::mem::take(&mut self.buf);
                match self.parse_line(&rest)? {
                    Some(window) => windows.push(window),
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(windows))
    }

    /// One line as a window of the topology's shape; blank lines are skipped.
    fn parse_line(&mut self, line: &[u8]) -> Result<Option<TraceWindow>, HistoryError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        self.line += 1;
        let what = format!("line {}", self.line);
        let window: TraceWindow = parse(&self.url, &what, line)?;
        let shaped = window.load.len() == self.layers
            && window.load.iter().all(|row| row.len() == self.experts);
        if !shaped {
            return Err(HistoryError::Malformed {
                url: self.url.clone(),
                what: format!(
                    "{what} (window {}): the load is not {} layers of {} experts, the cluster's shape",
                    window.window, self.layers, self.experts
                ),
            });
        }
        Ok(Some(window))
    }
}

fn parse<T: DeserializeOwned>(url: &str, what: &str, body: &[u8]) -> Result<T, HistoryError> {
    serde_json::from_slice(body).map_err(|e| HistoryError::Malformed {
        url: url.to_owned(),
        what: format!("{what}: {e}"),
    })
}

/// An error with its causes (reqwest's own message rarely says why).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
