//! One telemetry window per GPU worker of this node: the tokens each GPU's
//! share of the batches routed to each logical expert (SPEC `logical_load`).
//!
//! A node's batch is split into `G` contiguous, near-equal token ranges, one
//! per local GPU, as the data-parallel ranks of a node each own their
//! requests; worker `node{n}-gpu{g}` reports range `g`. The logical load does
//! not depend on the plan, so windows need not be cut at plan changes.
//!
//! With co-visit reporting on (`--covisit`), each window also carries
//! `covisit[l][e][k]` (SPEC "Co-visit counts"): the tokens that chose expert
//! `e` in layer `l` and some expert of group `k`. Like the load it does not
//! depend on the plan. Its wire cost is `E × K` numbers per layer against the
//! load's `E`: 8× the load row for DeepSeek-V3 (256 experts, 8 groups), about
//! 119k numbers a window for 58 layers.

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
    /// Co-visit counts when reported, per local GPU, flat `[layer][expert][group]`.
    covisit: Option<Covisit>,
    steps: u64,
}

/// Co-visit counts of one window, flat per GPU to keep the hot loop on one
/// contiguous buffer.
#[derive(Debug, Clone)]
struct Covisit {
    groups: usize,
    group_size: usize,
    experts: usize,
    /// `[local gpu][(layer · experts + expert) · groups + group]`.
    counts: Vec<Vec<u64>>,
    /// Scratch: the distinct groups of one token.
    token_groups: Vec<usize>,
}

impl Covisit {
    fn add(&mut self, layer: usize, routing: &TopK) {
        let gpus = self.counts.len();
        for t in 0..routing.tokens() {
            self.token_groups.clear();
            for &e in routing.experts_of(t) {
                let g = e as usize / self.group_size;
                if !self.token_groups.contains(&g) {
                    self.token_groups.push(g);
                }
            }
            let row = &mut self.counts[source_gpu(t, routing.tokens(), gpus)];
            for &e in routing.experts_of(t) {
                let base = (layer * self.experts + e as usize) * self.groups;
                for &g in &self.token_groups {
                    row[base + g] += 1;
                }
            }
        }
    }

    /// GPU `gpu`'s counts as `[layer][expert][group]`.
    fn nested(&self, gpu: usize) -> Vec<Vec<Vec<u64>>> {
        self.counts[gpu]
            .chunks(self.experts * self.groups)
            .map(|layer| layer.chunks(self.groups).map(<[u64]>::to_vec).collect())
            .collect()
    }
}

/// The local GPU that owns token `t` of a batch of `tokens` tokens.
pub fn source_gpu(t: usize, tokens: usize, gpus: usize) -> usize {
    t * gpus / tokens.max(1)
}

/// A routing's co-visit counts, `[expert][group]`, for experts in `groups`
/// equal groups of consecutive indices: `[e][k]` = tokens that chose `e` and
/// some expert of group `k` (the same counting as the windows').
///
/// # Panics
/// If `groups` is zero or does not divide the routing's experts.
pub fn covisit_counts(routing: &TopK, groups: usize) -> Vec<Vec<u64>> {
    let experts = routing.num_experts();
    assert!(groups > 0 && experts.is_multiple_of(groups));
    let mut c = Covisit {
        groups,
        group_size: experts / groups,
        experts,
        counts: vec![vec![0; experts * groups]],
        token_groups: Vec::with_capacity(groups),
    };
    c.add(0, routing);
    c.nested(0).pop().unwrap_or_default()
}

impl WindowCounts {
    pub fn new(start: SystemTime, gpus: usize, layers: usize, experts: usize) -> Self {
        WindowCounts {
            start,
            counts: vec![vec![vec![0; experts]; layers]; gpus],
            covisit: None,
            steps: 0,
        }
    }

    /// Also counts co-visits, for experts in `groups` equal groups of
    /// consecutive indices (as the gate groups them).
    ///
    /// # Panics
    /// If `groups` is zero or does not divide the experts (the layer
    /// configuration checks both).
    pub fn with_covisit(mut self, groups: usize) -> Self {
        let gpus = self.counts.len();
        let layers = self.counts.first().map_or(0, Vec::len);
        let experts = self
            .counts
            .first()
            .and_then(|c| c.first())
            .map_or(0, Vec::len);
        assert!(groups > 0 && experts.is_multiple_of(groups));
        self.covisit = Some(Covisit {
            groups,
            group_size: experts / groups,
            experts,
            counts: vec![vec![0; layers * experts * groups]; gpus],
            token_groups: Vec::with_capacity(groups),
        });
        self
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
        if let Some(covisit) = &mut self.covisit {
            covisit.add(layer, routing);
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
        let covisit = &mut self.covisit;
        let windows = self
            .counts
            .iter_mut()
            .zip(workers)
            .zip(seqs.iter_mut())
            .enumerate()
            .map(|(gpu, ((counts, worker), seq))| {
                let body = TelemetryWindow::<u64> {
                    worker: worker.clone(),
                    seq: *seq,
                    window_start: Some(start.clone()),
                    window_end: Some(end_text.clone()),
                    logical_load: Some(counts.clone()),
                    slot_load: None,
                    plan_version: None,
                    covisit: covisit.as_ref().map(|c| c.nested(gpu)),
                };
                let window = PendingWindow {
                    worker: worker.clone(),
                    seq: *seq,
                    body: body.to_json(),
                };
                *seq += 1;
                counts.iter_mut().for_each(|row| row.fill(0));
                if let Some(c) = covisit.as_mut() {
                    c.counts[gpu].fill(0);
                }
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
    use crate::moe::config::{small_spec, MoeConfig, MoeSpec};
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
        assert!(b.get("covisit").is_none(), "off by default");
    }

    /// Three tokens over 8 experts in 4 groups of 2, top-3, counted by hand.
    #[test]
    fn covisit_counts_match_a_hand_computed_example() {
        let config = MoeConfig::new(MoeSpec {
            hidden: 128,
            expert_width: 128,
            num_experts: 8,
            num_groups: 4,
            topk_groups: 2,
            top_k: 3,
            routed_scaling: 1.0,
        })
        .unwrap();
        // Token 0 picks {0, 1, 4} (groups 0, 2), token 1 {2, 3, 6}
        // (groups 1, 3), token 2 {0, 4, 5} (groups 0, 2).
        let picks = [[0usize, 1, 4], [2, 3, 6], [0, 4, 5]];
        let scores = Matrix::from_fn(3, 8, |t, e| if picks[t].contains(&e) { 0.9 } else { 0.1 });
        let routing = select(&config, &scores, &[0.0; 8]);
        for (t, p) in picks.iter().enumerate() {
            let mut got: Vec<usize> = routing.experts_of(t).iter().map(|&e| e as usize).collect();
            got.sort();
            assert_eq!(&got, p);
        }
        let start = SystemTime::UNIX_EPOCH;
        // One GPU, so all three tokens land in one window.
        let mut w = WindowCounts::new(start, 1, 1, 8).with_covisit(4);
        w.add(0, &routing);
        w.end_step();
        let out = w.close(start, &["n0-g0".to_string()], &mut [0]);
        let body: TelemetryWindow<u64> = serde_json::from_slice(&out[0].body).unwrap();
        let covisit = body.covisit.unwrap();
        #[rustfmt::skip]
        let expected: Vec<Vec<u64>> = vec![
            // groups:  0  1  2  3
            /* e0 */ vec![2, 0, 2, 0], // tokens 0, 2: both also in group 2
            /* e1 */ vec![1, 0, 1, 0], // token 0
            /* e2 */ vec![0, 1, 0, 1], // token 1
            /* e3 */ vec![0, 1, 0, 1], // token 1
            /* e4 */ vec![2, 0, 2, 0], // tokens 0, 2
            /* e5 */ vec![1, 0, 1, 0], // token 2
            /* e6 */ vec![0, 1, 0, 1], // token 1
            /* e7 */ vec![0, 0, 0, 0],
        ];
        assert_eq!(covisit, vec![expected.clone()]);
        assert_eq!(covisit_counts(&routing, 4), expected);
        // covisit[l][e][group(e)] is the load.
        let load = &body.logical_load.unwrap()[0];
        for e in 0..8 {
            assert_eq!(expected[e][e / 2], load[e]);
        }
        // The next window starts from zero.
        let again = w.close(start, &["n0-g0".to_string()], &mut [1]);
        let body: TelemetryWindow<u64> = serde_json::from_slice(&again[0].body).unwrap();
        assert!(body.covisit.unwrap()[0].iter().flatten().all(|&c| c == 0));
    }

    /// Per-GPU covisit windows add up to the whole batch's counts, and
    /// `covisit[e][group(e)]` equals the load on every GPU.
    #[test]
    fn covisit_windows_split_by_gpu_and_contain_the_load() {
        let config = MoeConfig::new(small_spec()).unwrap();
        let scores = Matrix::from_fn(40, 16, |t, e| ((t * 5 + e * 7) % 13) as f32 / 13.0);
        let routing = select(&config, &scores, &[0.0; 16]);
        let groups = config.num_groups();
        let start = SystemTime::UNIX_EPOCH;
        let mut w = WindowCounts::new(start, 2, 1, 16).with_covisit(groups);
        w.add(0, &routing);
        let workers = vec!["a".to_string(), "b".to_string()];
        let out = w.close(start, &workers, &mut [0, 0]);
        let mut total = vec![vec![0u64; groups]; 16];
        for window in &out {
            let body: TelemetryWindow<u64> = serde_json::from_slice(&window.body).unwrap();
            let (load, covisit) = (body.logical_load.unwrap(), body.covisit.unwrap());
            for e in 0..16 {
                assert_eq!(covisit[0][e][e / config.group_size()], load[0][e]);
                for k in 0..groups {
                    assert!(covisit[0][e][k] <= load[0][e]);
                    total[e][k] += covisit[0][e][k];
                }
            }
        }
        for (e, row) in total.iter().enumerate() {
            for (k, &c) in row.iter().enumerate() {
                let direct = (0..40)
                    .filter(|&t| {
                        let ex = routing.experts_of(t);
                        ex.contains(&(e as u32))
                            && ex.iter().any(|&x| x as usize / config.group_size() == k)
                    })
                    .count() as u64;
                assert_eq!(c, direct, "expert {e} group {k}");
            }
        }
    }
}
