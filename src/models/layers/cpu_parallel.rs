//! Sharing one output buffer between the threads of a CPU kernel (convolution, Winograd,
//! small attention): each thread takes work items from a shared counter and writes the
//! disjoint part of the output that item owns.

/// A pointer into an output buffer that several threads write disjoint parts of.
pub(crate) struct SharedMut(*mut f32);

// SAFETY: the pointer is only turned into slices through `part`, whose callers guarantee
// that no two threads touch the same elements.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// The range must lie inside the buffer this was made from, the buffer must outlive the
    /// slice, and no other thread may access the range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, start: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

impl SharedMut {
    /// The capacity of `buf`, for threads that write every element before `set_len`.
    pub(crate) fn spare_capacity(buf: &mut Vec<f32>) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// The address of element `start`, for writes through strided views (GEMM outputs).
    ///
    /// # Safety
    /// As [`SharedMut::part`] for every element written through it.
    pub(crate) unsafe fn ptr(&self, start: usize) -> *mut f32 {
        self.0.add(start)
    }
}

/// Runs `work` `threads` times at once on the rayon pool candle and gemm already use, and
/// returns when all are done. The pool's threads are already running: a call costs a wake-up,
/// where spawning OS threads per call cost 20–50 µs each (a third of the text encoder's small
/// attention products).
pub(crate) fn on_threads(threads: usize, work: impl Fn() + Sync) {
    if threads <= 1 {
        return work();
    }
    rayon::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| work());
        }
        work();
    });
}
