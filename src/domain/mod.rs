//! Values that can only be built by parsing: names, topologies and telemetry windows are
//! checked once at the edge, so nothing downstream re-validates them.

pub mod load_codec;
pub mod names;
pub mod topology;
pub mod window;

pub use names::{ClusterName, WorkerName};
pub use topology::{parse_topology, TopologyError};
pub use window::{TelemetryWindow, WindowError, WindowLoad};
