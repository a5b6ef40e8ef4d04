//! # ballast-replay
//!
//! Replays historical load through planning policies and reports what each
//! would have cost a cluster (SPEC "experienced imbalance"): the plan in
//! force during window `i + 1` is made from windows `<= i` only and scored
//! on window `i + 1`, beside that window's own bound (the oracle), the slots
//! each re-plan re-loads and the time planning took.
//!
//! - [`spec`]: the policies and intervals to replay, parsed;
//! - [`run`]: one policy at one interval, stepping through windows;
//! - [`driver`]: feeds windows to every run, in parallel, in bounded memory;
//! - [`equal_budget`]: EPLB's imbalance at another run's re-load rate;
//! - [`record`]: per-window records, the summary and the report's series;
//! - [`synth`]: generated traces with drift and bursts (tuning, benchmarks).
//!
//! It reads no files: the caller parses windows and writes results.

pub mod driver;
pub mod equal_budget;
pub mod record;
pub mod report;
pub mod run;
pub mod spec;
pub mod synth;

pub use driver::{Replay, ReplayError};
pub use record::{
    Hotspot, ReportData, RunSummary, Series, SeriesPoint, Summary, TrafficRange, WindowRecord,
};
pub use run::{Context, PlanFailure, Run};
pub use spec::{Interval, Planner, PolicySpec, SpecError};
