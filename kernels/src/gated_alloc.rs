//! A global allocator that asks a gate before serving each request: the system allocator,
//! except that a request the gate turns down gets null (a failed allocation, which
//! `try_reserve` reports as an error and anything else turns into the usual abort). The fuzz
//! tests install it with a gate that caps single allocations, so a reader that sizes a buffer
//! from a crafted file is caught; it lives here because implementing `GlobalAlloc` takes
//! `unsafe`, which this crate alone holds, under its lints.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator behind a gate: `admit(size)` says whether a request of `size` bytes
/// (an allocation, or a reallocation's new size) is served. Frees are always served.
pub struct GatedAllocator {
    admit: fn(usize) -> bool,
}

impl GatedAllocator {
    /// An allocator serving the requests `admit` lets through. `admit` runs inside the
    /// allocator: what it allocates itself comes back through it (a gate must let those pass).
    pub const fn new(admit: fn(usize) -> bool) -> Self {
        Self { admit }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, or returns
// null, which `GlobalAlloc` allows for any failed allocation; `dealloc` always forwards, so
// every block `System` handed out goes back to it.
unsafe impl GlobalAlloc for GatedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if (self.admit)(layout.size()) {
            // SAFETY: the caller's contract for `alloc` (a non-zero-size layout) is passed on.
            unsafe { System.alloc(layout) }
        } else {
            std::ptr::null_mut()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if (self.admit)(layout.size()) {
            // SAFETY: as `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        } else {
            std::ptr::null_mut()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout` (the
        // caller's contract), since every block this allocator hands out is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if (self.admit)(new_size) {
            // SAFETY: `ptr` and `layout` are `System`'s (as in `dealloc`); the caller's
            // contract on `new_size` is passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            std::ptr::null_mut()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn below_a_kib(size: usize) -> bool {
        size < 1024
    }

    #[test]
    fn the_gate_decides_and_frees_always_pass() {
        let gated = GatedAllocator::new(below_a_kib);
        let small = Layout::from_size_align(64, 8).unwrap();
        let large = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: non-zero layouts; the block is freed with the layout it was made with.
        unsafe {
            assert!(gated.alloc(large).is_null());
            let p = gated.alloc_zeroed(small);
            assert!(!p.is_null() && *p == 0);
            assert!(gated.realloc(p, small, 4096).is_null());
            let q = gated.realloc(p, small, 128);
            assert!(!q.is_null());
            gated.dealloc(q, Layout::from_size_align(128, 8).unwrap());
        }
    }
}
