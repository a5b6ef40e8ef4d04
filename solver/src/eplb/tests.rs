use proptest::prelude::*;

use super::hierarchical::rebalance_experts_hierarchical;
use super::packing::balanced_packing;
use super::replicate::replicate_experts;
use super::*;
use crate::score;
use crate::topology::TopologySpec;

fn topology(
    layers: usize,
    experts: usize,
    groups: usize,
    nodes: usize,
    gpus: usize,
    slots: usize,
) -> Topology {
    Topology::new(TopologySpec {
        num_layers: layers as i64,
        num_logical_experts: experts as i64,
        num_groups: groups as i64,
        num_nodes: nodes as i64,
        gpus_per_node: gpus as i64,
        slots_per_gpu: slots as i64,
        gpu_speed: None,
        expert_bytes: None,
        num_hidden_layers: None,
        first_moe_layer: None,
        mtp_layers: None,
    })
    .unwrap()
}

/// The arguments `rebalance_experts` passes on for `policy`.
fn shape(t: &Topology, policy: EplbPolicy) -> Shape {
    let (num_groups, num_nodes) = match policy {
        EplbPolicy::Auto if t.supports_hierarchical() => (t.num_groups(), t.num_nodes()),
        EplbPolicy::Auto => (1, 1),
        EplbPolicy::Global => (t.num_groups(), 1),
    };
    Shape {
        num_physical_experts: t.num_slots(),
        num_groups,
        num_nodes,
        num_gpus: t.num_gpus(),
    }
}

/// Items per pack, and whether each pack's ranks are `0..n/m`.
fn check_packing(weight: &[f32], num_packs: usize) {
    let packing = balanced_packing(weight, num_packs);
    let per_pack = weight.len() / num_packs;
    let mut ranks = vec![Vec::new(); num_packs];
    for (&p, &r) in packing.pack_index.iter().zip(&packing.rank_in_pack) {
        ranks[p].push(r);
    }
    for (pack, mut r) in ranks.into_iter().enumerate() {
        r.sort_unstable();
        assert_eq!(
            r,
            (0..per_pack).collect::<Vec<_>>(),
            "pack {pack} of {weight:?}"
        );
    }
}

#[test]
fn packing_fills_every_pack_to_capacity() {
    let weights: Vec<f32> = (0..24).map(|i| ((i * 37) % 11) as f32 + 0.5).collect();
    for packs in [1, 2, 3, 4, 6, 8, 12, 24] {
        check_packing(&weights, packs);
    }
    check_packing(&[0.0; 12], 4);
    check_packing(&[7.0; 12], 3);
}

#[test]
fn packing_is_greedy_heaviest_first() {
    // 5 -> p0; 4 -> p1; 3 -> p1 (4 < 5); 3 -> p0 (5 < 7); 2 -> p1 (7 < 8),
    // full; 1 -> p0.
    let packing = balanced_packing(&[5.0, 4.0, 3.0, 3.0, 2.0, 1.0], 2);
    assert_eq!(packing.pack_index, [0, 1, 1, 0, 1, 0]);
    assert_eq!(packing.rank_in_pack, [0, 0, 1, 1, 2, 2]);
}

#[test]
fn packing_breaks_ties_by_index() {
    // Equal weights (in index order: a short sort is stable), each to the
    // first lightest pack.
    let packing = balanced_packing(&[1.0; 4], 2);
    assert_eq!(packing.pack_index, [0, 1, 0, 1]);
    assert_eq!(packing.rank_in_pack, [0, 0, 1, 1]);
}

#[test]
fn packing_one_item_per_pack_is_the_identity() {
    // The original skips sorting: item i in pack i, whatever the weights.
    let packing = balanced_packing(&[1.0, 3.0, 2.0], 3);
    assert_eq!(packing.pack_index, [0, 1, 2]);
    assert_eq!(packing.rank_in_pack, [0, 0, 0]);
}

fn check_replication(weight: &[f32], num_phy: usize) -> Replication {
    let r = replicate_experts(weight, num_phy);
    assert_eq!(r.phy2log.len(), num_phy);
    assert_eq!(r.rank.len(), num_phy);
    assert_eq!(
        &r.phy2log[..weight.len()],
        &(0..weight.len()).collect::<Vec<_>>()[..]
    );
    assert!(r.logcnt.iter().all(|&c| c >= 1), "{:?}", r.logcnt);
    assert_eq!(r.logcnt.iter().sum::<usize>(), num_phy);
    for (e, &count) in r.logcnt.iter().enumerate() {
        let mut ranks: Vec<usize> = (0..num_phy)
            .filter(|&p| r.phy2log[p] == e)
            .map(|p| r.rank[p])
            .collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (0..count).collect::<Vec<_>>(), "expert {e}");
    }
    r
}

use super::replicate::Replication;

#[test]
fn replication_gives_every_expert_a_replica_and_fills_all_slots() {
    let weights: Vec<f32> = (0..10).map(|i| ((i * 7) % 5) as f32 * 3.0).collect();
    for phy in [10, 11, 16, 33] {
        check_replication(&weights, phy);
    }
    check_replication(&[0.0; 6], 9);
    let r = check_replication(&[10.0, 1.0], 4);
    assert_eq!(r.logcnt, [3, 1]);
    assert_eq!(r.phy2log, [0, 1, 0, 0]);
    assert_eq!(r.rank, [0, 0, 1, 2]);
}

#[test]
fn replication_breaks_ties_to_the_first_expert() {
    // 6 > 3: expert 0 gets a second replica; then 6/2 == 3: the first wins.
    let r = replicate_experts(&[6.0, 3.0], 4);
    assert_eq!(r.logcnt, [3, 1]);
    // 6 > 3: expert 1; then 3 == 6/2: expert 0, the first.
    let r = replicate_experts(&[3.0, 6.0], 4);
    assert_eq!(r.logcnt, [2, 2]);
    assert_eq!(r.phy2log, [0, 1, 1, 0]);
    let r = replicate_experts(&[2.0, 2.0, 2.0], 5);
    assert_eq!(r.phy2log, [0, 1, 2, 0, 1]);
}

/// The groups of each node, and whether every replica of a group is on it.
fn assert_node_local(t: &Topology, plan: &Plan) {
    assert_eq!(score::groups_off_node(t, plan), 0);
}

#[test]
fn hierarchical_keeps_groups_on_their_node() {
    let t = topology(3, 16, 4, 2, 2, 5);
    let rows: Vec<Vec<f64>> = (0..3)
        .map(|l| {
            (0..16)
                .map(|e| ((e * 13 + l * 5) % 17) as f64 * 10.0)
                .collect()
        })
        .collect();
    let load = LoadMatrix::new(rows, &t).unwrap();
    let outcome = rebalance(&t, &load, EplbPolicy::Auto).unwrap();
    assert!(outcome.hierarchical);
    assert_node_local(&t, &outcome.plan);
    // Each node holds exactly its groups' experts, each node-local group
    // whole: 2 groups of 4 experts per node.
    for row in outcome.plan.phy2log() {
        for node in row.chunks(t.slots_per_node()) {
            let mut groups: Vec<usize> = node.iter().map(|&e| e as usize / 4).collect();
            groups.sort_unstable();
            groups.dedup();
            assert_eq!(groups.len(), 2, "{node:?}");
        }
    }
}

#[test]
fn worked_example() {
    // Groups {0,1} (50) and {2,3} (30), one group per node: no sort, group k
    // on node k. Node 0: [40, 10] + 1 replica -> expert 0; replicas weigh
    // [20, 10, 20], sorted 20 (phy 0), 20 (phy 2), 10 (phy 1) on its one GPU.
    // Node 1: [10, 20] + 1 -> expert 3; [10, 10, 10] in index order.
    let t = topology(1, 4, 2, 2, 1, 3);
    let load = LoadMatrix::new(vec![vec![40.0, 10.0, 10.0, 20.0]], &t).unwrap();
    let outcome = rebalance(&t, &load, EplbPolicy::Auto).unwrap();
    assert_eq!(outcome.plan.layer(0), &[0, 0, 1, 2, 3, 3]);
    assert_eq!(outcome.phyrank[0], [0, 1, 0, 0, 0, 1]);
    assert_eq!(
        outcome.log2phy()[0],
        [vec![0, 1], vec![2, -1], vec![3, -1], vec![4, 5]]
    );
    // Global: 2 redundant replicas over all experts: 40 -> e0 (now 20);
    // e0's 20 ties e3's 20 and the first wins: e0 again.
    let global = rebalance(&t, &load, EplbPolicy::Global).unwrap();
    assert!(!global.hierarchical);
    assert_eq!(global.plan.logcnt(4)[0], [3, 1, 1, 1]);
}

#[test]
fn global_when_groups_do_not_divide_among_nodes() {
    // 2 groups on 4 nodes: the global fallback, one group on one node.
    let t = topology(1, 8, 2, 4, 1, 3);
    let load = LoadMatrix::new(vec![(1..=8).map(f64::from).collect()], &t).unwrap();
    let auto = rebalance(&t, &load, EplbPolicy::Auto).unwrap();
    assert!(!auto.hierarchical);
    // 4 redundant replicas: 8 -> e7 (4), 7 -> e6 (3.5), 6 -> e5 (3),
    // 5 -> e4 (2.5). Then 12 replicas on 4 GPUs, heaviest first.
    assert_eq!(auto.plan.logcnt(8)[0], [1, 1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(score::groups_off_node(&t, &auto.plan), 2);
    let (row, ranks) = naive_hierarchical(
        &[1., 2., 3., 4., 5., 6., 7., 8.],
        &shape(&t, EplbPolicy::Auto),
    );
    assert_eq!((auto.plan.layer(0), &auto.phyrank[0]), (&row[..], &ranks));
    // Forced global (one node, groups kept as groups): the same counts and
    // GPU loads here, as no two experts tie.
    let global = rebalance(&t, &load, EplbPolicy::Global).unwrap();
    assert_eq!(global.plan.logcnt(8), auto.plan.logcnt(8));
    assert_eq!(
        score::score(&t, &load, &global.plan),
        score::score(&t, &load, &auto.plan)
    );
}

#[test]
fn gpu_speeds_are_ignored() {
    let uniform = topology(2, 8, 2, 1, 2, 5);
    let mut spec = uniform.to_spec();
    spec.gpu_speed = Some(vec![1.0, 3.0]);
    let fast = Topology::new(spec).unwrap();
    let rows = vec![(0..8).map(|e| (e * e) as f64).collect(), vec![5.0; 8]];
    let load = LoadMatrix::new(rows, &uniform).unwrap();
    assert_eq!(
        rebalance_experts(&uniform, &load).unwrap(),
        rebalance_experts(&fast, &load).unwrap()
    );
}

#[test]
fn rejects_a_load_for_another_topology() {
    let t = topology(2, 8, 2, 1, 2, 5);
    let other = topology(1, 8, 2, 1, 2, 5);
    let load = LoadMatrix::new(vec![vec![1.0; 8]], &other).unwrap();
    let err = rebalance_experts(&t, &load).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the load is 1 layers x 8 experts, the topology has 2 x 8"
    );
}

// ---------------------------------------------------------------------------
// A literal transcription of eplb.py for one layer: linear scans for `min`
// and `max`, explicit inverse permutations and gathers (the sort is the
// shared port of PyTorch's). The fast code (heaps, fused index arithmetic)
// must agree with it exactly.

fn naive_packing(w: &[f32], m: usize) -> (Vec<usize>, Vec<usize>) {
    let n = w.len();
    let per = n / m;
    if per == 1 {
        return ((0..n).collect(), vec![0; n]);
    }
    let indices = super::torch_sort::sort_descending(w);
    let (mut pack_index, mut rank_in_pack) = (vec![0; n], vec![0; n]);
    let (mut pack_weights, mut pack_items) = (vec![0f32; m], vec![0usize; m]);
    for group in indices {
        let mut pack = None;
        for p in (0..m).filter(|&p| pack_items[p] < per) {
            if pack.is_none_or(|b: usize| pack_weights[p] < pack_weights[b]) {
                pack = Some(p);
            }
        }
        let pack = pack.unwrap();
        pack_index[group] = pack;
        rank_in_pack[group] = pack_items[pack];
        pack_weights[pack] += w[group];
        pack_items[pack] += 1;
    }
    (pack_index, rank_in_pack)
}

fn naive_replicate(w: &[f32], num_phy: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let num_log = w.len();
    let mut phy2log: Vec<usize> = (0..num_phy).collect();
    let mut rank = vec![0; num_phy];
    let mut logcnt = vec![1usize; num_log];
    for i in num_log..num_phy {
        let ratio = |e: usize| w[e] / logcnt[e] as f32;
        let mut best = 0;
        for e in 1..num_log {
            if ratio(e) > ratio(best) {
                best = e;
            }
        }
        phy2log[i] = best;
        rank[i] = logcnt[best];
        logcnt[best] += 1;
    }
    (phy2log, rank, logcnt)
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

fn naive_hierarchical(w: &[f32], s: &Shape) -> (Vec<u32>, Vec<u32>) {
    let (num_phy, k, n, gpus) = (
        s.num_physical_experts,
        s.num_groups,
        s.num_nodes,
        s.num_gpus,
    );
    let e = w.len();
    let group_size = e / k;
    let groups_per_node = k / n;
    let per_gpu = num_phy / gpus;
    let tokens_per_group: Vec<f32> = w
        .chunks(group_size)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() as f32)
        .collect();
    let (gp, gr) = naive_packing(&tokens_per_group, n);
    let log2mlog: Vec<usize> = (0..e)
        .map(|x| {
            (gp[x / group_size] * groups_per_node + gr[x / group_size]) * group_size
                + x % group_size
        })
        .collect();
    let mlog2log = inverse(&log2mlog);
    let tokens_per_mlog: Vec<f32> = mlog2log.iter().map(|&x| w[x]).collect();
    let mut pphy2log = Vec::new();
    let mut pphyrank = Vec::new();
    for (node, tokens) in tokens_per_mlog.chunks(e / n).enumerate() {
        let (phy2mlog, phyrank, mlogcnt) = naive_replicate(tokens, num_phy / n);
        let tokens_per_phy: Vec<f32> = phy2mlog
            .iter()
            .map(|&m| tokens[m] / mlogcnt[m] as f32)
            .collect();
        let (pack, rank) = naive_packing(&tokens_per_phy, gpus / n);
        let phy2pphy: Vec<usize> = pack
            .iter()
            .zip(&rank)
            .map(|(p, r)| p * per_gpu + r)
            .collect();
        let pphy2phy = inverse(&phy2pphy);
        for &phy in &pphy2phy {
            let mlog = phy2mlog[phy] + node * (e / n);
            pphy2log.push(mlog2log[mlog] as u32);
            pphyrank.push(phyrank[phy] as u32);
        }
    }
    (pphy2log, pphyrank)
}

/// A topology with `E = groups * group_size` experts and at least `E` slots.
fn arb_topology() -> impl Strategy<Value = Topology> {
    (
        1usize..=3,
        1usize..=6,
        1usize..=5,
        1usize..=4,
        1usize..=4,
        0usize..=3,
    )
        .prop_map(|(layers, groups, group_size, nodes, gpus, extra)| {
            let experts = groups * group_size;
            let slots = experts.div_ceil(nodes * gpus) + extra;
            topology(layers, experts, groups, nodes, gpus, slots)
        })
}

fn arb_case() -> impl Strategy<Value = (Topology, LoadMatrix)> {
    arb_topology()
        .prop_flat_map(|t| {
            let cells = t.num_layers() * t.num_logical_experts();
            // Small integers (many ties), or arbitrary fractions.
            let values = prop_oneof![
                prop::collection::vec((0u32..20).prop_map(f64::from), cells),
                prop::collection::vec(0.0f64..1e6, cells),
            ];
            (Just(t), values)
        })
        .prop_map(|(t, values)| {
            let rows = values
                .chunks(t.num_logical_experts())
                .map(<[f64]>::to_vec)
                .collect();
            let load = LoadMatrix::new(rows, &t).unwrap();
            (t, load)
        })
}

proptest! {
    #[test]
    fn plans_are_valid_and_match_the_transcription((t, load) in arb_case()) {
        for policy in [EplbPolicy::Auto, EplbPolicy::Global] {
            let outcome = rebalance(&t, &load, policy).unwrap();
            let hierarchical = policy == EplbPolicy::Auto && t.supports_hierarchical();
            prop_assert_eq!(outcome.hierarchical, hierarchical);
            let plan = &outcome.plan;
            let e = t.num_logical_experts();
            prop_assert_eq!(plan.num_layers(), t.num_layers());
            for (l, (row, ranks)) in plan.phy2log().iter().zip(&outcome.phyrank).enumerate() {
                prop_assert_eq!(row.len(), t.num_slots());
                prop_assert_eq!(row.chunks_exact(t.slots_per_gpu()).count(), t.num_gpus());
                // Every expert placed; ranks 0..count per expert.
                let counts = crate::plan::replica_counts(row, e);
                prop_assert!(counts.iter().all(|&c| c >= 1));
                prop_assert_eq!(counts.iter().sum::<u32>() as usize, t.num_slots());
                for (x, &c) in counts.iter().enumerate() {
                    let mut r: Vec<u32> = row.iter().zip(ranks).filter(|(&y, _)| y as usize == x).map(|(_, &r)| r).collect();
                    r.sort_unstable();
                    prop_assert_eq!(r, (0..c).collect::<Vec<_>>());
                }
                // The fast code is the transcription.
                let weight: Vec<f32> = load.layer(l).iter().map(|&x| to_f32(x)).collect();
                let (naive_row, naive_ranks) = naive_hierarchical(&weight, &shape(&t, policy));
                prop_assert_eq!(row, &naive_row);
                prop_assert_eq!(ranks, &naive_ranks);
            }
            if hierarchical {
                prop_assert_eq!(score::groups_off_node(&t, plan), 0);
            }
            // log2phy inverts phy2log.
            for (l, table) in outcome.log2phy().iter().enumerate() {
                for (x, slots) in table.iter().enumerate() {
                    for &p in slots.iter().filter(|&&p| p >= 0) {
                        prop_assert_eq!(plan.layer(l)[p as usize] as usize, x);
                    }
                }
            }
        }
    }

    #[test]
    fn packing_fills_packs_exactly(
        weights in prop::collection::vec(0u32..10, 1..40),
        packs in 1usize..8,
    ) {
        let n = weights.len() - weights.len() % packs;
        prop_assume!(n > 0);
        let w: Vec<f32> = weights[..n].iter().map(|&x| x as f32).collect();
        check_packing(&w, packs);
        let fast = balanced_packing(&w, packs);
        prop_assert_eq!((fast.pack_index, fast.rank_in_pack), naive_packing(&w, packs));
    }
}

#[test]
fn the_layer_function_is_the_transcription_on_a_prefill_like_layer() {
    let t = topology(1, 64, 8, 2, 4, 10);
    let weight: Vec<f32> = (0..64).map(|e| ((e * 7919) % 101) as f32 * 100.0).collect();
    for policy in [EplbPolicy::Auto, EplbPolicy::Global] {
        let s = shape(&t, policy);
        let fast = rebalance_experts_hierarchical(&weight, &s);
        assert_eq!(
            (fast.phy2log, fast.phyrank),
            naive_hierarchical(&weight, &s)
        );
    }
}
