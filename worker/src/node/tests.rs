use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::fp8::quant::ScaleMode;
use crate::moe::config::{small_spec, MoeConfig};
use crate::moe::master::LayerMaster;
use crate::moe::MoeLayer;
use crate::random::normal_matrix;

const LAYERS: usize = 2;

/// 2 nodes × 2 GPUs × 5 slots = 20 slots per layer for 16 experts; built
/// once because random weights are slow in debug builds.
fn cluster() -> (Vec<MoeLayer>, Arc<HostCopy>) {
    static CLUSTER: OnceLock<(Vec<MoeLayer>, Arc<HostCopy>)> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let config = MoeConfig::new(small_spec()).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(31);
            let (layers, experts): (Vec<_>, Vec<_>) = (0..LAYERS)
                .map(|_| {
                    LayerMaster::random(&config, &mut rng)
                        .quantize(ScaleMode::Exact)
                        .unwrap()
                })
                .unzip();
            (layers, Arc::new(HostCopy::new(experts).unwrap()))
        })
        .clone()
}

fn placements(rows: [Vec<u32>; LAYERS]) -> Vec<Placement> {
    rows.into_iter()
        .map(|r| Placement::new(r, 16, None).unwrap())
        .collect()
}

/// Experts 0..16 in order, then 0..4 again.
fn first_plan() -> Vec<Placement> {
    let row: Vec<u32> = (0..16).chain(0..4).collect();
    placements([row.clone(), row])
}

/// Layer 0 unchanged; layer 1 reversed and replicating 12..16.
fn second_plan() -> Vec<Placement> {
    let row0: Vec<u32> = (0..16).chain(0..4).collect();
    let row1: Vec<u32> = (0..16).rev().chain(12..16).collect();
    placements([row0, row1])
}

fn node(n: usize) -> NodeShape {
    NodeShape::new(n, 2, 2, 5).unwrap()
}

#[test]
fn first_load_copies_every_slot_from_the_host() {
    let (_, host) = cluster();
    let (state, report) = NodeState::new(node(1), host.clone(), &first_plan(), 1).unwrap();
    let expert_bytes = host.expert(0, 0).bytes() as u64;
    assert_eq!(report.version, 1);
    assert_eq!(report.kept_slots, 0);
    assert_eq!(report.host_bytes, LAYERS as u64 * 10 * expert_bytes);
    assert_eq!(report.intra_node_bytes + report.same_gpu_bytes, 0);
    let snapshot = state.snapshot();
    assert_eq!(
        snapshot.layer_row(0),
        vec![10, 11, 12, 13, 14, 15, 0, 1, 2, 3]
    );
    state.verify_all().unwrap();
}

#[test]
fn apply_moves_only_what_changed_and_counts_bytes_by_source() {
    let (_, host) = cluster();
    let (state, _) = NodeState::new(node(0), host.clone(), &first_plan(), 1).unwrap();
    let before = state.snapshot();
    let report = state.apply(&second_plan(), 2).unwrap();
    let after = state.snapshot();
    let expert_bytes = host.expert(0, 0).bytes() as u64;

    // Node 0 layer 1: GPU 0 [0 1 2 3 4] -> [15 14 13 12 11], GPU 1 [5 6 7 8 9] -> [10 9 8 7 6].
    assert_eq!(after.layer_row(1), vec![15, 14, 13, 12, 11, 10, 9, 8, 7, 6]);
    assert_eq!(after.layer_row(0), before.layer_row(0));
    assert_eq!(report.kept_slots, 10); // layer 0
    assert_eq!(report.moves.len(), 10);
    // 9, 8, 7 and 6 were already on GPU 1 (same-GPU copies); nothing on GPU 0
    // is needed by GPU 1 or vice versa; the rest come from the host.
    assert_eq!(report.same_gpu_bytes, 4 * expert_bytes);
    assert_eq!(report.intra_node_bytes, 0);
    assert_eq!(report.host_bytes, 6 * expert_bytes);
    assert_eq!(report.migrations, 6);
    state.verify_all().unwrap();

    // Unchanged slots share their bytes with the previous snapshot.
    assert!(Arc::ptr_eq(
        &before.layers[0][3].weights,
        &after.layers[0][3].weights
    ));
    assert!(!Arc::ptr_eq(
        &before.layers[1][0].weights,
        &after.layers[1][0].weights
    ));
}

#[test]
fn peer_gpus_serve_experts_they_hold() {
    let (_, host) = cluster();
    let (state, _) = NodeState::new(node(0), host, &first_plan(), 1).unwrap();
    // Swap the two GPUs' slot sets in layer 0: everything comes from the peer.
    let row0: Vec<u32> = (5..10).chain(0..5).chain(10..16).chain(0..4).collect();
    let row1: Vec<u32> = (0..16).chain(0..4).collect();
    let report = state.apply(&placements([row0, row1]), 2).unwrap();
    assert_eq!(report.moves.len(), 10);
    assert!(report
        .moves
        .iter()
        .all(|m| matches!(m.source, Source::PeerGpu { .. })));
    assert_eq!(report.host_bytes, 0);
    assert_eq!(report.migrations, 10);
}

#[test]
fn stale_or_mismatched_plans_leave_the_node_unchanged() {
    let (_, host) = cluster();
    let (state, _) = NodeState::new(node(0), host, &first_plan(), 5).unwrap();
    assert_eq!(
        state.apply(&second_plan(), 5),
        Err(NodeError::StaleVersion {
            current: 5,
            requested: 5
        })
    );
    assert!(matches!(
        state.apply(&second_plan()[..1], 6),
        Err(NodeError::Mismatch { .. })
    ));
    let short = placements([(0..16).collect(), (0..16).collect()]);
    assert!(matches!(
        state.apply(&short, 6),
        Err(NodeError::Mismatch { .. })
    ));
    assert_eq!(state.snapshot().version(), 5);
    assert_eq!(state.apply(&second_plan(), 6).unwrap().version, 6);
}

#[test]
fn a_corrupt_copy_is_caught_and_nothing_is_swapped() {
    let (_, host) = cluster();
    let (state, _) = NodeState::new(node(0), host.clone(), &first_plan(), 1).unwrap();
    // Corrupt GPU 1's slot 4 (expert 9 in layer 1): give it expert 3's bytes.
    {
        let mut current = state.current.write().unwrap();
        let mut layers = current.layers.clone();
        layers[1][9].weights = Arc::new(host.expert(1, 3).clone());
        *current = Arc::new(NodeWeights {
            version: 1,
            shape: node(0),
            layers,
        });
    }
    assert!(matches!(
        state.verify_all(),
        Err(NodeError::Checksum {
            layer: 1,
            gpu: 1,
            slot: 4,
            expert: 9,
            ..
        })
    ));
    // The second plan copies expert 9 from that slot.
    let err = state.apply(&second_plan(), 2).unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Checksum {
                layer: 1,
                gpu: 1,
                expert: 9,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(state.snapshot().version(), 1);
}

/// Steps that run while plans are applied always see one whole plan.
#[test]
fn steps_never_see_a_half_applied_plan() {
    let (_, host) = cluster();
    let (state, _) = NodeState::new(node(0), host, &first_plan(), 1).unwrap();
    let plans = [first_plan(), second_plan()];
    let rows = |p: &[Placement]| -> Vec<Vec<u32>> {
        p.iter().map(|l| l.phy2log()[0..10].to_vec()).collect()
    };
    let expected = [rows(&plans[0]), rows(&plans[1])];
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let snapshot = state.snapshot();
                let seen: Vec<Vec<u32>> = (0..LAYERS).map(|l| snapshot.layer_row(l)).collect();
                // Odd versions carry the first plan, even versions the second.
                assert_eq!(seen, expected[(snapshot.version() % 2 == 0) as usize]);
            }
        });
        for version in 2..12 {
            state
                .apply(&plans[(version % 2 == 0) as usize], version)
                .unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
}

/// Two nodes each computing their own slots reproduce the whole layer.
#[test]
fn two_nodes_together_compute_the_whole_layer() {
    let (layers, host) = cluster();
    let plan = second_plan();
    let nodes: Vec<NodeState> = (0..2)
        .map(|n| NodeState::new(node(n), host.clone(), &plan, 1).unwrap().0)
        .collect();
    let hidden = normal_matrix(&mut ChaCha8Rng::seed_from_u64(32), 30, 256);
    let layer = &layers[1];
    let all: Vec<&ExpertWeights> = plan[1]
        .phy2log()
        .iter()
        .map(|&e| host.expert(1, e as usize))
        .collect();
    let whole = layer.forward(&hidden, &plan[1], &all[..]).unwrap();
    let parts: Vec<_> = nodes
        .iter()
        .map(|n| {
            layer
                .forward(&hidden, &plan[1], &n.snapshot().layer(1))
                .unwrap()
        })
        .collect();
    let shared_only = layer
        .forward(&hidden, &plan[1], &[][..] as &[&ExpertWeights])
        .unwrap();
    assert_eq!(
        parts[0].remote_assignments + parts[1].remote_assignments,
        30 * 4
    );
    for i in 0..whole.output.data().len() {
        let sum =
            parts[0].output.data()[i] + parts[1].output.data()[i] - shared_only.output.data()[i];
        let w = whole.output.data()[i];
        assert!((w - sum).abs() <= 1e-5 * (1.0 + w.abs()), "{w} vs {sum}");
    }
}
