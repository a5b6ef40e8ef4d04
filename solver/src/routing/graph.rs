//! One plan layer as a bipartite graph between *demands* and GPUs.
//!
//! A demand is a pool of tokens that may go to one fixed set of replicas:
//! a logical expert (any replica will do), or an (expert, node) pair when
//! tokens must stay on their source's node. Replicas of one demand on the
//! same GPU are interchangeable for the objective, so the graph has one
//! edge per (demand, GPU) and keeps that GPU's slots of the demand beside it.

use crate::topology::Topology;

/// Which replicas a token may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locality {
    /// Any replica of the token's expert, on any node.
    #[default]
    Any,
    /// Only replicas on the node of the GPU the token comes from. For a
    /// node-local plan this is the second hop of a DeepSeek-style dispatch:
    /// tokens arrive on the group's node and are forwarded over NVLink.
    SameNode,
}

/// Marks "no demand" in the input maps.
pub(crate) const NO_DEMAND: u32 = u32::MAX;

/// The demand–GPU graph of one layer. Built once per plan layer; the
/// per-batch solvers only read it.
#[derive(Debug, Clone)]
pub(crate) struct LayerGraph {
    pub(crate) speeds: Vec<f64>,
    /// The common speed when all GPUs have one: the largest load is then
    /// the largest token count divided once (division by a positive
    /// constant is monotone, so this is exact).
    pub(crate) uniform_speed: Option<f64>,
    pub(crate) gpus_per_node: usize,
    pub(crate) num_experts: usize,
    pub(crate) num_slots: usize,
    pub(crate) locality: Locality,
    /// Edges of demand `d`: `edge_start[d]..edge_start[d + 1]`.
    pub(crate) edge_start: Vec<u32>,
    /// The GPU of each edge (ascending within a demand).
    pub(crate) edge_gpu: Vec<u32>,
    /// Slots of edge `i`: `slots[slot_start[i]..slot_start[i + 1]]`.
    pub(crate) slot_start: Vec<u32>,
    pub(crate) slots: Vec<u32>,
    /// The logical expert of each demand.
    pub(crate) demand_expert: Vec<u32>,
    /// The demand of expert `e`'s tokens when the source does not matter
    /// (`NO_DEMAND` under [`Locality::SameNode`] if `e` spans nodes).
    pub(crate) expert_demand: Vec<u32>,
    /// `node * E + e` → demand of tokens from `node` for expert `e`
    /// (`NO_DEMAND` when `node` holds no replica of `e`); only for `SameNode`.
    pub(crate) node_demand: Vec<u32>,
}

impl LayerGraph {
    /// Builds the graph of one `phy2log` row. The row must come from a
    /// [`Plan`](crate::Plan) parsed against `topology` (length `N*G*S`,
    /// experts in `0..E`, every expert placed).
    pub(crate) fn new(topology: &Topology, phy2log: &[u32], locality: Locality) -> Self {
        let num_experts = topology.num_logical_experts();
        let slots_per_gpu = topology.slots_per_gpu();
        let slots_per_node = topology.slots_per_node();

        // Slots grouped by expert, ascending within each expert (counting sort),
        // so that the GPUs and nodes of one expert come out in order.
        let mut start = vec![0u32; num_experts + 1];
        for &e in phy2log {
            start[e as usize + 1] += 1;
        }
        for e in 0..num_experts {
            start[e + 1] += start[e];
        }
        let mut fill = start.clone();
        let mut by_expert = vec![0u32; phy2log.len()];
        for (slot, &e) in phy2log.iter().enumerate() {
            by_expert[fill[e as usize] as usize] = slot as u32;
            fill[e as usize] += 1;
        }

        let mut graph = LayerGraph {
            speeds: topology.gpu_speed().to_vec(),
            uniform_speed: topology
                .has_uniform_speed()
                .then(|| topology.gpu_speed()[0]),
            gpus_per_node: topology.gpus_per_node(),
            num_experts,
            num_slots: phy2log.len(),
            locality,
            edge_start: Vec::new(),
            edge_gpu: Vec::new(),
            slot_start: Vec::new(),
            slots: Vec::with_capacity(phy2log.len()),
            demand_expert: Vec::new(),
            expert_demand: vec![NO_DEMAND; num_experts],
            node_demand: match locality {
                Locality::Any => Vec::new(),
                Locality::SameNode => vec![NO_DEMAND; topology.num_nodes() * num_experts],
            },
        };
        for e in 0..num_experts {
            let mut demands_of_expert = 0;
            let mut current_node = usize::MAX;
            let mut current_gpu = usize::MAX;
            for &slot in &by_expert[start[e] as usize..start[e + 1] as usize] {
                let gpu = slot as usize / slots_per_gpu;
                let node = slot as usize / slots_per_node;
                let opens_demand = demands_of_expert == 0
                    || (locality == Locality::SameNode && node != current_node);
                if opens_demand {
                    let d = graph.demand_expert.len() as u32;
                    if demands_of_expert == 0 {
                        graph.expert_demand[e] = d;
                    } else {
                        // Under SameNode an expert on several nodes has no
                        // single demand for source-less counts.
                        graph.expert_demand[e] = NO_DEMAND;
                    }
                    if locality == Locality::SameNode {
                        graph.node_demand[node * num_experts + e] = d;
                    }
                    demands_of_expert += 1;
                    graph.demand_expert.push(e as u32);
                    graph.edge_start.push(graph.edge_gpu.len() as u32);
                    current_node = node;
                    current_gpu = usize::MAX;
                }
                if gpu != current_gpu {
                    graph.slot_start.push(graph.slots.len() as u32);
                    graph.edge_gpu.push(gpu as u32);
                    current_gpu = gpu;
                }
                graph.slots.push(slot);
            }
        }
        graph.edge_start.push(graph.edge_gpu.len() as u32);
        graph.slot_start.push(graph.slots.len() as u32);
        graph
    }

    pub(crate) fn num_gpus(&self) -> usize {
        self.speeds.len()
    }

    pub(crate) fn num_demands(&self) -> usize {
        self.demand_expert.len()
    }

    pub(crate) fn num_edges(&self) -> usize {
        self.edge_gpu.len()
    }

    pub(crate) fn edges(&self, demand: usize) -> std::ops::Range<usize> {
        self.edge_start[demand] as usize..self.edge_start[demand + 1] as usize
    }

    pub(crate) fn edge_slots(&self, edge: usize) -> &[u32] {
        &self.slots[self.slot_start[edge] as usize..self.slot_start[edge + 1] as usize]
    }

    pub(crate) fn node_of_gpu(&self, gpu: usize) -> usize {
        gpu / self.gpus_per_node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        // 2 nodes x 2 GPUs x 2 slots, 4 experts.
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 2}"#,
        )
        .unwrap()
    }

    /// Every slot appears under exactly one edge, on its own GPU, of a
    /// demand of its own expert.
    fn check_partition(g: &LayerGraph, phy2log: &[u32]) {
        let mut seen = vec![0; phy2log.len()];
        for d in 0..g.num_demands() {
            for edge in g.edges(d) {
                let slots = g.edge_slots(edge);
                assert!(!slots.is_empty());
                for &s in slots {
                    seen[s as usize] += 1;
                    assert_eq!(s as usize / 2, g.edge_gpu[edge] as usize);
                    assert_eq!(phy2log[s as usize], g.demand_expert[d]);
                }
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn any_locality_has_one_demand_per_expert() {
        // GPU0: e0 e0 | GPU1: e1 e0 | GPU2: e2 e3 | GPU3: e3 e1
        let row = [0, 0, 1, 0, 2, 3, 3, 1];
        let g = LayerGraph::new(&topo(), &row, Locality::Any);
        check_partition(&g, &row);
        assert_eq!(g.num_demands(), 4);
        assert_eq!(g.edge_gpu[g.edges(0)].to_vec(), vec![0, 1]);
        assert_eq!(g.edge_slots(g.edges(0).start), &[0, 1]);
        assert_eq!(g.edge_gpu[g.edges(1)].to_vec(), vec![1, 3]);
        assert_eq!(g.edge_gpu[g.edges(3)].to_vec(), vec![2, 3]);
        assert_eq!(g.expert_demand, vec![0, 1, 2, 3]);
    }

    #[test]
    fn same_node_splits_experts_per_node() {
        let row = [0, 0, 1, 0, 2, 3, 3, 1];
        let g = LayerGraph::new(&topo(), &row, Locality::SameNode);
        check_partition(&g, &row);
        // e0 (node 0), e1 (node 0), e1 (node 1), e2 (node 1), e3 (node 1)
        assert_eq!(g.demand_expert, vec![0, 1, 1, 2, 3]);
        assert_eq!(g.expert_demand, vec![0, NO_DEMAND, 3, 4]);
        assert_eq!(g.node_demand[4 + 1], 2);
        assert_eq!(g.node_demand[1], 1);
        assert_eq!(g.node_demand[4], NO_DEMAND);
        assert_eq!(g.edge_gpu[g.edges(2)].to_vec(), vec![3]);
        assert_eq!(g.edge_gpu[g.edges(4)].to_vec(), vec![2, 3]);
    }
}
