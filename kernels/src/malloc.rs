//! glibc malloc settings for the kernels' big output buffers: blocks of every size kept for
//! reuse instead of unmapped on free. The policy (when to call it, the `DIFFSR_MALLOC` choice)
//! is `diffsr::memory::tune_allocator`'s; this is only the `mallopt` call, kept here with the
//! project's other `unsafe` code.

/// Turns glibc's mmap threshold off (every block comes from the heap, freed ones are reused)
/// and trims the top of the heap only beyond `trim_threshold_bytes`. True when glibc accepted
/// both settings; false where the allocator is not glibc's.
pub fn keep_freed_blocks(trim_threshold_bytes: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two plain integers and only changes malloc's tunables;
        // M_MMAP_MAX and M_TRIM_THRESHOLD are documented parameters, and any non-negative
        // value (0 here, and a threshold the caller gives) is valid for them.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold_bytes) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = trim_threshold_bytes;
        false
    }
}
