//! [`Router`]: exact per-batch routing for one plan layer, allocation-free
//! after warm-up.

use super::dynamic::{self, BudgetRouting, SearchLimits};
use super::error::RoutingError;
use super::graph::{LayerGraph, Locality, NO_DEMAND};
use super::result::{Routing, SourceFlow};
use super::whole::WholeTokens;
use crate::plan::Plan;
use crate::topology::Topology;

/// Largest batch accepted: below 2^52 every token count and load is exact in `f64`.
pub const MAX_BATCH_TOKENS: u64 = 1 << 52;

/// Routes batches of one plan layer. Build it once per plan (it holds the
/// layer's replica graph and all scratch space), then call
/// [`route`](Router::route) per batch.
#[derive(Debug)]
pub struct Router {
    graph: LayerGraph,
    solver: WholeTokens,
    demand_tokens: Vec<u64>,
    edge_flow: Vec<u64>,
}

impl Router {
    /// A router for layer `layer` of `plan` where tokens may use any replica.
    pub fn new(topology: &Topology, plan: &Plan, layer: usize) -> Result<Self, RoutingError> {
        Self::with_locality(topology, plan, layer, Locality::Any)
    }

    /// A router for layer `layer` of `plan` under a locality rule.
    pub fn with_locality(
        topology: &Topology,
        plan: &Plan,
        layer: usize,
        locality: Locality,
    ) -> Result<Self, RoutingError> {
        let row = plan.phy2log().get(layer).ok_or(RoutingError::NoSuchLayer {
            layer,
            layers: plan.num_layers(),
        })?;
        let experts = topology.num_logical_experts();
        if row.len() != topology.num_slots() || row.iter().any(|&e| e as usize >= experts) {
            return Err(RoutingError::PlanMismatch { layer });
        }
        let graph = LayerGraph::new(topology, row, locality);
        Ok(Router {
            demand_tokens: vec![0; graph.num_demands()],
            edge_flow: vec![0; graph.num_edges()],
            solver: WholeTokens::for_graph(&graph),
            graph,
        })
    }

    pub fn num_experts(&self) -> usize {
        self.graph.num_experts
    }

    pub fn num_gpus(&self) -> usize {
        self.graph.num_gpus()
    }

    pub fn num_slots(&self) -> usize {
        self.graph.num_slots
    }

    pub fn locality(&self) -> Locality {
        self.graph.locality
    }

    /// Routes `tokens[e]` tokens of each logical expert optimally.
    ///
    /// Under [`Locality::SameNode`] every expert with tokens must have all
    /// its replicas on one node (true for node-local plans); otherwise use
    /// [`route_from_sources`](Self::route_from_sources).
    pub fn route(&mut self, tokens: &[u64], out: &mut Routing) -> Result<(), RoutingError> {
        self.load_expert_tokens(tokens)?;
        self.solve(out);
        Ok(())
    }

    /// Dynamic redundancy: picks at most `budget` active replicas per GPU
    /// (every expert with tokens keeps one) and routes to them, minimizing
    /// the largest GPU load over both choices. Exact when the search ends
    /// within `limits`; see [`BudgetRouting::is_proven_optimal`].
    ///
    /// `warm_start` (one flag per slot, e.g. the previous batch's
    /// [`BudgetRouting::active`]) is a known activation to start from; the
    /// result is never worse than it when it respects the budget.
    pub fn route_with_budget(
        &mut self,
        tokens: &[u64],
        budget: usize,
        warm_start: Option<&[bool]>,
        limits: SearchLimits,
    ) -> Result<BudgetRouting, RoutingError> {
        self.load_expert_tokens(tokens)?;
        let start = match warm_start {
            None => None,
            Some(slots) => {
                check_len(slots.len(), self.graph.num_slots, "one flag per slot")?;
                let graph = &self.graph;
                Some(
                    (0..graph.num_edges())
                        .map(|e| graph.edge_slots(e).iter().any(|&p| slots[p as usize]))
                        .collect::<Vec<bool>>(),
                )
            }
        };
        let outcome = dynamic::search(
            &self.graph,
            &mut self.solver,
            &self.demand_tokens,
            budget,
            start.as_deref(),
            limits,
        )?;
        let mut routing = Routing::new();
        let mut active = Vec::new();
        dynamic::route_active(
            &self.graph,
            &mut self.solver,
            &self.demand_tokens,
            &outcome.active,
            &mut self.edge_flow,
            &mut routing,
            &mut active,
        );
        Ok(BudgetRouting {
            routing,
            active,
            lower_bound: outcome.lower_bound,
            nodes: outcome.nodes,
        })
    }

    /// Checks per-expert counts and sums them per demand.
    fn load_expert_tokens(&mut self, tokens: &[u64]) -> Result<(), RoutingError> {
        check_len(
            tokens.len(),
            self.graph.num_experts,
            "one count per logical expert",
        )?;
        check_total(tokens)?;
        self.demand_tokens.iter_mut().for_each(|t| *t = 0);
        for (e, &t) in tokens.iter().enumerate() {
            if t == 0 {
                continue;
            }
            let d = self.graph.expert_demand[e];
            if d == NO_DEMAND {
                return Err(RoutingError::AmbiguousNode { expert: e });
            }
            self.demand_tokens[d as usize] += t;
        }
        Ok(())
    }

    /// Routes per-source counts: `tokens[src * E + e]` tokens on source GPU
    /// `src` for expert `e`. Under [`Locality::SameNode`] they may only use
    /// replicas on `src`'s node. Fills [`Routing::source_flows`] as well.
    pub fn route_from_sources(
        &mut self,
        tokens: &[u64],
        out: &mut Routing,
    ) -> Result<(), RoutingError> {
        let experts = self.graph.num_experts;
        let gpus = self.graph.num_gpus();
        check_len(
            tokens.len(),
            gpus * experts,
            "num_gpus x num_experts counts",
        )?;
        check_total(tokens)?;
        self.demand_tokens.iter_mut().for_each(|t| *t = 0);
        for (i, &t) in tokens.iter().enumerate() {
            if t == 0 {
                continue;
            }
            let d = self.source_demand(i / experts, i % experts);
            if d == NO_DEMAND {
                return Err(RoutingError::Unreachable {
                    source_gpu: i / experts,
                    expert: i % experts,
                });
            }
            self.demand_tokens[d as usize] += t;
        }
        self.solve(out);
        self.split_sources(tokens, out);
        Ok(())
    }

    fn source_demand(&self, source: usize, expert: usize) -> u32 {
        match self.graph.locality {
            Locality::Any => self.graph.expert_demand[expert],
            Locality::SameNode => {
                let node = self.graph.node_of_gpu(source);
                self.graph.node_demand[node * self.graph.num_experts + expert]
            }
        }
    }

    fn solve(&mut self, out: &mut Routing) {
        let graph = &self.graph;
        self.solver
            .solve(graph, &self.demand_tokens, None, &mut self.edge_flow);
        let slot_tokens = out.slot_tokens_mut(graph.num_slots);
        for (edge, &x) in self.edge_flow.iter().enumerate() {
            spread(x, graph.edge_slots(edge), slot_tokens);
        }
        out.finish(graph, &self.solver);
    }

    /// Splits each demand's slot counts among the sources that sent its
    /// tokens (north-west corner rule: any split with the right sums will
    /// do, since loads only depend on the slots).
    fn split_sources(&self, tokens: &[u64], out: &mut Routing) {
        let graph = &self.graph;
        let experts = graph.num_experts;
        out.source_flows.clear();
        for d in 0..graph.num_demands() {
            if self.demand_tokens[d] == 0 {
                continue;
            }
            let expert = graph.demand_expert[d] as usize;
            let sources = match graph.locality {
                Locality::Any => 0..graph.num_gpus(),
                Locality::SameNode => {
                    let node = graph.node_of_gpu(graph.edge_gpu[graph.edges(d).start] as usize);
                    node * graph.gpus_per_node..(node + 1) * graph.gpus_per_node
                }
            };
            let mut slots = graph
                .edges(d)
                .flat_map(|edge| graph.edge_slots(edge).iter().copied())
                .map(|slot| (slot, out.slot_tokens[slot as usize]))
                .filter(|&(_, x)| x > 0);
            let mut current = slots.next();
            for source in sources {
                let mut left = tokens[source * experts + expert];
                while left > 0 {
                    let Some((slot, room)) = current else { break };
                    let take = left.min(room);
                    out.source_flows.push(SourceFlow {
                        source_gpu: source as u32,
                        slot,
                        tokens: take,
                    });
                    left -= take;
                    current = if take == room {
                        slots.next()
                    } else {
                        Some((slot, room - take))
                    };
                }
            }
        }
    }
}

/// Puts `tokens` on `slots` as evenly as possible (the first ones get the remainder).
fn spread(tokens: u64, slots: &[u32], slot_tokens: &mut [u64]) {
    if let [slot] = slots {
        slot_tokens[*slot as usize] = tokens;
        return;
    }
    let k = slots.len() as u64;
    if tokens == 0 || k == 0 {
        return;
    }
    let (each, extra) = (tokens / k, tokens % k);
    for (i, &slot) in slots.iter().enumerate() {
        slot_tokens[slot as usize] = each + u64::from((i as u64) < extra);
    }
}

fn check_len(found: usize, expected: usize, what: &'static str) -> Result<(), RoutingError> {
    if found != expected {
        return Err(RoutingError::Shape {
            found,
            expected,
            what,
        });
    }
    Ok(())
}

fn check_total(tokens: &[u64]) -> Result<(), RoutingError> {
    let total = tokens
        .iter()
        .try_fold(0u64, |acc, &t| acc.checked_add(t))
        .filter(|&t| t <= MAX_BATCH_TOKENS);
    match total {
        Some(_) => Ok(()),
        None => Err(RoutingError::TooManyTokens {
            limit: MAX_BATCH_TOKENS,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(topology: &str, row: Vec<u32>) -> (Topology, Plan) {
        let t = Topology::from_json(topology).unwrap();
        let p = Plan::new(vec![row], None, &t).unwrap();
        (t, p)
    }

    const TWO_NODES: &str = r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
        "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 2}"#;

    #[test]
    fn chain_of_replicas_drains_to_the_end() {
        // GPU0: e0 e1 | GPU1: e1 e2 | GPU2: e2 e3 | GPU3: e3 e3
        let (t, p) = layer(TWO_NODES, vec![0, 1, 1, 2, 2, 3, 3, 3]);
        let mut router = Router::new(&t, &p, 0).unwrap();
        let mut out = Routing::new();
        router.route(&[10, 10, 10, 2], &mut out).unwrap();
        // 32 tokens on 4 GPUs; e0's 10 pin GPU0 at >= 10.
        assert_eq!(out.max_load(), 10.0);
        assert_eq!(out.gpu_tokens()[0], 10);
        assert_eq!(out.gpu_tokens().iter().sum::<u64>(), 32);
        assert!(out.check_bottleneck(t.gpu_speed()));
        assert_eq!(out.bottleneck_tokens(), 10);
        // The two slots of e3 on GPU3 share its tokens evenly.
        let s = out.slot_tokens();
        assert!(s[6].abs_diff(s[7]) <= 1);
    }

    #[test]
    fn network_component_reaches_the_hall_bound() {
        // GPU0: e0 e1 | GPU1: e0 e2 | GPU2: e1 e2 | GPU3: e3 e3 (alone)
        let (t, p) = layer(TWO_NODES, vec![0, 1, 0, 2, 1, 2, 3, 3]);
        let mut router = Router::new(&t, &p, 0).unwrap();
        let mut out = Routing::new();
        router.route(&[7, 7, 8, 5], &mut out).unwrap();
        // GPUs 0-2 share 22 tokens: ceil(22 / 3) = 8.
        assert_eq!(out.max_load(), 8.0);
        assert_eq!(out.bottleneck_gpus(), &[0, 1, 2]);
        assert_eq!(out.bottleneck_tokens(), 22);
        assert!(out.check_bottleneck(t.gpu_speed()));
        // An empty batch costs nothing.
        router.route(&[0, 0, 0, 0], &mut out).unwrap();
        assert_eq!(out.max_load(), 0.0);
        assert!(out.slot_tokens().iter().all(|&x| x == 0));
    }

    #[test]
    fn speeds_set_the_breakpoints() {
        let topo = r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2, "gpu_speed": [1.0, 3.0]}"#;
        // GPU0: e0 e1 | GPU1 (3x faster): e0 e0
        let (t, p) = layer(topo, vec![0, 1, 0, 0]);
        let mut router = Router::new(&t, &p, 0).unwrap();
        let mut out = Routing::new();
        router.route(&[10, 1], &mut out).unwrap();
        // Real-valued optimum 2.75; whole tokens: 3 (1 + 2 on GPU0, or 9 / 3).
        assert_eq!(out.max_load(), 3.0);
        assert!(out.check_bottleneck(t.gpu_speed()));
        assert_eq!(out.bottleneck_tokens(), 11);
    }

    #[test]
    fn rejects_bad_input() {
        let (t, p) = layer(TWO_NODES, vec![0, 1, 1, 2, 2, 3, 3, 3]);
        assert!(matches!(
            Router::new(&t, &p, 1),
            Err(RoutingError::NoSuchLayer {
                layer: 1,
                layers: 1
            })
        ));
        let mut router = Router::new(&t, &p, 0).unwrap();
        let mut out = Routing::new();
        assert!(matches!(
            router.route(&[1, 2, 3], &mut out),
            Err(RoutingError::Shape {
                found: 3,
                expected: 4,
                ..
            })
        ));
        assert!(matches!(
            router.route(&[u64::MAX, 1, 0, 0], &mut out),
            Err(RoutingError::TooManyTokens { .. })
        ));
        let mut local = Router::with_locality(&t, &p, 0, Locality::SameNode).unwrap();
        // e1 sits on node 0 (GPU0) and node 0 (GPU1): one node, fine; e2 on
        // GPU1 (node 0) and GPU2 (node 1): ambiguous without sources.
        assert!(matches!(
            local.route(&[0, 0, 1, 0], &mut out),
            Err(RoutingError::AmbiguousNode { expert: 2 })
        ));
        // From GPU0 (node 0) to e3, which only lives on node 1.
        let mut sources = vec![0u64; 4 * 4];
        sources[3] = 1;
        assert!(matches!(
            local.route_from_sources(&sources, &mut out),
            Err(RoutingError::Unreachable {
                source_gpu: 0,
                expert: 3
            })
        ));
    }

    #[test]
    fn same_node_sources_use_their_node() {
        // e0 on GPU0 (node 0) and GPU3 (node 1); everything else elsewhere.
        let (t, p) = layer(TWO_NODES, vec![0, 1, 2, 1, 2, 3, 0, 3]);
        let mut router = Router::with_locality(&t, &p, 0, Locality::SameNode).unwrap();
        let mut out = Routing::new();
        let mut sources = vec![0u64; 4 * 4];
        sources[0] = 6; // GPU0 -> e0: must stay on GPU0
        sources[2 * 4] = 2; // GPU2 -> e0: must stay on GPU3
        router.route_from_sources(&sources, &mut out).unwrap();
        assert_eq!(out.slot_tokens()[0], 6);
        assert_eq!(out.slot_tokens()[6], 2);
        assert_eq!(out.max_load(), 6.0);
        let flows = out.source_flows();
        assert_eq!(flows.len(), 2);
        assert!(flows.contains(&SourceFlow {
            source_gpu: 0,
            slot: 0,
            tokens: 6
        }));
        assert!(flows.contains(&SourceFlow {
            source_gpu: 2,
            slot: 6,
            tokens: 2
        }));
        // Without the locality rule the 8 tokens split 4 / 4.
        let mut any = Router::new(&t, &p, 0).unwrap();
        any.route_from_sources(&sources, &mut out).unwrap();
        assert_eq!(out.max_load(), 4.0);
    }
}
