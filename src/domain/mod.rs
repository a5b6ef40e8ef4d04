//! Values that can only be built by parsing: names and telemetry windows are
//! checked once at the edge, so nothing downstream re-validates them.

pub mod load_codec;
pub mod names;
pub mod window;

pub use names::{ClusterName, WorkerName};
pub use window::{TelemetryWindow, WindowError, WindowLoad};
