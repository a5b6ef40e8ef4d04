//! # ballast-solver
//!
//! Placement of Mixture-of-Experts experts onto GPUs: how many replicas each
//! logical expert gets, which slot of which GPU holds each replica, and how to
//! judge the result. Pure computation: no I/O, no async, no panics on input —
//! all input is parsed once into [`Topology`], [`LoadMatrix`] and [`Plan`],
//! whose invariants the rest of the crate relies on.
//!
//! ```
//! use ballast_solver::{LoadMatrix, Plan, Topology, score};
//!
//! let topology = Topology::from_json(r#"{"num_layers": 1, "num_logical_experts": 4,
//!     "num_groups": 2, "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#)?;
//! let load = LoadMatrix::from_json(r#"{"load": [[40, 10, 10, 20]]}"#, &topology)?;
//! let plan = Plan::from_json(r#"{"phy2log": [[0, 1, 2, 0, 3, 3]]}"#, &topology)?;
//! let s = score::score(&topology, &load, &plan);
//! assert!(s.model_imbalance >= 1.0);
//! # Ok::<(), ballast_solver::ParseError>(())
//! ```

pub mod bound;
pub mod covisit;
pub mod eplb;
pub mod error;
pub mod export;
mod knapsack;
pub mod load;
pub mod migration;
mod milp;
pub mod plan;
pub mod planner;
pub mod routing;
pub mod score;
mod tolerance;
pub mod topology;

pub use bound::{model_bounds, model_bounds_down, LayerBounds, ModelBounds};
pub use error::ParseError;
pub use load::LoadMatrix;
pub use plan::Plan;
pub use planner::{solve, PlanError, PlanOptions, PlanOutcome, PlanStats, Policy, Split};
pub use topology::{ModelLayout, Topology, TopologySpec};
