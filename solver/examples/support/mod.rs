//! Shared by the solver's examples, benches and data-driven tests: the
//! repo's sample data, a seeded RNG, batches drawn from a layer's load, and
//! an EPLB-style plan to route over (independent of the crate's planner, so
//! the routing figures do not move when the planner changes).

#![allow(dead_code)] // each includer uses part of it

use std::path::PathBuf;

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

/// DeepSeek EPLB's recipe, simplified: node-local when the groups divide
/// among the nodes (whole groups to nodes, heaviest first, to the lightest
/// node with room), then per node (or over the whole cluster) replicas one
/// at a time to the expert with the largest load per replica, then replicas
/// heaviest first onto the lightest GPU with a free slot.
pub fn eplb_like_plan(topology: &Topology, load: &LoadMatrix, hierarchical: bool) -> Plan {
    let rows = load
        .layers()
        .map(|layer| eplb_like_layer(topology, layer, hierarchical))
        .collect();
    Plan::new(rows, None, topology).expect("the EPLB-like plan is valid")
}

fn eplb_like_layer(topology: &Topology, layer: &[f64], hierarchical: bool) -> Vec<u32> {
    let experts = topology.num_logical_experts();
    let (parts, gpus_per_part) = if hierarchical {
        (topology.num_nodes(), topology.gpus_per_node())
    } else {
        (1, topology.num_gpus())
    };
    // Experts of each part (node, or the whole cluster).
    let mut part_experts: Vec<Vec<usize>> = vec![Vec::new(); parts];
    if hierarchical {
        let per_group = topology.experts_per_group();
        let groups_per_node = topology.num_groups() / parts;
        let mut groups: Vec<(f64, usize)> = (0..topology.num_groups())
            .map(|g| (layer[g * per_group..(g + 1) * per_group].iter().sum(), g))
            .collect();
        groups.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut node_load = vec![0.0f64; parts];
        let mut node_groups = vec![0; parts];
        for (l, g) in groups {
            let node = (0..parts)
                .filter(|&n| node_groups[n] < groups_per_node)
                .min_by(|&a, &b| node_load[a].total_cmp(&node_load[b]))
                .expect("room for every group");
            node_load[node] += l;
            node_groups[node] += 1;
            part_experts[node].extend(g * per_group..(g + 1) * per_group);
        }
    } else {
        part_experts[0] = (0..experts).collect();
    }
    let s = topology.slots_per_gpu();
    let mut row = vec![0u32; topology.num_slots()];
    for (part, members) in part_experts.iter().enumerate() {
        let slots = gpus_per_part * s;
        let mut count = vec![1usize; members.len()];
        for _ in members.len()..slots {
            let i = (0..members.len())
                .max_by(|&a, &b| {
                    (layer[members[a]] / count[a] as f64)
                        .total_cmp(&(layer[members[b]] / count[b] as f64))
                })
                .expect("a part has experts");
            count[i] += 1;
        }
        let mut replicas: Vec<(f64, usize)> = members
            .iter()
            .zip(&count)
            .flat_map(|(&e, &c)| std::iter::repeat_n((layer[e] / c as f64, e), c))
            .collect();
        replicas.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut gpu_load = vec![0.0f64; gpus_per_part];
        let mut gpu_used = vec![0usize; gpus_per_part];
        for (l, e) in replicas {
            let g = (0..gpus_per_part)
                .filter(|&g| gpu_used[g] < s)
                .min_by(|&a, &b| gpu_load[a].total_cmp(&gpu_load[b]))
                .expect("a free slot");
            let gpu = part * gpus_per_part + g;
            row[gpu * s + gpu_used[g]] = e as u32;
            gpu_used[g] += 1;
            gpu_load[g] += l;
        }
    }
    row
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
