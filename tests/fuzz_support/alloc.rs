//! The fuzz test binary's global allocator: the system allocator, with a cap on any single
//! allocation while a case runs. A request over the cap fails the case (the harness reads
//! [`disarm`]'s answer) and, the first time in a case, saves the input at once through
//! [`super::harness::on_oversize`], because the allocation may be refused and a refused
//! infallible allocation aborts the process. Requests over a second, higher limit are refused
//! (null), as a machine without that much memory would: `try_reserve` then sees an error, and
//! anything else aborts with the input already saved.
//!
//! Only this test binary installs it; the library's own allocations are untouched elsewhere.

use std::cell::Cell;

use diffsr_kernels::gated_alloc::GatedAllocator;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, capped while a case runs (the allocator itself is the kernel
/// crate's `GatedAllocator`; this file is its gate).
pub const CAPPED_ALLOCATOR: GatedAllocator = GatedAllocator::new(admit);

/// The largest single allocation a case may make (`usize::MAX` between cases).
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Requests above this are refused.
static REFUSE_ABOVE: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The largest request over [`CAP`] since [`arm`] (0: none).
static LARGEST_OVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while an oversize request is being reported, so the report's own allocations pass.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// Caps single allocations at `cap` bytes and refuses those over `refuse_above`.
pub fn arm(cap: usize, refuse_above: usize) {
    LARGEST_OVER.store(0, Relaxed);
    REFUSE_ABOVE.store(refuse_above.max(cap), Relaxed);
    CAP.store(cap, Relaxed);
}

/// Lifts the cap; the largest request over it since [`arm`], if any.
pub fn disarm() -> Option<usize> {
    CAP.store(usize::MAX, Relaxed);
    REFUSE_ABOVE.store(usize::MAX, Relaxed);
    let over = LARGEST_OVER.swap(0, Relaxed);
    (over > 0).then_some(over)
}

/// Whether a request of `size` bytes is served.
fn admit(size: usize) -> bool {
    if size <= CAP.load(Relaxed) {
        return true;
    }
    // Inside a report, or while the thread is being torn down: serve, do not report.
    let reentered = REPORTING.try_with(|r| r.replace(true)).unwrap_or(true);
    if reentered {
        return true;
    }
    let first = LARGEST_OVER.fetch_max(size, Relaxed) == 0;
    let refused = size > REFUSE_ABOVE.load(Relaxed);
    if first {
        super::harness::on_oversize(size, refused);
    }
    REPORTING.with(|r| r.set(false));
    !refused
}
