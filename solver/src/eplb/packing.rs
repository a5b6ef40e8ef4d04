//! `balanced_packing`: `n` weighted items into `m` packs of exactly `n/m`
//! items each, heaviest item first into the lightest pack with room.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::torch_sort::sort_descending;

/// Where each item went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Packing {
    /// `pack_index[i]`: the pack of item `i`.
    pub pack_index: Vec<usize>,
    /// `rank_in_pack[i]`: the order in which item `i` entered its pack
    /// (`0..n/m`), its position within the pack.
    pub rank_in_pack: Vec<usize>,
}

/// A pack's running load and index, ordered by load then index, so the
/// smallest key is the first lightest pack (Python's `min` keeps the first
/// of equal keys).
#[derive(Debug, Clone, Copy)]
struct PackKey {
    load: f32,
    pack: usize,
}

impl Ord for PackKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Loads are non-negative and never NaN, so `total_cmp` agrees with `<`.
        self.load
            .total_cmp(&other.load)
            .then(self.pack.cmp(&other.pack))
    }
}

impl PartialOrd for PackKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PackKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PackKey {}

/// EPLB's `balanced_packing` for one row of weights.
///
/// Items are taken heaviest first (equal weights in the order PyTorch's CPU
/// sort leaves them, see [`sort_descending`]) and each
/// goes to the lightest pack that is not yet full (the lowest-numbered on
/// ties); pack loads are `f32` running sums, as in the original. With one
/// item per pack the original skips all this and puts item `i` in pack `i`.
///
/// Requires `num_packs > 0` and `num_packs` dividing `weight.len()`.
pub(super) fn balanced_packing(weight: &[f32], num_packs: usize) -> Packing {
    let n = weight.len();
    assert!(
        num_packs > 0 && n.is_multiple_of(num_packs),
        "{n} items do not fill {num_packs} packs evenly"
    );
    let per_pack = n / num_packs;
    if per_pack == 1 {
        return Packing {
            pack_index: (0..n).collect(),
            rank_in_pack: vec![0; n],
        };
    }
    let order = sort_descending(weight);
    let mut pack_index = vec![0; n];
    let mut rank_in_pack = vec![0; n];
    let mut items = vec![0usize; num_packs];
    // Only packs with room are in the heap.
    let mut open: BinaryHeap<Reverse<PackKey>> = (0..num_packs)
        .map(|pack| Reverse(PackKey { load: 0.0, pack }))
        .collect();
    for item in order {
        let Reverse(PackKey { load, pack }) = open.pop().expect("a pack with room");
        pack_index[item] = pack;
        rank_in_pack[item] = items[pack];
        items[pack] += 1;
        if items[pack] < per_pack {
            open.push(Reverse(PackKey {
                load: load + weight[item],
                pack,
            }));
        }
    }
    Packing {
        pack_index,
        rank_in_pack,
    }
}
