//! The order in which `tensor.sort(descending=True)` on the CPU returns equal
//! values, so that EPLB's ties resolve as in the original.
//!
//! PyTorch's CPU sort with the default `stable=False` runs `std::sort` over
//! (value, index) pairs, comparing values only (`KeyValueCompDesc`). In the
//! official Linux builds that is libstdc++'s introsort: median-of-three
//! quicksort down to runs of 16, a heapsort fallback past `2·⌊log2 n⌋` levels,
//! then one insertion sort. It is not stable, so which of two equally loaded
//! experts comes first — and hence which GPU each lands on — depends on these
//! exact steps; this module reproduces them. (Up to 16 items it is a plain
//! insertion sort, which is stable.) Sorted loads are the same under any
//! order; only the positions of equal ones differ.

/// libstdc++'s `_S_threshold`.
const THRESHOLD: usize = 16;

/// A (value, original index) pair, the element PyTorch's composite accessor
/// moves around.
type Item = (f32, usize);

/// `KeyValueCompDesc`: `a` goes before `b` when its value is larger (values
/// are never NaN here).
#[inline]
fn before(a: &Item, b: &Item) -> bool {
    a.0 > b.0
}

/// Indices of `values`, largest value first, in the order PyTorch's CPU
/// `sort(descending=True)` returns them.
pub(super) fn sort_descending(values: &[f32]) -> Vec<usize> {
    let mut items: Vec<Item> = values.iter().copied().zip(0..).collect();
    let n = items.len();
    if n > 1 {
        let depth_limit = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop(&mut items, depth_limit);
        final_insertion_sort(&mut items);
    }
    items.into_iter().map(|(_, i)| i).collect()
}

/// `std::__introsort_loop`: quicksort the slice down to runs of at most
/// [`THRESHOLD`], left for the final insertion sort.
fn introsort_loop(items: &mut [Item], mut depth_limit: usize) {
    let mut last = items.len();
    while last > THRESHOLD {
        if depth_limit == 0 {
            heap_sort(&mut items[..last]);
            return;
        }
        depth_limit -= 1;
        let cut = partition_pivot(&mut items[..last]);
        introsort_loop(&mut items[cut..last], depth_limit);
        last = cut;
    }
}

/// `std::__unguarded_partition_pivot`: the median of items 1, mid and last
/// moved to the front as the pivot, then a Hoare partition of the rest.
fn partition_pivot(items: &mut [Item]) -> usize {
    let len = items.len();
    let mid = len / 2;
    move_median_to_first(items, 1, mid, len - 1);
    unguarded_partition(items, 1, len)
}

/// `std::__move_median_to_first(result = 0, a, b, c)`.
fn move_median_to_first(items: &mut [Item], a: usize, b: usize, c: usize) {
    let median = if before(&items[a], &items[b]) {
        if before(&items[b], &items[c]) {
            b
        } else if before(&items[a], &items[c]) {
            c
        } else {
            a
        }
    } else if before(&items[a], &items[c]) {
        a
    } else if before(&items[b], &items[c]) {
        c
    } else {
        b
    };
    items.swap(0, median);
}

/// `std::__unguarded_partition` of `first..last` around the pivot at 0.
fn unguarded_partition(items: &mut [Item], mut first: usize, mut last: usize) -> usize {
    let pivot = items[0];
    loop {
        while before(&items[first], &pivot) {
            first += 1;
        }
        last -= 1;
        while before(&pivot, &items[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        items.swap(first, last);
        first += 1;
    }
}

/// `std::__final_insertion_sort`.
fn final_insertion_sort(items: &mut [Item]) {
    if items.len() > THRESHOLD {
        insertion_sort(&mut items[..THRESHOLD]);
        for i in THRESHOLD..items.len() {
            unguarded_linear_insert(items, i);
        }
    } else {
        insertion_sort(items);
    }
}

/// `std::__insertion_sort`.
fn insertion_sort(items: &mut [Item]) {
    for i in 1..items.len() {
        if before(&items[i], &items[0]) {
            items[..=i].rotate_right(1);
        } else {
            unguarded_linear_insert(items, i);
        }
    }
}

/// `std::__unguarded_linear_insert`: move item `last` left past every item it
/// goes before.
fn unguarded_linear_insert(items: &mut [Item], mut last: usize) {
    let value = items[last];
    while before(&value, &items[last - 1]) {
        items[last] = items[last - 1];
        last -= 1;
    }
    items[last] = value;
}

/// `std::__partial_sort(first, last, last)`: make a heap, then pop it.
fn heap_sort(items: &mut [Item]) {
    let len = items.len();
    if len < 2 {
        return;
    }
    // std::__make_heap
    let mut parent = (len - 2) / 2;
    loop {
        let value = items[parent];
        adjust_heap(items, parent, len, value);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    // std::__sort_heap
    let mut last = len;
    while last > 1 {
        last -= 1;
        // std::__pop_heap(first, last, last)
        let value = items[last];
        items[last] = items[0];
        adjust_heap(items, 0, last, value);
    }
}

/// `std::__adjust_heap`: sift the hole at `hole` down to a leaf, then push
/// `value` up from there.
fn adjust_heap(items: &mut [Item], mut hole: usize, len: usize, value: Item) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if before(&items[child], &items[child - 1]) {
            child -= 1;
        }
        items[hole] = items[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        items[hole] = items[child - 1];
        hole = child - 1;
    }
    // std::__push_heap
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && before(&items[parent], &value) {
        items[hole] = items[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    items[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sorted_permutation(values: &[f32], order: &[usize]) -> bool {
        let mut seen = order.to_vec();
        seen.sort_unstable();
        seen == (0..values.len()).collect::<Vec<_>>()
            && order.windows(2).all(|w| values[w[0]] >= values[w[1]])
    }

    #[test]
    fn sorts_descending() {
        for n in [0, 1, 2, 5, 16, 17, 40, 72, 288, 1000] {
            let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32).collect();
            let order = sort_descending(&values);
            assert!(is_sorted_permutation(&values, &order), "n = {n}");
            // The heapsort fallback alone sorts too.
            let mut items: Vec<Item> = values.iter().copied().zip(0..).collect();
            heap_sort(&mut items);
            assert!(items.windows(2).all(|w| w[0].0 >= w[1].0), "n = {n}");
        }
    }

    #[test]
    fn small_inputs_are_stable() {
        // Insertion sort only: equal values keep index order.
        let values = [1.0, 2.0, 1.0, 2.0, 1.0];
        assert_eq!(sort_descending(&values), [1, 3, 0, 2, 4]);
    }

    /// Orders printed by `std::sort` of GCC 12's libstdc++ on (value, index)
    /// pairs compared by value, descending. (This port also agreed with it
    /// on 3000 random inputs of up to 400 values with many ties, and its
    /// heapsort with `std::partial_sort`, when it was written.)
    #[test]
    fn large_inputs_follow_libstdcxx_introsort() {
        // 17 equal values: the median of items 1, 8, 16 (item 8) becomes the
        // pivot, and the partition swaps equal items pairwise.
        assert_eq!(
            sort_descending(&[1.0; 17]),
            [8, 16, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1]
        );
        let values: Vec<f32> = (0..40).map(|i| ((i * 7) % 5) as f32).collect();
        assert_eq!(
            sort_descending(&values),
            [
                17, 2, 37, 22, 7, 32, 27, 12, 9, 24, 14, 29, 19, 34, 4, 39, 21, 1, 26, 31, 36, 16,
                11, 6, 18, 23, 38, 13, 28, 3, 8, 33, 0, 20, 5, 35, 10, 30, 15, 25
            ]
        );
    }
}
