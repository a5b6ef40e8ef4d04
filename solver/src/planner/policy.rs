//! What a planning run is asked to follow: the policy (SPEC `--policy`), the
//! placement rule it implies, and how tokens split among replicas
//! (`--split`). Each name is written once, in [`Policy::name`] and
//! [`Split::name`]: parsing, display and the plan file's `stats` all use it.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Which planner to run (SPEC `--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Greedy; hierarchical when `K % N == 0`, else global.
    Greedy,
    GreedyHierarchical,
    GreedyGlobal,
    /// Searches and exact models on decomposed subproblems, warm-started
    /// from greedy, with proven gaps; migration-aware with a previous plan.
    Optimal,
    OptimalHierarchical,
    OptimalGlobal,
    /// Node-local groups plus co-visit replicas: redundant slots may hold
    /// experts of other nodes for tokens that already visit the slot's node
    /// ([`crate::covisit`]); needs co-visit counts in the load.
    OptimalCovisit,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::Greedy,
        Policy::GreedyHierarchical,
        Policy::GreedyGlobal,
        Policy::Optimal,
        Policy::OptimalHierarchical,
        Policy::OptimalGlobal,
        Policy::OptimalCovisit,
    ];

    /// The name on the command line, in the service's settings and in
    /// `stats.policy`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Greedy => "greedy",
            Policy::GreedyHierarchical => "greedy-hierarchical",
            Policy::GreedyGlobal => "greedy-global",
            Policy::Optimal => "optimal",
            Policy::OptimalHierarchical => "optimal-hierarchical",
            Policy::OptimalGlobal => "optimal-global",
            Policy::OptimalCovisit => "optimal-covisit",
        }
    }

    pub fn parse(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True for the optimal family (the only one that splits by weight).
    pub(crate) fn is_optimal(self) -> bool {
        matches!(
            self,
            Policy::Optimal | Policy::OptimalHierarchical | Policy::OptimalGlobal
        )
    }
}

/// The placement rule a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every replica of a group's experts on the group's one node.
    Hierarchical,
    /// Groups on their one node; co-visit replicas elsewhere, each scoped to
    /// the tokens that already visit its node.
    Covisit,
    /// Replicas anywhere.
    Global,
}

/// How an expert's tokens are split among its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// Evenly (what engines do today); the plan has no `replica_share`.
    #[default]
    Even,
    /// The plan carries `replica_share` chosen by the planner.
    Weighted,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Even, Split::Weighted];

    /// The name on the command line, in the service's settings and in
    /// `stats.split`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Even => "even",
            Split::Weighted => "weighted",
        }
    }

    pub fn parse(name: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A policy or split name that is none of the accepted ones. The messages
/// read after the option's flag (`--policy `x` is not a known policy`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnknownName {
    #[error("`{0}` is not a known policy")]
    Policy(String),
    #[error("`{0}` must be `even` or `weighted`")]
    Split(String),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Policy::parse(name).ok_or_else(|| UnknownName::Policy(name.to_owned()))
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(D::Error::custom)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Split::parse(name).ok_or_else(|| UnknownName::Split(name.to_owned()))
    }
}

impl Serialize for Split {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Split {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse_display_and_json() {
        for policy in Policy::ALL {
            assert_eq!(policy.name().parse(), Ok(policy));
            assert_eq!(policy.to_string(), policy.name());
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{}\"", policy.name()));
            assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        }
        for split in Split::ALL {
            assert_eq!(split.name().parse(), Ok(split));
            assert_eq!(split.to_string(), split.name());
            let json = serde_json::to_string(&split).unwrap();
            assert_eq!(json, format!("\"{}\"", split.name()));
            assert_eq!(serde_json::from_str::<Split>(&json).unwrap(), split);
        }
        assert_eq!(
            serde_json::to_string(&Policy::OptimalHierarchical).unwrap(),
            "\"optimal-hierarchical\""
        );
        assert_eq!(
            serde_json::to_string(&Split::Weighted).unwrap(),
            "\"weighted\""
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_flag_messages() {
        let err = "eplb".parse::<Policy>().unwrap_err();
        assert_eq!(
            format!("--policy {err}"),
            "--policy `eplb` is not a known policy"
        );
        let err = "uneven".parse::<Split>().unwrap_err();
        assert_eq!(
            format!("--split {err}"),
            "--split `uneven` must be `even` or `weighted`"
        );
        assert!(serde_json::from_str::<Policy>("\"eplb\"").is_err());
        assert!(serde_json::from_str::<Split>("\"Even\"").is_err());
    }
}
