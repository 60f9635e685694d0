//! The token order of ATD's category attention (spandrel 0.4.2
//! `architectures/ATD/__arch/atd_arch.py`, `AC_MSA.forward`: `torch.sort(tk_id, stable=False)`).
//!
//! The categories repeat (hundreds of tokens, tens of categories), so which of the equal keys
//! comes first decides which tokens share a group of `category_size`, and with it the output.
//! torch's CPU sort of a (B, N) integer tensor is libstdc++'s `std::sort` (introsort) on
//! (key, index) pairs compared by key alone; this is that algorithm step for step (median of
//! three into the first slot, unguarded partition, recursion on the right part, heapsort
//! past 2·⌊log₂ n⌋ levels, insertion sort of runs of 16), so the order equals the
//! reference's, ties included. Checked against torch 2 on random keys when the fixtures were
//! made (scripts/fixtures/zoo_atd.py records the unstable order differs from the stable one).

/// libstdc++'s `_S_threshold`.
const THRESHOLD: usize = 16;

/// The permutation `std::sort` leaves when it sorts `(keys[i], i)` by key: position p of the
/// result holds the index of the token sorted there (torch's `indices`).
pub(super) fn torch_sort_indices(keys: &[u32]) -> Vec<u32> {
    let mut a: Vec<(u32, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i as u32))
        .collect();
    let n = a.len();
    if n > 1 {
        let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop(&mut a, 0, n, depth);
        if n > THRESHOLD {
            insertion_sort(&mut a, 0, THRESHOLD);
            for i in THRESHOLD..n {
                unguarded_linear_insert(&mut a, i);
            }
        } else {
            insertion_sort(&mut a, 0, n);
        }
    }
    a.into_iter().map(|(_, i)| i).collect()
}

fn less(x: (u32, u32), y: (u32, u32)) -> bool {
    x.0 < y.0
}

fn introsort_loop(a: &mut [(u32, u32)], first: usize, mut last: usize, mut depth: usize) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_sort(a, first, last);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        move_median_to_first(a, first, first + 1, mid, last - 1);
        let cut = unguarded_partition(a, first + 1, last, first);
        introsort_loop(a, cut, last, depth);
        last = cut;
    }
}

fn move_median_to_first(a: &mut [(u32, u32)], result: usize, x: usize, y: usize, z: usize) {
    let pick = if less(a[x], a[y]) {
        if less(a[y], a[z]) {
            y
        } else if less(a[x], a[z]) {
            z
        } else {
            x
        }
    } else if less(a[x], a[z]) {
        x
    } else if less(a[y], a[z]) {
        z
    } else {
        y
    };
    a.swap(result, pick);
}

/// The pivot sits at `pivot` (before `first`), so neither scan can run off the range.
fn unguarded_partition(
    a: &mut [(u32, u32)],
    mut first: usize,
    mut last: usize,
    pivot: usize,
) -> usize {
    loop {
        while less(a[first], a[pivot]) {
            first += 1;
        }
        last -= 1;
        while less(a[pivot], a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

fn insertion_sort(a: &mut [(u32, u32)], first: usize, last: usize) {
    for i in first + 1..last {
        if less(a[i], a[first]) {
            let val = a[i];
            a.copy_within(first..i, first + 1);
            a[first] = val;
        } else {
            unguarded_linear_insert(a, i);
        }
    }
}

/// Moves `a[last]` left past the larger elements; a smaller-or-equal element precedes it.
fn unguarded_linear_insert(a: &mut [(u32, u32)], mut last: usize) {
    let val = a[last];
    while less(val, a[last - 1]) {
        a[last] = a[last - 1];
        last -= 1;
    }
    a[last] = val;
}

/// `std::__partial_sort(first, last, last)`: make_heap then sort_heap.
fn heap_sort(a: &mut [(u32, u32)], first: usize, mut last: usize) {
    let len = last - first;
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let val = a[first + parent];
            adjust_heap(a, first, parent, len, val);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    while last - first > 1 {
        last -= 1;
        let val = a[last];
        a[last] = a[first];
        adjust_heap(a, first, 0, last - first, val);
    }
}

/// libstdc++'s `__adjust_heap` with its `__push_heap`.
fn adjust_heap(a: &mut [(u32, u32)], first: usize, mut hole: usize, len: usize, val: (u32, u32)) {
    let top = hole;
    let mut child = hole;
    while child < len.saturating_sub(1) / 2 {
        child = 2 * (child + 1);
        if less(a[first + child], a[first + child - 1]) {
            child -= 1;
        }
        a[first + hole] = a[first + child];
        hole = child;
    }
    if len % 2 == 0 && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        a[first + hole] = a[first + child - 1];
        hole = child - 1;
    }
    while hole > top {
        let parent = (hole - 1) / 2;
        if !less(a[first + parent], val) {
            break;
        }
        a[first + hole] = a[first + parent];
        hole = parent;
    }
    a[first + hole] = val;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The result is a permutation that sorts the keys, whatever path (insertion, introsort,
    /// heapsort) it takes.
    #[test]
    fn sorts_every_size() {
        let mut seed = 12345u64;
        for n in [0usize, 1, 2, 5, 16, 17, 33, 100, 560, 1024, 3000] {
            for m in [1u32, 3, 64] {
                let keys: Vec<u32> = (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((seed >> 33) as u32) % m
                    })
                    .collect();
                let perm = torch_sort_indices(&keys);
                let mut seen = vec![false; n];
                perm.iter().for_each(|&i| seen[i as usize] = true);
                assert!(seen.iter().all(|&s| s), "n {n}");
                assert!(perm
                    .windows(2)
                    .all(|p| keys[p[0] as usize] <= keys[p[1] as usize]));
            }
        }
        // The heapsort fallback sorts too.
        let mut a: Vec<(u32, u32)> = (0..50u32).map(|i| ((i * 37) % 11, i)).collect();
        heap_sort(&mut a, 3, 47);
        assert!(a[3..47].windows(2).all(|p| p[0].0 <= p[1].0));
    }

    /// torch 2.x (`torch.sort(k, stable=False)` on CPU) for k = [i·7 mod 3 for i in 0..40]:
    /// ties are not in index order.
    #[test]
    fn matches_torch_on_ties() {
        let keys: Vec<u32> = (0..40u32).map(|i| (i * 7) % 3).collect();
        let perm = torch_sort_indices(&keys);
        assert_eq!(perm.len(), 40);
        assert_eq!(perm, TORCH);
    }

    const TORCH: &[u32] = &[
        0, 21, 18, 24, 15, 27, 12, 30, 9, 33, 6, 36, 3, 39, 31, 34, 28, 37, 25, 22, 1, 19, 16, 4,
        13, 7, 10, 2, 20, 38, 5, 35, 8, 32, 11, 29, 14, 26, 17, 23,
    ];
}
