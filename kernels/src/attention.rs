//! softmax(scale · q kᵀ) v for many small (batch × head) slices: the slices are spread over
//! the threads, each computed with single-threaded GEMMs and the vectorised row softmax in
//! between, optionally with a causal mask (CLIP's text tower). The heads are read and written
//! in place in (batch, l, heads·d) buffers through strided GEMM operands, so the
//! (batch, heads, l, d) copies around the product (three in, one out) are never made.
//!
//! candle's batched matmul runs the slices one after another, each GEMM split over the thread
//! pool: for the UNet's cross-attention (16 slices of tokens × 64 against 77 keys) and CLIP's
//! (32 slices of 77 × 64) the pool's wake-ups cost more than the arithmetic. One slice at a
//! time per thread has no such cost. Large single slices (the VAE's one-head attention over
//! every latent pixel) are better left to one GEMM using every thread: see [`suits`].

use crate::fast_math::softmax_row;
use crate::matmul::{matmul, Strided};
use crate::parallel::{for_each_index, SharedMut};

/// Slices at least this small (lq·lk·d multiply-adds) are worth spreading one per thread even
/// when there are fewer slices than threads.
const SMALL_SLICE: usize = 1 << 20;

/// Slices (batch, head) of (batch, l, heads·d) buffers; heads = 1 is (batch, l, d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    /// Queries per slice.
    pub lq: usize,
    /// Keys (and values) per slice.
    pub lk: usize,
    /// Query / key width per head.
    pub d: usize,
    /// Value width per head.
    pub dv: usize,
}

/// Whether this problem suits [`attention`] on `threads` threads: slices to spread, or slices
/// small enough that one thread each beats a parallel GEMM; and nothing empty.
pub fn suits(s: &AttentionShape, threads: usize) -> bool {
    let n = s.batch * s.heads;
    n > 0 && s.lq > 0 && s.lk > 0 && !(n < threads && s.lq * s.lk * s.d > SMALL_SLICE)
}

/// softmax(scale · q kᵀ) v per head for q (batch, lq, heads·d), k (batch, lk, heads·d) and
/// v (batch, lk, heads·dv), into (batch, lq, heads·dv). With `causal`, query i sees keys
/// j ≤ i + (lk − lq).
///
/// # Panics
/// When a buffer's length does not match the shape.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &AttentionShape,
    scale: f32,
    causal: bool,
    threads: usize,
) -> Vec<f32> {
    let AttentionShape {
        batch,
        heads,
        lq,
        lk,
        d,
        dv,
    } = *s;
    assert_eq!(q.len(), batch * lq * heads * d);
    assert_eq!(k.len(), batch * lk * heads * d);
    assert_eq!(v.len(), batch * lk * heads * dv);
    let n = batch * heads;
    let mut out = vec![0f32; batch * lq * heads * dv];
    if n == 0 || lq == 0 || dv == 0 {
        return out;
    }
    let shared = SharedMut::new(&mut out);
    let (qrs, vrs) = (heads * d, heads * dv);
    let slice = |scores: &mut Vec<f32>, i: usize| {
        let (bi, hi) = (i / heads, i % heads);
        let operands = SliceOperands {
            q: Strided::rows(q.as_ptr().wrapping_add(bi * lq * qrs + hi * d), qrs),
            k_t: Strided::transposed(k.as_ptr().wrapping_add(bi * lk * qrs + hi * d), qrs),
            v: Strided::rows(v.as_ptr().wrapping_add(bi * lk * vrs + hi * dv), vrs),
            // SAFETY: the offset is that of element (bi, 0, hi·dv), inside `out`.
            out: unsafe { shared.ptr(bi * lq * vrs + hi * dv) },
            out_rs: vrs,
        };
        // SAFETY: slice (bi, hi) reads rows of its batch entry and its head's columns of q
        // (lq × d), k (lk × d) and v (lk × dv), inside the buffers asserted above, and writes
        // only its head's columns of its batch entry's lq rows of `out`, which no other slice
        // writes.
        unsafe { slice_attention(&operands, scores, (lq, lk, d, dv), scale, causal) };
    };
    for_each_index(threads.clamp(1, n), n, || vec![0f32; lq * lk], slice);
    out
}

/// One slice's operands: q (lq × d), kᵀ (d × lk), v (lk × dv), out (lq × dv, rows `out_rs`
/// apart).
struct SliceOperands {
    q: Strided,
    k_t: Strided,
    v: Strided,
    out: *mut f32,
    out_rs: usize,
}

/// One slice: scores = scale · q kᵀ (lq × lk), masked, softmax per row, out = scores · v.
///
/// # Safety
/// The operands must address lq × d, d × lk, lk × dv and lq × dv elements inside their
/// buffers, `scores` must hold lq·lk values, and no other thread may access `out`'s elements.
unsafe fn slice_attention(
    o: &SliceOperands,
    scores: &mut [f32],
    (lq, lk, d, dv): (usize, usize, usize, usize),
    scale: f32,
    causal: bool,
) {
    // SAFETY: scores is lq × lk (row stride lk), this thread's own; q and kᵀ as the caller
    // guarantees.
    unsafe {
        matmul(
            (lq, lk, d),
            scores.as_mut_ptr(),
            lk,
            false,
            o.q,
            o.k_t,
            gemm::Parallelism::None,
        )
    };
    for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
        if scale != 1.0 {
            row.iter_mut().for_each(|v| *v *= scale);
        }
        if causal {
            let visible = (r + 1 + lk).saturating_sub(lq).min(lk);
            row[visible..].fill(f32::NEG_INFINITY);
        }
        softmax_row(row);
    }
    // SAFETY: out (lq × dv, rows out_rs apart) and v as the caller guarantees; scores is
    // lq × lk inside its buffer.
    unsafe {
        matmul(
            (lq, dv, lk),
            o.out,
            o.out_rs,
            false,
            Strided::rows(scores.as_ptr(), lk),
            o.v,
            gemm::Parallelism::None,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-heads formulation in f64: scores, mask, softmax, product, head by head.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: &AttentionShape,
        scale: f64,
        causal: bool,
    ) -> Vec<f64> {
        let AttentionShape {
            batch,
            heads,
            lq,
            lk,
            d,
            dv,
        } = *s;
        let mut out = vec![0f64; batch * lq * heads * dv];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let mut scores: Vec<f64> = (0..lk)
                        .map(|j| {
                            (0..d)
                                .map(|c| {
                                    q[(b * lq + i) * heads * d + h * d + c] as f64
                                        * k[(b * lk + j) * heads * d + h * d + c] as f64
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    if causal {
                        for (j, sc) in scores.iter_mut().enumerate() {
                            if j > i + lk - lq {
                                *sc = f64::NEG_INFINITY;
                            }
                        }
                    }
                    let m = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    let z: f64 = scores.iter().map(|&x| (x - m).exp()).sum();
                    for c in 0..dv {
                        out[(b * lq + i) * heads * dv + h * dv + c] = (0..lk)
                            .map(|j| {
                                (scores[j] - m).exp() / z
                                    * v[(b * lk + j) * heads * dv + h * dv + c] as f64
                            })
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((((i * 31 + seed * 17) % 97) as f32) * 0.021 - 1.0) * 1.3)
            .collect()
    }

    #[test]
    fn matches_the_split_heads_formulation() {
        for (batch, heads, lq, lk, d, dv, scale, causal, threads) in [
            (
                16usize, 1usize, 100usize, 77usize, 64usize, 64usize, 0.2f32, false, 2usize,
            ),
            (2, 16, 77, 77, 64, 64, 0.125, true, 3),
            (3, 1, 5, 9, 8, 4, 1.0, true, 1),
            // Causal against a longer key sequence (query i sees keys up to i + 10).
            (2, 1, 40, 50, 16, 8, 0.5, true, 2),
            (2, 4, 9, 9, 8, 8, 0.3, true, 4),
            (1, 1, 7, 7, 16, 16, 1.0, false, 2),
        ] {
            let s = AttentionShape {
                batch,
                heads,
                lq,
                lk,
                d,
                dv,
            };
            let q = values(batch * lq * heads * d, 1);
            let k = values(batch * lk * heads * d, 2);
            let v = values(batch * lk * heads * dv, 3);
            let got = attention(&q, &k, &v, &s, scale, causal, threads);
            let want = naive(&q, &k, &v, &s, scale as f64, causal);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 2e-5,
                    "{s:?} causal={causal} at {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn large_single_slices_do_not_suit() {
        let big = AttentionShape {
            batch: 1,
            heads: 1,
            lq: 2048,
            lk: 2048,
            d: 512,
            dv: 512,
        };
        assert!(!suits(&big, 2));
        assert!(suits(&big, 1));
        assert!(suits(&AttentionShape { batch: 4, ..big }, 2));
        assert!(!suits(&AttentionShape { lk: 0, ..big }, 1));
    }
}
