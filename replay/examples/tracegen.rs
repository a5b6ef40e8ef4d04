//! Writes a generated load trace (JSON Lines, SPEC `trace.jsonl`) for a
//! topology, to tune policies on loads with other drift and burst rates than
//! the sample trace's.
//!
//! ```text
//! cargo run --release -p ballast-replay --example tracegen -- \
//!     TOPOLOGY WINDOWS [drift=0.05] [burst_rate=0.12] [burst_factor=3] [seed=1] > trace.jsonl
//! ```

use std::io::{BufWriter, Write};

use ballast_replay::synth::{Generator, TraceShape};
use ballast_solver::Topology;

#[derive(serde::Serialize)]
struct Line {
    window: u64,
    load: Vec<Vec<u64>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [topology, windows, settings @ ..] = args.as_slice() else {
        return Err("usage: tracegen TOPOLOGY WINDOWS [key=value ...]".into());
    };
    let topology = Topology::from_json(&std::fs::read_to_string(topology)?)?;
    let windows: u64 = windows.parse()?;
    let mut shape = TraceShape::default();
    for setting in settings {
        let (key, value) = setting.split_once('=').ok_or("settings are key=value")?;
        let value: f64 = value.parse()?;
        match key {
            "drift" => shape.drift = value,
            "burst_rate" => shape.burst_rate = value,
            "burst_factor" => shape.burst_factor = value,
            "expert_sigma" => shape.expert_sigma = value,
            "group_sigma" => shape.group_sigma = value,
            "assignments" => shape.assignments_per_layer = value,
            "seed" => shape.seed = value as u64,
            other => return Err(format!("unknown setting {other}").into()),
        }
    }
    let mut generator = Generator::new(&topology, shape);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for window in 0..windows {
        let load = generator.next_window();
        // Counts are whole numbers; write them so.
        let load = load
            .layers()
            .map(|row| row.iter().map(|&v| v as u64).collect())
            .collect();
        serde_json::to_writer(&mut out, &Line { window, load })?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
