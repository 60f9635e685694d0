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

/// Runs `work` on `threads` threads, the calling one included, and returns when all are done.
pub(crate) fn on_threads(threads: usize, work: impl Fn() + Sync) {
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            scope.spawn(&work);
        }
        work();
    });
}
