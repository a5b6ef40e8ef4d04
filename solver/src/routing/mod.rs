//! Exact routing of a batch's tokens among an expert's replicas.
//!
//! Before each MoE layer's all-to-all, every token bound for a logical expert
//! must pick one of the expert's physical replicas. Engines pick at random
//! or from a static table; DeepSeek solves an LP per batch. This module
//! solves the whole-token problem exactly, in microseconds on one core:
//!
//! - [`Router::route`]: given one plan layer and per-expert token counts,
//!   an integral assignment of tokens to slots that minimizes the largest
//!   GPU load (tokens / `gpu_speed`), with a certificate of optimality.
//! - [`Router::route_from_sources`]: the same from per-source-GPU counts,
//!   optionally keeping tokens on their source's node ([`Locality`]).
//! - [`Router::route_with_budget`]: dynamic redundancy — choose which
//!   replicas are active (at most `A` per GPU) and route, jointly; a
//!   branch and bound over sparse optimal routings, with an exact MILP
//!   (HiGHS, time-capped) for what it leaves open, that reports whether it
//!   proved optimality.
//! - [`score_optimal`]: a plan's figures with each layer's (real-valued)
//!   load routed optimally.
//!
//! ```
//! use ballast_solver::{Plan, Topology};
//! use ballast_solver::routing::{Router, Routing};
//!
//! let topology = Topology::from_json(r#"{"num_layers": 1, "num_logical_experts": 3,
//!     "num_groups": 1, "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}"#)?;
//! // GPU0 holds e0 and e1, GPU1 holds e0 and e2.
//! let plan = Plan::from_json(r#"{"phy2log": [[0, 1, 0, 2]]}"#, &topology)?;
//! let mut router = Router::new(&topology, &plan, 0).expect("layer 0 exists");
//! let mut routing = Routing::new();
//! router.route(&[10, 1, 5], &mut routing).expect("one count per expert");
//! assert_eq!(routing.gpu_tokens(), &[8, 8]);
//! assert_eq!(routing.max_load(), 8.0);
//! # Ok::<(), ballast_solver::ParseError>(())
//! ```
//!
//! ## Why the answer is optimal
//! For a set `B` of GPUs, the tokens of experts with every replica inside
//! `B` must be served by `B`; so no routing beats the smallest load
//! threshold at which `B` can hold them (with whole tokens, one of the
//! values `k / gpu_speed`). Conversely a threshold is achievable exactly
//! when a max-flow from experts to GPUs, capped at the threshold, carries
//! every token (Hall's theorem). The router raises the threshold from the
//! bounds of single GPUs and whole components to the bound of the set on
//! the source side of each minimum cut until the flow carries everything;
//! the last set is returned as [`Routing::bottleneck_gpus`], a certificate
//! anyone can check. Experts with one GPU are fixed load, connected GPUs
//! are solved per component, and a component with one multi-GPU expert
//! (every component when GPUs hold one slot) in closed form.

mod basis;
mod dynamic;
mod error;
mod exact;
pub(crate) mod flow;
mod fractional;
mod graph;
mod result;
mod router;
mod solve;
mod threshold;
mod whole;

pub use dynamic::{BudgetRouting, SearchLimits};
pub use error::RoutingError;
pub use fractional::score_optimal;
pub use graph::Locality;
pub use result::{Routing, SourceFlow};
pub use router::{Router, MAX_BATCH_TOKENS};
