//! Cluster and worker names.

use std::fmt;

use ballast_solver::Topology;
use thiserror::Error;

/// Longest accepted cluster name; names appear in URLs, metric labels and keys.
const MAX_CLUSTER_NAME: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("cluster name `{0}` must be 1-63 characters of a-z, 0-9, `-` or `_`, starting with a letter or digit")]
    Cluster(String),
    #[error("worker name `{0}` must look like `node<N>-gpu<G>`")]
    WorkerSyntax(String),
    #[error(
        "worker `{name}` does not exist: the topology has {nodes} nodes of {gpus_per_node} GPUs"
    )]
    WorkerOutOfRange {
        name: String,
        nodes: usize,
        gpus_per_node: usize,
    },
}

/// A cluster's name: lowercase letters, digits, `-` and `_`, so it is safe
/// in a URL path segment, a Prometheus label and an advisory-lock key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_CLUSTER_NAME
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(ClusterName(name.to_owned()))
        } else {
            Err(NameError::Cluster(name.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A GPU worker of one topology, named `node<N>-gpu<G>` (SPEC), which fixes
/// the GPU it runs on: `N * gpus_per_node + G`. Ordered by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerName {
    name: String,
    gpu: usize,
}

impl WorkerName {
    /// Parses `node<N>-gpu<G>` and checks the GPU exists in `topology`.
    pub fn parse(name: &str, topology: &Topology) -> Result<Self, NameError> {
        let syntax = || NameError::WorkerSyntax(name.chars().take(80).collect());
        let rest = name.strip_prefix("node").ok_or_else(syntax)?;
        let (node, gpu) = rest.split_once("-gpu").ok_or_else(syntax)?;
        let node = parse_index(node).ok_or_else(syntax)?;
        let gpu = parse_index(gpu).ok_or_else(syntax)?;
        if node >= topology.num_nodes() || gpu >= topology.gpus_per_node() {
            return Err(NameError::WorkerOutOfRange {
                name: name.to_owned(),
                nodes: topology.num_nodes(),
                gpus_per_node: topology.gpus_per_node(),
            });
        }
        Ok(WorkerName {
            name: name.to_owned(),
            gpu: node * topology.gpus_per_node() + gpu,
        })
    }

    /// The canonical name of GPU `gpu` in `topology`.
    pub fn of_gpu(gpu: usize, topology: &Topology) -> Self {
        let g = topology.gpus_per_node();
        WorkerName {
            name: format!("node{}-gpu{}", gpu / g, gpu % g),
            gpu,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Global GPU index (slots `gpu * S .. (gpu + 1) * S`).
    pub fn gpu(&self) -> usize {
        self.gpu
    }
}

/// A decimal index without sign or leading zeros (so each GPU has one name).
fn parse_index(text: &str) -> Option<usize> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 8, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 4, "slots_per_gpu": 2}"#,
        )
        .unwrap()
    }

    #[test]
    fn cluster_names() {
        assert!(ClusterName::parse("prod-eu_1").is_ok());
        for bad in ["", "-x", "Prod", "a/b", "a b", &"x".repeat(64)] {
            assert!(ClusterName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn worker_names_map_to_gpus() {
        let t = topology();
        assert_eq!(WorkerName::parse("node1-gpu2", &t).unwrap().gpu(), 6);
        assert_eq!(WorkerName::of_gpu(6, &t).as_str(), "node1-gpu2");
        for bad in [
            "node1gpu2",
            "node01-gpu2",
            "node-gpu1",
            "node1-gpu+2",
            "gpu1",
        ] {
            assert!(
                matches!(WorkerName::parse(bad, &t), Err(NameError::WorkerSyntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            WorkerName::parse("node2-gpu0", &t),
            Err(NameError::WorkerOutOfRange { .. })
        ));
        assert!(WorkerName::parse("node0-gpu4", &t).is_err());
    }
}
