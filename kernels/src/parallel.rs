//! The one way the kernels of this crate run in parallel: on the rayon pool that candle and
//! gemm already use. Its threads are already running, so a call costs a wake-up, where
//! spawning OS threads per call cost 20–50 µs each (a third of the text encoder's small
//! attention products).
//!
//! Three shapes of work:
//! - [`for_each_index`]: uneven work items (convolution row chunks, Winograd blocks, attention
//!   slices) taken one at a time from a shared counter by `threads` workers, each with its own
//!   scratch state;
//! - [`for_each_chunk_mut`]: an output buffer cut into equal chunks, one task each (groups of
//!   a norm, rows of a softmax or GEGLU);
//! - [`for_each_span`]: 0..n cut into spans, one task each, for outputs written through
//!   strided views (GEMM column bands, rows of transformed weights), with [`SharedMut`].
//!
//! In each the first piece runs on the calling thread.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many elements of element-wise work a kernel stays on the calling thread:
/// waking the pool costs more than it saves.
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// Threads worth using for `elems` elements of element-wise work split into at most `items`
/// pieces: at most `threads`, one per [`PARALLEL_MIN_ELEMS`] elements, at least one.
pub(crate) fn threads_for(threads: usize, items: usize, elems: usize) -> usize {
    threads
        .min(items)
        .min(elems.div_ceil(PARALLEL_MIN_ELEMS))
        .max(1)
}

/// Runs `work(scratch, i)` for every i in 0..n on up to `threads` threads, each taking the next
/// index from a shared counter and keeping one `scratch()` for all the items it takes. With
/// one thread the items run in order on the calling thread.
pub(crate) fn for_each_index<S>(
    threads: usize,
    n: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) + Sync,
) {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        let mut s = scratch();
        (0..n).for_each(|i| work(&mut s, i));
        return;
    }
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut s = scratch();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            work(&mut s, i);
        }
    };
    rayon::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| worker());
        }
        worker();
    });
}

/// Runs `work(i, chunk)` for the i-th `chunk`-long piece of `out` (the last may be shorter),
/// each piece a task on the pool. One piece runs on the calling thread without waking the pool.
pub(crate) fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    work: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        if !out.is_empty() {
            work(0, out);
        }
        return;
    }
    rayon::scope(|scope| {
        let mut pieces = out.chunks_mut(chunk).enumerate();
        let first = pieces.next();
        for (i, piece) in pieces {
            let work = &work;
            scope.spawn(move |_| work(i, piece));
        }
        if let Some((i, piece)) = first {
            work(i, piece);
        }
    });
}

/// Runs `work(range)` for the spans 0..span, span..2·span, … of 0..n (the last may be shorter),
/// each a task on the pool. One span runs on the calling thread without waking the pool.
pub(crate) fn for_each_span(n: usize, span: usize, work: impl Fn(Range<usize>) + Sync) {
    let span = span.max(1);
    if n <= span {
        if n > 0 {
            work(0..n);
        }
        return;
    }
    rayon::scope(|scope| {
        for start in (span..n).step_by(span) {
            let work = &work;
            scope.spawn(move |_| work(start..(start + span).min(n)));
        }
        work(0..span);
    });
}

/// A pointer into an output buffer that several threads write disjoint parts of.
pub(crate) struct SharedMut(*mut f32);

// SAFETY: the pointer is only dereferenced through `part` and `ptr`, whose callers guarantee
// that the elements they touch are inside the buffer and touched by no other thread meanwhile.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: shared use only hands out disjoint element ranges.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The elements of `buf`.
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// A buffer known only by its address (a GEMM destination handed down as a pointer).
    pub(crate) fn from_raw(ptr: *mut f32) -> Self {
        Self(ptr)
    }

    /// The spare capacity of `buf`, for threads that each write their part of it; the caller
    /// calls `set_len` once every element is written.
    pub(crate) fn spare_capacity(buf: &mut Vec<f32>) -> Self {
        Self(buf.spare_capacity_mut().as_mut_ptr().cast::<f32>())
    }

    /// `len` elements from `start`, for writing.
    ///
    /// # Safety
    /// The range must lie inside the buffer this was made from (in its initialised part: it
    /// is read as f32 values), the buffer must outlive the slice, and no other thread may
    /// access the range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, start: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller guarantees the range is in bounds, initialised and exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }

    /// The address of element `start`, for writes through strided views (GEMM outputs) or raw
    /// copies.
    ///
    /// # Safety
    /// `start` must lie inside the buffer (or one past its end), and every element written
    /// through the pointer must be inside it and written by this thread alone.
    pub(crate) unsafe fn ptr(&self, start: usize) -> *mut f32 {
        // SAFETY: the caller guarantees `start` is within the allocation.
        unsafe { self.0.add(start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_runs_once() {
        for threads in [1, 2, 5] {
            for n in [0usize, 1, 7, 100] {
                let seen = Mutex::new(vec![0u32; n]);
                for_each_index(threads, n, || (), |_, i| seen.lock().unwrap()[i] += 1);
                assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));

                let seen = Mutex::new(vec![0u32; n]);
                for_each_span(n, 3, |r| {
                    assert!(r.len() <= 3 && !r.is_empty());
                    r.for_each(|i| seen.lock().unwrap()[i] += 1);
                });
                assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));

                let mut out = vec![0usize; n];
                for_each_chunk_mut(&mut out, 4, |i, chunk| {
                    for (j, v) in chunk.iter_mut().enumerate() {
                        *v = 4 * i + j + 1;
                    }
                });
                assert_eq!(out, (1..=n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn thread_counts() {
        assert_eq!(threads_for(8, 100, 10), 1);
        assert_eq!(threads_for(8, 100, 3 * PARALLEL_MIN_ELEMS), 3);
        assert_eq!(threads_for(8, 2, 100 * PARALLEL_MIN_ELEMS), 2);
        assert_eq!(threads_for(8, 0, 0), 1);
    }
}
