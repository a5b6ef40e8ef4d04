//! `ballast-worker run` options ([`RunArgs`], the command line) and the
//! checked [`AgentConfig`] the agent runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::backoff::Backoff;
use super::model::ModelOptions;
use crate::error::ConfigError;
use crate::moe::DispatchMode;
use crate::traffic::Skew;

/// The command line of `ballast-worker run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base URL of the Ballast service.
    #[arg(long, env = "BALLAST_SERVICE", default_value = "http://127.0.0.1:8420")]
    pub service: String,
    /// Cluster name (its topology is fetched from the service).
    #[arg(long, env = "BALLAST_CLUSTER")]
    pub cluster: String,
    /// This process's node index in the cluster topology.
    #[arg(long)]
    pub node: usize,
    /// Bearer token for the service's worker routes.
    #[arg(long, env = "BALLAST_WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve Prometheus metrics on this address (`/metrics`; port 0 picks one).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,

    /// Model width (a multiple of 128).
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Intermediate width of each expert (a multiple of 128).
    #[arg(long, default_value_t = 128)]
    pub expert_width: usize,
    /// Experts per token [default: min(8, experts in --topk-groups groups)].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Groups a token may use [default: half the topology's groups, at least 1].
    #[arg(long)]
    pub topk_groups: Option<usize>,
    /// Seed of the model weights (the same on every node of a cluster).
    #[arg(long, default_value_t = 1)]
    pub model_seed: u64,

    /// Tokens per step (one batch per step, split evenly over the node's GPUs).
    #[arg(long, default_value_t = 64)]
    pub tokens_per_step: usize,
    /// Expert popularity: `uniform`, `zipf:EXPONENT`, `lognormal:SIGMA` or
    /// `lognormal:SIGMA:GROUP_SIGMA` (with a per-group factor).
    #[arg(long, default_value = "zipf:1.0", value_parser = parse_skew)]
    pub skew: Skew,
    /// Per-token spread of expert affinity.
    #[arg(long, default_value_t = 1.0)]
    pub token_noise: f64,
    /// Random-walk step of every expert's log-popularity per step.
    #[arg(long, default_value_t = 0.0)]
    pub drift_per_step: f64,
    /// Seed of the expert popularity (the same on every node of a cluster).
    #[arg(long, default_value_t = 7)]
    pub traffic_seed: u64,
    /// A file whose content `FRACTION [tag]` shuffles that fraction of the
    /// experts' popularity whenever the content changes.
    #[arg(long)]
    pub drift_file: Option<PathBuf>,
    /// Shortest time per step (0: as fast as the CPU allows).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub step_interval: Duration,
    /// Stop after this many steps (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub steps: Option<u64>,
    /// How tokens are split among an expert's replicas.
    #[arg(long, value_enum, default_value_t = DispatchMode::Share)]
    pub dispatch: DispatchMode,

    /// Also report co-visit counts (`covisit` in each telemetry window):
    /// E × K numbers per layer, 8× the load for DeepSeek-V3's 8 groups.
    #[arg(long = "covisit")]
    pub report_covisit: bool,

    /// Length of one telemetry window.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Windows buffered while the service is unreachable; when full, the
    /// oldest is dropped (and counted).
    #[arg(long, default_value_t = 1024)]
    pub queue_capacity: usize,
    /// How long one plan long-poll waits.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub long_poll: Duration,
    /// First retry delay (doubles per attempt, with jitter).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// How long shutdown may spend delivering buffered windows.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Checked agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL without a trailing slash.
    pub service: String,
    pub cluster: String,
    pub node: usize,
    pub token: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub model: ModelOptions,
    pub traffic: TrafficOptions,
    pub dispatch: DispatchMode,
    /// Send co-visit counts with each window (off by default: the wire cost).
    pub report_covisit: bool,
    pub window: Duration,
    pub queue_capacity: usize,
    pub long_poll: Duration,
    pub backoff: Backoff,
    pub shutdown_timeout: Duration,
}

/// The synthetic traffic a node generates.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub tokens_per_step: usize,
    pub skew: Skew,
    pub token_noise: f64,
    pub drift_per_step: f64,
    pub seed: u64,
    pub drift_file: Option<PathBuf>,
    pub step_interval: Duration,
    pub steps: Option<u64>,
}

fn parse_skew(text: &str) -> Result<Skew, String> {
    let number = |v: &str| {
        v.parse::<f64>()
            .map_err(|_| format!("`{v}` is not a number"))
    };
    match text.split_once(':') {
        None if text == "uniform" => Ok(Skew::Uniform),
        Some(("zipf", v)) => Ok(Skew::Zipf {
            exponent: number(v)?,
        }),
        Some(("lognormal", v)) => {
            let (sigma, group_sigma) = match v.split_once(':') {
                Some((s, g)) => (number(s)?, number(g)?),
                None => (number(v)?, 0.0),
            };
            Ok(Skew::LogNormal { sigma, group_sigma })
        }
        _ => Err(format!(
            "`{text}`: use uniform, zipf:EXPONENT, lognormal:SIGMA or lognormal:SIGMA:GROUP_SIGMA"
        )),
    }
}

/// Cluster names travel in URL paths; the service accepts the same set.
fn check_cluster(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "cluster",
            format!("`{name}` must be 1-63 characters of a-z, 0-9, `-` or `_`"),
        ))
    }
}

impl RunArgs {
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        check_cluster(&self.cluster)?;
        // No TLS in the agent: inside a cluster it is terminated by the
        // mesh or a sidecar, and a rustls build would change the TLS setup
        // of every reqwest user in the workspace.
        if !self.service.starts_with("http://") {
            return Err(ConfigError::new(
                "service",
                format!(
                    "`{}` is not an http:// URL (terminate TLS in front of the agent)",
                    self.service
                ),
            ));
        }
        let positive = |field: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::new(field, "must be positive"))
            } else {
                Ok(())
            }
        };
        positive("tokens_per_step", self.tokens_per_step)?;
        positive("queue_capacity", self.queue_capacity)?;
        for (field, value) in [
            ("window", self.window),
            ("long_poll", self.long_poll),
            ("retry_base", self.retry_base),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        Ok(AgentConfig {
            service: self.service.trim_end_matches('/').to_owned(),
            cluster: self.cluster,
            node: self.node,
            token: self.token.filter(|t| !t.is_empty()),
            metrics_listen: self.metrics_listen,
            model: ModelOptions {
                hidden: self.hidden,
                expert_width: self.expert_width,
                top_k: self.top_k,
                topk_groups: self.topk_groups,
                seed: self.model_seed,
            },
            traffic: TrafficOptions {
                tokens_per_step: self.tokens_per_step,
                skew: self.skew,
                token_noise: self.token_noise,
                drift_per_step: self.drift_per_step,
                seed: self.traffic_seed,
                drift_file: self.drift_file,
                step_interval: self.step_interval,
                steps: self.steps,
            },
            dispatch: self.dispatch,
            report_covisit: self.report_covisit,
            window: self.window,
            queue_capacity: self.queue_capacity,
            long_poll: self.long_poll,
            backoff: Backoff::new(self.retry_base, self.retry_max.max(self.retry_base)),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<AgentConfig, String> {
        let mut args = vec!["run", "--cluster", "c1", "--node", "1"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .run
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_skews_parse() {
        let c = parse(&["--skew", "lognormal:1.5", "--service", "http://h:1/"]).unwrap();
        assert_eq!(c.service, "http://h:1");
        assert_eq!(
            c.traffic.skew,
            Skew::LogNormal {
                sigma: 1.5,
                group_sigma: 0.0
            }
        );
        let c = parse(&["--skew", "lognormal:0.8:0.5"]).unwrap();
        assert_eq!(
            c.traffic.skew,
            Skew::LogNormal {
                sigma: 0.8,
                group_sigma: 0.5
            }
        );
        assert_eq!(c.dispatch, DispatchMode::Share);
        assert!(!c.report_covisit);
        assert!(parse(&["--covisit"]).unwrap().report_covisit);
        let c = parse(&["--skew", "uniform", "--dispatch", "optimal"]).unwrap();
        assert_eq!(c.traffic.skew, Skew::Uniform);
        assert_eq!(c.dispatch, DispatchMode::Optimal);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--skew", "zipf:x"]).is_err());
        assert!(parse(&["--skew", "pareto:1"]).is_err());
        assert!(parse(&["--skew", "lognormal:1:x"]).is_err());
        assert!(parse(&["--window", "0s"]).unwrap_err().contains("window"));
        assert!(parse(&["--service", "ftp://x"]).is_err());
        assert!(parse(&["--tokens-per-step", "0"]).is_err());
        let args = ["run", "--cluster", "Bad/Name", "--node", "0"];
        let err = Cli::try_parse_from(args).unwrap().run.into_config();
        assert_eq!(err.unwrap_err().field, "cluster");
    }
}
