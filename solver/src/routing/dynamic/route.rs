//! The routing over a chosen activation.

use crate::routing::graph::LayerGraph;
use crate::routing::result::Routing;
use crate::routing::whole::WholeTokens;

/// Fills `out` with the routing over the `active` edges: each used edge's
/// tokens go to its first slot, which becomes the active one.
pub(crate) fn route_active(
    graph: &LayerGraph,
    solver: &mut WholeTokens,
    tokens: &[u64],
    active: &[bool],
    flow: &mut [u64],
    out: &mut Routing,
    active_slots: &mut Vec<bool>,
) {
    solver.solve(graph, tokens, Some(active), flow);
    active_slots.clear();
    active_slots.resize(graph.num_slots, false);
    let slot_tokens = out.slot_tokens_mut(graph.num_slots);
    for (edge, &x) in flow.iter().enumerate() {
        if x > 0 {
            if let Some(&slot) = graph.edge_slots(edge).first() {
                slot_tokens[slot as usize] = x;
                active_slots[slot as usize] = true;
            }
        }
    }
    out.finish(graph, solver);
}
