//! The one call into the `gemm` crate that the CPU kernels share (convolution routes, linear
//! layers, Winograd, small attention): f32, no conjugation, the destination's columns
//! contiguous, accumulating onto it or overwriting it.

/// A strided f32 matrix operand: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Strided {
    /// A matrix stored row by row with `row_stride` elements between rows.
    pub fn rows(ptr: *const f32, row_stride: usize) -> Self {
        Self {
            ptr,
            rs: row_stride as isize,
            cs: 1,
        }
    }

    /// The transpose of a matrix stored row by row with `row_stride` elements between rows.
    pub fn transposed(ptr: *const f32, row_stride: usize) -> Self {
        Self {
            ptr,
            rs: 1,
            cs: row_stride as isize,
        }
    }
}

/// dst (m × n, rows `dst_rs` apart) = lhs (m × k) · rhs (k × n), plus dst's own values when
/// `accumulate`.
///
/// # Safety
/// Every element the three views address for these sizes must lie in its buffer, and dst must
/// not overlap lhs or rhs.
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}
