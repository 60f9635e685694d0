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
    gemm_strided(
        (m, n, k),
        (dst, dst_rs as isize, 1),
        accumulate,
        lhs,
        rhs,
        parallelism,
    );
}

/// [`matmul`] with any destination strides: `dst` = (pointer, row stride, column stride).
///
/// # Safety
/// As [`matmul`].
pub(crate) unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (*mut f32, isize, isize),
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
        dst_cs,
        dst_rs,
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

/// Columns per thread below which splitting a GEMM's columns costs more than it gains.
const MIN_SPLIT_COLS: usize = 64;
/// Row count up to which [`matmul_threaded`] splits columns rather than leaving the split to
/// `gemm`.
const SMALL_M: usize = 512;

/// What runs on each finished stretch of a destination row (an element-wise activation, say),
/// while the band is still in cache.
pub(crate) type RowPost<'a> = Option<&'a (dyn Fn(&mut [f32]) + Sync)>;

/// [`matmul`] on `threads` threads, then `post` on every row stretch of dst. With few rows
/// (the text encoder's 77–154, cross-attention keys and values), `gemm`'s own split leaves
/// threads waiting on each other inside one packed panel (measured 142–153 GFLOP/s on
/// 77 × 1024 × 1024 and 77 × 4096 × 1024 at 2 threads); giving each thread a band of output
/// columns and a single-threaded GEMM reaches 212–252, and the band's `post` runs while it is
/// in cache. With many rows `gemm` splits them itself, which is as fast.
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_threaded(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    threads: usize,
    post: RowPost,
) {
    let threads = threads.max(1);
    let small = threads == 1 || m * n * k < 1 << 18;
    let bands = threads.min(n / MIN_SPLIT_COLS);
    if small || m > SMALL_M || bands < 2 {
        let par = if small {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        matmul((m, n, k), dst, dst_rs, accumulate, lhs, rhs, par);
        if let Some(post) = post {
            for i in 0..m {
                post(std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n));
            }
        }
        return;
    }
    // Bands of whole 16-column vectors, the last taking the remainder.
    let per = n.div_ceil(bands).next_multiple_of(16);
    let (dst, lhs, rhs) = (SendPtr(dst), SendConst(lhs), SendConst(rhs));
    rayon::scope(|scope| {
        for band in 0..bands {
            let c0 = band * per;
            if c0 >= n {
                break;
            }
            let cols = per.min(n - c0);
            let (dst, lhs, rhs) = (&dst, &lhs, &rhs);
            scope.spawn(move |_| {
                // SAFETY: band `band` writes columns c0..c0 + cols of dst only; the caller
                // guarantees every addressed element is in bounds.
                unsafe {
                    let rhs = rhs.0;
                    let b = Strided {
                        ptr: rhs.ptr.offset(c0 as isize * rhs.cs),
                        ..rhs
                    };
                    matmul(
                        (m, cols, k),
                        dst.0.add(c0),
                        dst_rs,
                        accumulate,
                        lhs.0,
                        b,
                        gemm::Parallelism::None,
                    );
                    if let Some(post) = post {
                        for i in 0..m {
                            post(std::slice::from_raw_parts_mut(
                                dst.0.add(i * dst_rs + c0),
                                cols,
                            ));
                        }
                    }
                }
            });
        }
    });
}

/// The destination pointer, handed to the pool's threads (each writes its own columns).
struct SendPtr(*mut f32);
// SAFETY: the bands of `matmul_threaded` write disjoint columns.
unsafe impl Sync for SendPtr {}
/// A read-only operand handed to the pool's threads.
struct SendConst(Strided);
// SAFETY: only read.
unsafe impl Sync for SendConst {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column bands (uneven last band, a strided right operand, accumulation, the row
    /// post-op) against a plain triple loop.
    #[test]
    fn column_bands_equal_the_plain_product() {
        let (m, n, k) = (100, 300, 70);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        // Bᵀ stored (n, k): the right operand read transposed.
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        for threads in [1, 2, 3, 5] {
            for accumulate in [false, true] {
                let mut dst = vec![1f32; m * n];
                // SAFETY: all three views lie in their buffers.
                unsafe {
                    matmul_threaded(
                        (m, n, k),
                        dst.as_mut_ptr(),
                        n,
                        accumulate,
                        Strided::rows(a.as_ptr(), k),
                        Strided::transposed(bt.as_ptr(), k),
                        threads,
                        Some(&|row: &mut [f32]| row.iter_mut().for_each(|v| *v *= 2.0)),
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                        // The post-op (doubling) runs once on every element.
                        let want = 2.0 * (dot + if accumulate { 1.0 } else { 0.0 });
                        assert_eq!(dst[i * n + j], want, "({i}, {j}), {threads} threads");
                    }
                }
            }
        }
    }
}
