//! One telemetry window per GPU worker of this node: the tokens each GPU's
//! share of the batches routed to each logical expert (SPEC `logical_load`).
//!
//! A node's batch is split into `G` contiguous, near-equal token ranges, one
//! per local GPU, as the data-parallel ranks of a node each own their
//! requests; worker `node{n}-gpu{g}` reports range `g`. The logical load does
//! not depend on the plan, so windows need not be cut at plan changes.

use std::time::SystemTime;

use ballast_protocol::TelemetryWindow;

use crate::moe::gate::TopK;

/// A window ready for delivery; `body` is the JSON the service receives
/// (a serialized [`TelemetryWindow`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWindow {
    pub worker: String,
    pub seq: i64,
    pub body: Vec<u8>,
}

/// Token counts of the current window, `[local gpu][layer][expert]`.
#[derive(Debug, Clone)]
pub struct WindowCounts {
    start: SystemTime,
    counts: Vec<Vec<Vec<u64>>>,
    steps: u64,
}

/// The local GPU that owns token `t` of a batch of `tokens` tokens.
pub fn source_gpu(t: usize, tokens: usize, gpus: usize) -> usize {
    t * gpus / tokens.max(1)
}

impl WindowCounts {
    pub fn new(start: SystemTime, gpus: usize, layers: usize, experts: usize) -> Self {
        WindowCounts {
            start,
            counts: vec![vec![vec![0; experts]; layers]; gpus],
            steps: 0,
        }
    }

    pub fn start(&self) -> SystemTime {
        self.start
    }

    /// Steps counted so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Adds one layer's routing of a batch.
    ///
    /// # Panics
    /// If `layer` or an expert is out of range (the routing comes from the
    /// layer configuration these counts were sized for).
    pub fn add(&mut self, layer: usize, routing: &TopK) {
        let gpus = self.counts.len();
        for t in 0..routing.tokens() {
            let row = &mut self.counts[source_gpu(t, routing.tokens(), gpus)][layer];
            for &e in routing.experts_of(t) {
                row[e as usize] += 1;
            }
        }
    }

    /// Marks the end of a step (all its layers added).
    pub fn end_step(&mut self) {
        self.steps += 1;
    }

    /// Closes the window at `end`: one body per local GPU, numbered from
    /// `seqs` (advanced), named by `workers`. Starts the next window at `end`.
    pub fn close(
        &mut self,
        end: SystemTime,
        workers: &[String],
        seqs: &mut [i64],
    ) -> Vec<PendingWindow> {
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        let end_text = humantime::format_rfc3339_millis(end).to_string();
        let windows = self
            .counts
            .iter_mut()
            .zip(workers)
            .zip(seqs.iter_mut())
            .map(|((counts, worker), seq)| {
                let body = TelemetryWindow::<u64> {
                    worker: worker.clone(),
                    seq: *seq,
                    window_start: Some(start.clone()),
                    window_end: Some(end_text.clone()),
                    logical_load: Some(counts.clone()),
                    slot_load: None,
                    plan_version: None,
                    covisit: None,
                };
                let window = PendingWindow {
                    worker: worker.clone(),
                    seq: *seq,
                    body: body.to_json(),
                };
                *seq += 1;
                counts.iter_mut().for_each(|row| row.fill(0));
                window
            })
            .collect();
        self.start = end;
        self.steps = 0;
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::moe::config::{small_spec, MoeConfig};
    use crate::moe::gate::select;
    use serde_json::Value;
    use std::time::Duration;

    #[test]
    fn tokens_split_into_contiguous_ranges() {
        let owners: Vec<usize> = (0..10).map(|t| source_gpu(t, 10, 4)).collect();
        assert_eq!(owners, vec![0, 0, 0, 1, 1, 2, 2, 2, 3, 3]);
    }

    #[test]
    fn windows_sum_to_the_batch_and_number_their_seqs() {
        let config = MoeConfig::new(small_spec()).unwrap();
        let scores = Matrix::from_fn(30, 16, |t, e| ((t * 7 + e * 3) % 11) as f32 / 11.0);
        let routing = select(&config, &scores, &[0.0; 16]);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut w = WindowCounts::new(start, 2, 2, 16);
        w.add(1, &routing);
        w.end_step();
        let workers = vec!["node1-gpu0".to_string(), "node1-gpu1".to_string()];
        let mut seqs = vec![5, 9];
        let out = w.close(start + Duration::from_secs(1), &workers, &mut seqs);
        assert_eq!(seqs, vec![6, 10]);
        assert_eq!(w.steps(), 0);
        let bodies: Vec<Value> = out
            .iter()
            .map(|p| serde_json::from_slice(&p.body).unwrap())
            .collect();
        assert_eq!(bodies[1]["seq"], 9);
        assert_eq!(bodies[0]["worker"], "node1-gpu0");
        assert_eq!(bodies[0]["window_end"], "2023-11-14T22:13:21.000Z");
        let mut total = vec![0u64; 16];
        for b in &bodies {
            assert_eq!(b["logical_load"][0].as_array().unwrap().len(), 16);
            for (e, v) in b["logical_load"][1].as_array().unwrap().iter().enumerate() {
                total[e] += v.as_u64().unwrap();
            }
        }
        assert_eq!(total, routing.expert_counts());
        let again = w.close(start + Duration::from_secs(2), &workers, &mut seqs);
        let b: Value = serde_json::from_slice(&again[0].body).unwrap();
        assert_eq!(b["logical_load"][1][0], 0);
    }
}
