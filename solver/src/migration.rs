//! The SPEC migrations metric, owned here: going from one plan to another, a
//! GPU loads every expert of its new slot set that its old slot set lacks,
//! compared as multisets (a second copy of an expert the GPU held once is one
//! more migration). A plan's migrations are the sum over layers and GPUs.
//!
//! The count comes in two forms: over slot lists (plans, candidate rows) and
//! over copy tables (`copies[g * n + e]`, what the node searches keep up to
//! date); both are the same number for the same placement.

use crate::plan::Plan;
use crate::topology::Topology;

/// Slot lists up to this long are sorted on the stack: GPUs hold a few
/// slots, and the re-planner counts migrations for every candidate.
const STACK_SLOTS: usize = 32;

/// What one GPU must do to go from one slot list to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuChanges {
    /// Experts to load (new − old, ascending); its length is the GPU's
    /// migrations.
    pub load: Vec<u32>,
    /// Experts to evict (old − new, ascending).
    pub evict: Vec<u32>,
}

/// Migrations of one GPU: the experts in `new` beyond those in `old`, as
/// multisets (slot order does not matter).
pub fn gpu_migrations(new: &[u32], old: &[u32]) -> usize {
    let mut count = 0;
    if new.len() <= STACK_SLOTS && old.len() <= STACK_SLOTS {
        let (mut a, mut b) = ([0u32; STACK_SLOTS], [0u32; STACK_SLOTS]);
        let (a, b) = (&mut a[..new.len()], &mut b[..old.len()]);
        a.copy_from_slice(new);
        b.copy_from_slice(old);
        a.sort_unstable();
        b.sort_unstable();
        walk(a, b, |_| count += 1, |_| {});
    } else {
        let (mut a, mut b) = (new.to_vec(), old.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        walk(&a, &b, |_| count += 1, |_| {});
    }
    count
}

/// The experts one GPU loads and evicts going from slot list `old` to `new`.
pub fn gpu_changes(old: &[u32], new: &[u32]) -> GpuChanges {
    let (mut a, mut b) = (new.to_vec(), old.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let mut changes = GpuChanges::default();
    walk(&a, &b, |e| changes.load.push(e), |e| changes.evict.push(e));
    changes
}

/// Migrations of one layer's slot row against the previous row (same
/// shape), GPU by GPU.
pub(crate) fn row_migrations(new: &[u32], old: &[u32], slots_per_gpu: usize) -> usize {
    new.chunks_exact(slots_per_gpu)
        .zip(old.chunks_exact(slots_per_gpu))
        .map(|(new, old)| gpu_migrations(new, old))
        .sum()
}

/// Migrations given copy tables of the same layout (`new[i]` copies of some
/// expert on some GPU against `old[i]` before).
pub(crate) fn copy_migrations(new: &[u32], old: &[u32]) -> usize {
    new.iter()
        .zip(old)
        .map(|(&a, &b)| a.saturating_sub(b) as usize)
        .sum()
}

/// Migrations per layer and GPU (`[layer][gpu]`) from `previous` to `next`,
/// both shaped for `topology`.
pub fn migrations_per_gpu(topology: &Topology, previous: &Plan, next: &Plan) -> Vec<Vec<usize>> {
    let s = topology.slots_per_gpu();
    previous
        .phy2log()
        .iter()
        .zip(next.phy2log())
        .map(|(old, new)| {
            new.chunks_exact(s)
                .zip(old.chunks_exact(s))
                .map(|(new, old)| gpu_migrations(new, old))
                .collect()
        })
        .collect()
}

/// Migrations per layer from `previous` to `next`, both shaped for `topology`.
pub fn migrations_per_layer(topology: &Topology, previous: &Plan, next: &Plan) -> Vec<usize> {
    let s = topology.slots_per_gpu();
    previous
        .phy2log()
        .iter()
        .zip(next.phy2log())
        .map(|(old, new)| row_migrations(new, old, s))
        .collect()
}

/// Total migrations from `previous` to `next`, both shaped for `topology`.
pub fn migrations(topology: &Topology, previous: &Plan, next: &Plan) -> usize {
    migrations_per_layer(topology, previous, next).iter().sum()
}

/// Walks two sorted multisets, calling `only_new` for every element of
/// `new − old` and `only_old` for every element of `old − new`, ascending.
fn walk(new: &[u32], old: &[u32], mut only_new: impl FnMut(u32), mut only_old: impl FnMut(u32)) {
    let (mut i, mut j) = (0, 0);
    while i < new.len() && j < old.len() {
        if new[i] < old[j] {
            only_new(new[i]);
            i += 1;
        } else if new[i] > old[j] {
            only_old(old[j]);
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    new[i..].iter().for_each(|&e| only_new(e));
    old[j..].iter().for_each(|&e| only_old(e));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, spelled out: each expert of `new` that finds no
    /// unmatched copy in `old` migrates.
    fn brute(new: &[u32], old: &[u32]) -> usize {
        let mut left = old.to_vec();
        new.iter()
            .filter(|e| match left.iter().position(|x| x == *e) {
                Some(i) => {
                    left.swap_remove(i);
                    false
                }
                None => true,
            })
            .count()
    }

    #[test]
    fn counts_the_multiset_difference() {
        assert_eq!(gpu_migrations(&[1, 1, 2], &[1, 3, 2]), 1);
        assert_eq!(gpu_migrations(&[5, 4], &[4, 5]), 0);
        assert_eq!(gpu_migrations(&[7, 7, 7], &[]), 3);
        let mut seed = 5u64;
        let mut draw = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % m) as u32
        };
        // Both sides of the stack limit.
        for len in [1, 3, 9, STACK_SLOTS, STACK_SLOTS + 1, 70] {
            for _ in 0..20 {
                let new: Vec<u32> = (0..len).map(|_| draw(6)).collect();
                let old: Vec<u32> = (0..len).map(|_| draw(6)).collect();
                assert_eq!(gpu_migrations(&new, &old), brute(&new, &old));
                let changes = gpu_changes(&old, &new);
                assert_eq!(changes.load.len(), brute(&new, &old));
                assert_eq!(changes.evict.len(), brute(&old, &new));
            }
        }
    }

    #[test]
    fn lists_loads_and_evictions() {
        assert_eq!(
            gpu_changes(&[3, 1, 1], &[1, 2, 2]),
            GpuChanges {
                load: vec![2, 2],
                evict: vec![1, 3]
            }
        );
        assert_eq!(gpu_changes(&[5, 4], &[4, 5]), GpuChanges::default());
    }

    #[test]
    fn plan_totals_agree_per_gpu_and_per_layer() {
        let t = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let a = Plan::new(
            vec![vec![0, 1, 0, 2, 3, 3], vec![0, 1, 2, 3, 0, 1]],
            None,
            &t,
        )
        .unwrap();
        let b = Plan::new(
            vec![vec![1, 0, 2, 3, 3, 0], vec![0, 1, 2, 3, 0, 1]],
            None,
            &t,
        )
        .unwrap();
        assert_eq!(migrations_per_gpu(&t, &a, &b), vec![vec![1, 1], vec![0, 0]]);
        assert_eq!(migrations_per_layer(&t, &a, &b), vec![2, 0]);
        assert_eq!(migrations(&t, &a, &b), 2);
        assert_eq!(copy_migrations(&[2, 0, 1], &[1, 1, 1]), 1);
    }
}
