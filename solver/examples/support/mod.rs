//! Shared by the solver's examples, benches and data-driven tests: the
//! repo's sample data and what DeepSeek's EPLB reached on it, a seeded RNG,
//! batches drawn from a layer's load, and EPLB's plan to route over (the
//! crate's planner does not use it, so the routing figures do not move when
//! the planner changes).

#![allow(dead_code)] // each includer uses part of it

use std::collections::HashMap;
use std::path::PathBuf;

use ballast_solver::eplb::{self, EplbPolicy};
use ballast_solver::{LoadMatrix, Plan, Topology};

/// The repo's `data/` directory.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A file under `data/`, as text.
pub fn read_data(relative: &str) -> String {
    let path = data_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_topology(name: &str) -> Topology {
    Topology::from_json(&read_data(&format!("topologies/{name}.json")))
        .unwrap_or_else(|e| panic!("topologies/{name}.json: {e}"))
}

pub fn read_load(name: &str, topology: &Topology) -> LoadMatrix {
    LoadMatrix::from_json(&read_data(&format!("loads/{name}.json")), topology)
        .unwrap_or_else(|e| panic!("loads/{name}.json: {e}"))
}

/// SplitMix64: small, seedable, good enough for sampling batches.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// `tokens` token→expert assignments drawn independently from the layer's
/// load distribution (a multinomial batch).
pub fn draw_batch(layer_load: &[f64], tokens: usize, rng: &mut Rng) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(layer_load.len());
    let mut sum = 0.0;
    for &l in layer_load {
        sum += l;
        cdf.push(sum);
    }
    let mut counts = vec![0u64; layer_load.len()];
    for _ in 0..tokens {
        let u = rng.next_f64() * sum;
        let e = cdf.partition_point(|&c| c <= u).min(layer_load.len() - 1);
        counts[e] += 1;
    }
    counts
}

/// One row of `eplb_reference.csv`: what EPLB reached on one topology
/// (`config`) and load distribution (`dist`), every numeric column by name.
pub struct ReferenceRow {
    pub config: String,
    pub dist: String,
    pub values: HashMap<String, f64>,
}

/// Every row of `eplb_reference.csv`; a row whose width differs from the
/// header's is a broken file.
pub fn eplb_reference() -> Vec<ReferenceRow> {
    let text = read_data("eplb_reference.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{line}");
            let values = header
                .iter()
                .zip(&fields)
                .skip(2)
                .filter_map(|(h, v)| Some((h.to_string(), v.parse().ok()?)))
                .collect();
            ReferenceRow {
                config: fields[0].to_string(),
                dist: fields[1].to_string(),
                values,
            }
        })
        .collect()
}

/// DeepSeek EPLB's plan ([`ballast_solver::eplb`]): its own rule when
/// `hierarchical` (node-local when the groups divide among the nodes),
/// global balancing otherwise.
pub fn eplb_plan(topology: &Topology, load: &LoadMatrix, hierarchical: bool) -> Plan {
    let policy = if hierarchical {
        EplbPolicy::Auto
    } else {
        EplbPolicy::Global
    };
    eplb::rebalance(topology, load, policy)
        .expect("sample loads fit their topology")
        .plan
}

/// A plan for dynamic redundancy on `hosted` (more slots per GPU than
/// `fixed`): each GPU keeps its slots of `fixed_plan` first, then fills the
/// extra slots with backup replicas, heaviest experts first, each on the
/// GPU of the same node with the least backup load that lacks it. With the
/// budget equal to `fixed`'s slots, activating the first slots is always
/// possible, so dynamic redundancy can only improve on `fixed_plan`.
pub fn with_backups(
    hosted: &Topology,
    fixed: &Topology,
    fixed_plan: &Plan,
    load: &LoadMatrix,
) -> Plan {
    let (s_fixed, s_hosted) = (fixed.slots_per_gpu(), hosted.slots_per_gpu());
    let g_node = hosted.gpus_per_node();
    let rows = fixed_plan
        .phy2log()
        .iter()
        .zip(load.layers())
        .map(|(row, layer)| {
            let mut out = vec![0u32; hosted.num_slots()];
            for node in 0..hosted.num_nodes() {
                let gpus = node * g_node..(node + 1) * g_node;
                let mut hosts: Vec<Vec<u32>> = gpus
                    .clone()
                    .map(|g| row[g * s_fixed..(g + 1) * s_fixed].to_vec())
                    .collect();
                let mut experts: Vec<u32> = hosts.iter().flatten().copied().collect();
                experts.sort_unstable();
                experts.dedup();
                experts.sort_by(|&a, &b| layer[b as usize].total_cmp(&layer[a as usize]));
                let mut backup_load = vec![0.0f64; g_node];
                for &e in experts.iter().cycle().take(experts.len() * s_hosted) {
                    let target = (0..g_node)
                        .filter(|&i| hosts[i].len() < s_hosted && !hosts[i].contains(&e))
                        .min_by(|&a, &b| backup_load[a].total_cmp(&backup_load[b]));
                    if let Some(i) = target {
                        backup_load[i] += layer[e as usize];
                        hosts[i].push(e);
                    }
                }
                for (i, g) in gpus.enumerate() {
                    // Fall back to repeating the GPU's own experts if the node
                    // has too few distinct experts to fill every slot.
                    let own = hosts[i].clone();
                    for (k, slot) in (g * s_hosted..(g + 1) * s_hosted).enumerate() {
                        out[slot] = own.get(k).copied().unwrap_or(own[k % own.len()]);
                    }
                }
            }
            out
        })
        .collect();
    Plan::new(rows, None, hosted).expect("the backup plan is valid")
}

impl Rng {
    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Load and co-visit counts of `tokens` tokens per layer routed like
/// DeepSeek-V3's gate: log-popularity N(0, sigma²) per expert plus
/// N(0, group_sigma²) per group, N(0, 1) noise per token and expert;
/// top-`top_groups` groups by the sum of their two best scores, then the
/// top-`top_k` experts inside them.
pub fn routed_load(
    topology: &Topology,
    tokens: usize,
    sigma: f64,
    group_sigma: f64,
    gate: (usize, usize),
    seed: u64,
) -> LoadMatrix {
    let mut rng = Rng::new(seed);
    let popularity = popularity(topology, sigma, group_sigma, &mut rng);
    route(topology, &popularity, tokens, gate, &mut rng)
}

/// Per layer, each expert's log-popularity: N(0, sigma²) plus its group's
/// N(0, group_sigma²).
pub fn popularity(
    topology: &Topology,
    sigma: f64,
    group_sigma: f64,
    rng: &mut Rng,
) -> Vec<Vec<f64>> {
    let per_group = topology.experts_per_group();
    (0..topology.num_layers())
        .map(|_| {
            let groups: Vec<f64> = (0..topology.num_groups())
                .map(|_| group_sigma * rng.normal())
                .collect();
            (0..topology.num_logical_experts())
                .map(|e| sigma * rng.normal() + groups[e / per_group])
                .collect()
        })
        .collect()
}

/// Routes `tokens` tokens per layer with the given log-popularities (see
/// [`routed_load`]) and counts load and co-visits.
pub fn route(
    topology: &Topology,
    popularity_by_layer: &[Vec<f64>],
    tokens: usize,
    gate: (usize, usize),
    rng: &mut Rng,
) -> LoadMatrix {
    let chosen = route_tokens(topology, popularity_by_layer, tokens, gate, rng);
    load_of_tokens(topology, &chosen)
}

/// Each token's chosen experts, per layer, routed as [`routed_load`] says.
pub fn route_tokens(
    topology: &Topology,
    popularity_by_layer: &[Vec<f64>],
    tokens: usize,
    (top_groups, top_k): (usize, usize),
    rng: &mut Rng,
) -> Vec<Vec<Vec<usize>>> {
    let (e_count, k_count) = (topology.num_logical_experts(), topology.num_groups());
    let per_group = topology.experts_per_group();
    let mut score = vec![0.0; e_count];
    popularity_by_layer
        .iter()
        .map(|popularity| {
            (0..tokens)
                .map(|_| {
                    for e in 0..e_count {
                        score[e] = popularity[e] + rng.normal();
                    }
                    let mut group_score: Vec<(f64, usize)> = (0..k_count)
                        .map(|g| {
                            let mut s: Vec<f64> =
                                score[g * per_group..(g + 1) * per_group].to_vec();
                            s.sort_unstable_by(|a, b| b.total_cmp(a));
                            (s.iter().take(2).sum(), g)
                        })
                        .collect();
                    group_score.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                    let mut candidates: Vec<(f64, usize)> = group_score
                        .iter()
                        .take(top_groups)
                        .flat_map(|&(_, g)| {
                            (g * per_group..(g + 1) * per_group).map(|e| (score[e], e))
                        })
                        .collect();
                    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                    candidates.iter().take(top_k).map(|c| c.1).collect()
                })
                .collect()
        })
        .collect()
}

/// Load and co-visit counts of tokens given by their chosen experts, per
/// layer.
pub fn load_of_tokens(topology: &Topology, chosen: &[Vec<Vec<usize>>]) -> LoadMatrix {
    let (e_count, k_count) = (topology.num_logical_experts(), topology.num_groups());
    let mut load = Vec::new();
    let mut covisit = Vec::new();
    for layer in chosen {
        let mut row = vec![0.0; e_count];
        let mut counts = vec![vec![0.0; k_count]; e_count];
        for token in layer {
            let mut visited = vec![false; k_count];
            for &e in token {
                visited[topology.group_of_expert(e)] = true;
            }
            for &e in token {
                row[e] += 1.0;
                for (g, &v) in visited.iter().enumerate() {
                    if v {
                        counts[e][g] += 1.0;
                    }
                }
            }
        }
        load.push(row);
        covisit.push(counts);
    }
    LoadMatrix::new(load, topology)
        .and_then(|l| l.with_covisit(covisit, topology))
        .expect("simulated counts fit the topology")
}
