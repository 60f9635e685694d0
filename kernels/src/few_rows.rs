//! y = x Wᵀ + b (+ residual, then an element-wise post-op) for few rows x (the text encoder's
//! 2 × 77 tokens, cross-attention keys and values) with the weight W as the hub stores it,
//! (out, in).
//!
//! The `gemm` crate's kernels write column-major tiles. Asked for a row-major y, it computes
//! yᵀ, and with the weight held (in, out) that reads W against its grain. Here each thread
//! takes a band of output columns (W's rows, contiguous in (out, in)) and computes its band
//! of yᵀ = W_band xᵀ column-major into a scratch buffer, the layout the kernels prefer, then
//! writes it transposed into y's band while it is in cache, adding the bias and residual and
//! running the post-op. Measured on the text encoder's shapes, 12 weights cycled so that they
//! come from memory as in the model (2 threads): 154 × 1024 × 1024 1.68 → 1.32 ms,
//! 154 × 1024 × 4096 5.15 → 4.82 ms, 154 × 4096 × 1024 5.06 → 4.87 ms.
//!
//! Each band's scratch is allocated per call, uninitialised (the GEMM overwrites it): freed
//! blocks of that size are reused by the allocator, and no state is kept between calls.

use crate::epilogue::store_row;
use crate::matmul::{gemm_strided, RowPost, Strided};
use crate::parallel::{for_each_span, SharedMut};

/// Side of the blocks the band is transposed in.
const BLOCK: usize = 16;

/// Fewest output columns a band gets.
const MIN_BAND_COLS: usize = 64;

/// The operands of one few-rows linear layer.
pub(crate) struct FewRows<'a> {
    /// (m, k) row-major.
    pub x: &'a [f32],
    /// (n, k) row-major: W as stored.
    pub w: &'a [f32],
    /// n values.
    pub bias: Option<&'a [f32]>,
    /// (m, n) row-major.
    pub residual: Option<&'a [f32]>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// out (m, n) row-major = x Wᵀ + bias + residual, then `post` on every row stretch. Writes
/// every one of out's m·n elements (it may be uninitialised memory).
///
/// # Safety
/// `out` must address m·n f32 slots that no other thread accesses meanwhile.
pub(crate) unsafe fn few_rows_gemm(p: &FewRows, out: &SharedMut, threads: usize, post: RowPost) {
    let FewRows { m, k, n, .. } = *p;
    assert!(p.x.len() >= m * k && p.w.len() >= n * k);
    assert!(p.bias.is_none_or(|b| b.len() >= n));
    assert!(p.residual.is_none_or(|r| r.len() >= m * n));
    if m == 0 || n == 0 {
        return;
    }
    let bands = threads.min(n / MIN_BAND_COLS).max(1);
    let per = n.div_ceil(bands).next_multiple_of(BLOCK);
    for_each_span(n, per, |cols| {
        // SAFETY: the caller hands out's m·n slots to this call; band `cols` writes only its
        // own columns of each row.
        unsafe { band_into(p, cols.start, cols.len(), out, post) }
    });
}

/// One band: columns c0..c0 + cols of the output, through an m × cols scratch.
///
/// # Safety
/// As [`few_rows_gemm`], and no other band writes columns c0..c0 + cols.
unsafe fn band_into(p: &FewRows, c0: usize, cols: usize, out: &SharedMut, post: RowPost) {
    let FewRows { m, k, n, .. } = *p;
    let mut scratch: Vec<f32> = Vec::with_capacity(m * cols);
    // SAFETY: scratch's capacity holds m × cols values column-major (element (i, j) at
    // j·m + i), written without being read; x is m × k row-major inside p.x (asserted ≥ m·k);
    // W_bandᵀ (k × cols) is read from W's rows c0..c0 + cols (element (kk, j) at
    // (c0 + j)·k + kk < n·k ≤ p.w.len()).
    unsafe {
        gemm_strided(
            (m, cols, k),
            (
                scratch.spare_capacity_mut().as_mut_ptr().cast(),
                1,
                m as isize,
            ),
            false,
            Strided::rows(p.x.as_ptr(), k),
            Strided::transposed(p.w.as_ptr().add(c0 * k), k),
            gemm::Parallelism::None,
        );
    }
    // SAFETY: the GEMM above wrote all m·cols values (with k = 0 it writes zeros).
    unsafe { scratch.set_len(m * cols) };
    let mut block = [0f32; BLOCK];
    for r0 in (0..m).step_by(BLOCK) {
        for j0 in (0..cols).step_by(BLOCK) {
            let j1 = (j0 + BLOCK).min(cols);
            let gathered = &mut block[..j1 - j0];
            for r in r0..(r0 + BLOCK).min(m) {
                for (j, d) in (j0..j1).zip(gathered.iter_mut()) {
                    *d = scratch[j * m + r];
                }
                let at = r * n + c0 + j0;
                // SAFETY: columns c0 + j0..c0 + j1 of row r < m lie inside out's m·n slots
                // and belong to this band alone.
                let row = unsafe { out.part(at, j1 - j0) };
                let bias = p.bias.map(|b| &b[c0 + j0..c0 + j1]);
                let res = p.residual.map(|res| &res[at..at + j1 - j0]);
                store_row(row, gathered, bias, res, None);
            }
        }
    }
    if let Some(post) = post {
        for r in 0..m {
            // SAFETY: as above; the whole band of row r was written by the loop above.
            post(unsafe { out.part(r * n + c0, cols) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_plain_product() {
        fn half(row: &mut [f32]) {
            row.iter_mut().for_each(|v| *v *= 0.5)
        }
        for (m, k, n, threads) in [
            (7usize, 33usize, 200usize, 2usize),
            (154, 64, 130, 3),
            (3, 5, 1, 1),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let residual: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
            let p = FewRows {
                x: &x,
                w: &w,
                bias: Some(&bias),
                residual: Some(&residual),
                m,
                k,
                n,
            };
            let mut out = vec![f32::NAN; m * n];
            // SAFETY: out holds m·n values, used by this call alone.
            unsafe { few_rows_gemm(&p, &SharedMut::new(&mut out), threads, Some(half)) };
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
                    let want = 0.5 * (dot + bias[j] + residual[i * n + j]);
                    assert_eq!(out[i * n + j], want, "({i}, {j}) of {m}×{k}×{n}");
                }
            }
        }
    }
}
