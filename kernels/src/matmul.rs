//! The one call into the `gemm` crate that the kernels share (convolution routes, linear
//! layers, Winograd, small attention): f32, no conjugation, accumulating onto the destination
//! or overwriting it; and [`matmul_threaded`], which splits few-row products into column
//! bands.

use crate::parallel::{for_each_span, SharedMut};

/// A strided f32 matrix operand: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a `Strided` only describes where an operand lies; it is dereferenced (read) only
// inside `matmul` / `gemm_strided`, whose callers guarantee the operand is valid and not
// written while any thread reads it.
unsafe impl Send for Strided {}
// SAFETY: as for `Send`: threads sharing one only read through it.
unsafe impl Sync for Strided {}

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

    /// The same matrix from column `c` on.
    ///
    /// # Safety
    /// Column `c` must start inside the operand's buffer.
    unsafe fn starting_at_col(self, c: usize) -> Self {
        Self {
            // SAFETY: the caller guarantees the offset stays inside the buffer.
            ptr: unsafe { self.ptr.offset(c as isize * self.cs) },
            ..self
        }
    }
}

/// dst (m × n, rows `dst_rs` apart) = lhs (m × k) · rhs (k × n), plus dst's own values when
/// `accumulate` (otherwise dst is only written, never read).
///
/// # Safety
/// Every element the three views address for these sizes must lie in its buffer, dst must not
/// overlap lhs or rhs, and no other thread may access dst's elements meanwhile.
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's guarantees are gemm_strided's.
    unsafe {
        gemm_strided(
            (m, n, k),
            (dst, dst_rs as isize, 1),
            accumulate,
            lhs,
            rhs,
            parallelism,
        )
    }
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
    // SAFETY: the caller guarantees every addressed element of dst, lhs and rhs is inside its
    // buffer and that dst is written by this call alone; gemm reads dst only with `read_dst`.
    unsafe {
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
        )
    }
}

/// `gemm`'s own parallelism for `threads` threads.
pub(crate) fn gemm_parallelism(threads: usize) -> gemm::Parallelism {
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Columns per thread below which splitting a GEMM's columns costs more than it gains.
const MIN_SPLIT_COLS: usize = 64;
/// Row count up to which [`matmul_threaded`] splits columns rather than leaving the split to
/// `gemm`.
const SMALL_M: usize = 512;

/// What runs on each finished stretch of a destination row (an element-wise activation),
/// while the band is still in cache.
pub(crate) type RowPost = Option<fn(&mut [f32])>;

/// [`matmul`] on `threads` threads, then `post` on every row stretch of dst. With few rows
/// (the text encoder's 77–154, cross-attention keys and values), `gemm`'s own split leaves
/// threads waiting on each other inside one packed panel (measured 142–153 GFLOP/s on
/// 77 × 1024 × 1024 and 77 × 4096 × 1024 at 2 threads); giving each thread a band of output
/// columns and a single-threaded GEMM reaches 212–252, and the band's `post` runs while it is
/// in cache. With many rows `gemm` splits them itself, which is as fast.
///
/// # Safety
/// As [`matmul`]; when `accumulate` is false dst may be uninitialised memory (it is written
/// before `post` reads it).
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
        // SAFETY: the caller's guarantees for the whole product.
        unsafe { matmul((m, n, k), dst, dst_rs, accumulate, lhs, rhs, par) };
        if let Some(post) = post {
            for i in 0..m {
                // SAFETY: row i's n elements are inside dst and were written by the GEMM.
                post(unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n) });
            }
        }
        return;
    }
    // Bands of whole 16-column vectors, the last taking the remainder.
    let per = n.div_ceil(bands).next_multiple_of(16);
    let out = SharedMut::from_raw(dst);
    for_each_span(n, per, |cols| {
        let (c0, width) = (cols.start, cols.len());
        // SAFETY: column c0 < n of rhs lies inside its buffer (the caller's guarantee).
        let b = unsafe { rhs.starting_at_col(c0) };
        // SAFETY: this band writes columns c0..c0 + width of dst's m rows, which no other band
        // touches; every element addressed is inside the caller's buffers.
        unsafe {
            matmul(
                (m, width, k),
                out.ptr(c0),
                dst_rs,
                accumulate,
                lhs,
                b,
                gemm::Parallelism::None,
            )
        };
        if let Some(post) = post {
            for i in 0..m {
                // SAFETY: row i's columns c0..c0 + width belong to this band and were just
                // written by its GEMM.
                post(unsafe { out.part(i * dst_rs + c0, width) });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (m × k) · (k × n) by the triple loop, in f64.
    fn naive(
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum();
            }
        }
        out
    }

    /// The column bands (uneven last band, a strided right operand, accumulation, the row
    /// post-op) against a plain triple loop.
    #[test]
    fn column_bands_equal_the_plain_product() {
        let (m, n, k) = (100, 300, 70);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        // Bᵀ stored (n, k): the right operand read transposed.
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        fn double(row: &mut [f32]) {
            row.iter_mut().for_each(|v| *v *= 2.0)
        }
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
                        Some(double),
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

    /// Strided operands (a sub-matrix of a wider buffer, a transposed one) and a column-major
    /// destination with padding between its columns, against the triple loop.
    #[test]
    fn strided_operands_equal_the_triple_loop() {
        let (m, n, k) = (13, 37, 29);
        // lhs: rows of a (m, k + 5) buffer, starting at column 3.
        let wide_k = k + 5;
        let a: Vec<f32> = (0..m * wide_k)
            .map(|i| ((i * 11) % 17) as f32 * 0.25 - 2.0)
            .collect();
        // rhs: the transpose of an (n, k) buffer.
        let bt: Vec<f32> = (0..n * k)
            .map(|i| ((i * 3) % 7) as f32 * 0.5 - 1.5)
            .collect();
        let want = naive(|i, p| a[i * wide_k + 3 + p], |p, j| bt[j * k + p], m, n, k);
        // dst column-major with column stride m + 2.
        let cs = m + 2;
        let mut dst = vec![f32::NAN; n * cs];
        // SAFETY: lhs addresses rows i < m, columns 3..3 + k of a; rhs elements (p, j) at
        // j·k + p < n·k; dst elements (i, j) at i + j·cs < n·cs.
        unsafe {
            gemm_strided(
                (m, n, k),
                (dst.as_mut_ptr(), 1, cs as isize),
                false,
                Strided::rows(a.as_ptr().add(3), wide_k),
                Strided::transposed(bt.as_ptr(), k),
                gemm::Parallelism::None,
            );
        }
        for i in 0..m {
            for j in 0..n {
                let got = dst[i + j * cs] as f64;
                assert!((got - want[i * n + j]).abs() < 1e-3, "({i}, {j})");
            }
        }
        // The padding between the columns is left alone.
        assert!(dst[m].is_nan() && dst[m + 1].is_nan());
        // Accumulating, row-major, multi-threaded: dst += lhs · rhs.
        let mut acc = vec![0.5f32; m * n];
        // SAFETY: as above, dst row-major m × n.
        unsafe {
            matmul(
                (m, n, k),
                acc.as_mut_ptr(),
                n,
                true,
                Strided::rows(a.as_ptr().add(3), wide_k),
                Strided::transposed(bt.as_ptr(), k),
                gemm_parallelism(3),
            );
        }
        for (g, w) in acc.iter().zip(&want) {
            assert!((*g as f64 - (w + 0.5)).abs() < 1e-3);
        }
    }
}
