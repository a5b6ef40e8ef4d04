//! # ballast
//!
//! The `ballast` program over [`ballast_solver`]:
//! - [`cli`]: the one-shot commands (`solve`, `score`, `bound`), one module each;
//! - `serve`: the long-running placement service. Workers send load windows,
//!   summed into per-cluster windows as they are accepted; the planner loop
//!   runs the planning policy ([`ballast_policy`]) and publishes the plans it
//!   decides are worth their moves, and serves them (ETag, long-poll, SSE,
//!   exports). Every body on the wire is a [`ballast_protocol`] type.
//!
//! A request's path: [`api`] (HTTP, auth, errors) → [`domain`] (parsing and
//! validation) → [`store`] (SQLite or PostgreSQL through one code path) →
//! [`plan_cache`] (in-memory latest plans and their watchers). The planner
//! lives in [`planner_loop`]; [`service`] wires everything together from
//! [`config`]; [`time`] owns clocks and the load-window grid. [`history`]
//! reads a cluster's stored windows back (from the database or from a
//! service) for a replay.

pub mod api;
pub mod args;
pub mod cli;
pub mod config;
pub mod domain;
pub mod history;
pub mod ingest_queue;
pub mod metrics;
pub mod plan_cache;
pub mod planner_loop;
pub mod service;
pub mod state;
pub mod store;
pub mod time;

pub use service::{serve, Application, ServeArgs, ServeConfig};
