//! softmax(q kᵀ) v for many small (batch × head) slices on the CPU in f32: the slices are
//! spread over the threads, each computed with single-threaded GEMMs, the vectorised row
//! softmax of [`super::fast_math`] in between, optionally with a causal mask (CLIP's text
//! tower).
//!
//! candle's batched matmul runs the slices one after another, each GEMM split over the thread
//! pool: for the UNet's cross-attention (16 slices of tokens × 64 against 77 keys) and CLIP's
//! (32 slices of 77 × 64) the pool's wake-ups cost more than the arithmetic. One slice at a
//! time per thread has no such cost. Large single slices (the VAE's one-head attention over
//! every latent pixel) stay on candle's path, where one GEMM uses every thread.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};

use super::cpu_parallel::{on_threads, SharedMut};
use super::cpu_slice::f32_slice;
use super::fast_math::softmax_row;
use super::matmul::{matmul, Strided};

/// Slices at least this small (lq·lk·d multiply-adds) are worth spreading one per thread even
/// when there are fewer slices than threads' worth of them.
const SMALL_SLICE: usize = 1 << 20;

/// softmax(q kᵀ) v for q (n, lq, d) already scaled, k (n, lk, d), v (n, lk, dv), or `None`
/// when this problem belongs on candle's path (another device or dtype, or too few and too
/// large slices to spread). With `causal`, query i sees keys j ≤ i + (lk − lq).
pub fn attention_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
) -> candle_core::Result<Option<Tensor>> {
    let on_cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(on_cpu_f32(q) && on_cpu_f32(k) && on_cpu_f32(v)) {
        return Ok(None);
    }
    let (n, lq, d) = q.dims3()?;
    let (nk, lk, dk) = k.dims3()?;
    let (nv, lv, dv) = v.dims3()?;
    if nk != n || nv != n || dk != d || lv != lk || n == 0 || lq == 0 || lk == 0 {
        return Ok(None);
    }
    let threads = candle_core::utils::get_num_threads().max(1);
    if n < threads && lq * lk * d > SMALL_SLICE {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let layout = Heads {
        batch: n,
        heads: 1,
        lq,
        lk,
        d,
        dv,
    };
    run(&q, &k, &v, &layout, 1.0, causal).map(Some)
}

/// softmax(scale · q kᵀ) v per head, for q (b, lq, heads·d), k (b, lk, heads·d) and
/// v (b, lk, heads·dv) as the projections make them, into (b, lq, heads·dv): the heads are
/// read and written in place through strided GEMM operands, so the (b, heads, l, d) copies
/// around the product (three in, one out) are never made. `None` as [`attention_f32`].
pub fn attention_heads_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> candle_core::Result<Option<Tensor>> {
    let on_cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(on_cpu_f32(q) && on_cpu_f32(k) && on_cpu_f32(v)) || heads == 0 {
        return Ok(None);
    }
    let (b, lq, qc) = q.dims3()?;
    let (bk, lk, kc) = k.dims3()?;
    let (bv, lv, vc) = v.dims3()?;
    if bk != b || bv != b || kc != qc || lv != lk || qc % heads != 0 || vc % heads != 0 {
        return Ok(None);
    }
    let (d, dv) = (qc / heads, vc / heads);
    let threads = candle_core::utils::get_num_threads().max(1);
    if b * heads == 0 || lq == 0 || lk == 0 || (b * heads < threads && lq * lk * d > SMALL_SLICE) {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let layout = Heads {
        batch: b,
        heads,
        lq,
        lk,
        d,
        dv,
    };
    run(&q, &k, &v, &layout, scale, causal).map(Some)
}

/// Slices (batch, head) of (batch, l, heads·d) buffers; heads = 1 is (n, l, d).
struct Heads {
    batch: usize,
    heads: usize,
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
}

/// Every slice on the threads, one at a time each; the output is (batch, lq, heads·dv).
fn run(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    s: &Heads,
    scale: f32,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let Heads {
        batch,
        heads,
        lq,
        lk,
        d,
        dv,
    } = *s;
    let n = batch * heads;
    let mut out = vec![0f32; batch * lq * heads * dv];
    {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (qv, kv, vv) = (
            f32_slice(&qs, ql)?,
            f32_slice(&ks, kl)?,
            f32_slice(&vs, vl)?,
        );
        let next = AtomicUsize::new(0);
        let shared = SharedMut::new(&mut out);
        let work = || {
            let mut scores = vec![0f32; lq * lk];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (bi, hi) = (i / heads, i % heads);
                let (qrs, vrs) = (heads * d, heads * dv);
                // SAFETY: slice (bi, hi) reads its head's columns of rows of q, k and v inside
                // their buffers, and writes only its head's columns of its batch entry's rows of
                // `out` (no other slice writes them).
                unsafe {
                    let operands = SliceOperands {
                        q: Strided::rows(qv.as_ptr().add(bi * lq * qrs + hi * d), qrs),
                        k_t: Strided::transposed(kv.as_ptr().add(bi * lk * qrs + hi * d), qrs),
                        v: Strided::rows(vv.as_ptr().add(bi * lk * vrs + hi * dv), vrs),
                        out: shared.ptr(bi * lq * vrs + hi * dv),
                        out_rs: vrs,
                    };
                    slice_attention(&operands, &mut scores, (lq, lk, d, dv), scale, causal);
                }
            }
        };
        on_threads(candle_core::utils::get_num_threads().clamp(1, n), work);
    }
    Tensor::from_vec(out, (batch, lq, heads * dv), &Device::Cpu)
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
/// buffers, and no other thread may write `out`'s elements.
unsafe fn slice_attention(
    o: &SliceOperands,
    scores: &mut [f32],
    (lq, lk, d, dv): (usize, usize, usize, usize),
    scale: f32,
    causal: bool,
) {
    matmul(
        (lq, lk, d),
        scores.as_mut_ptr(),
        lk,
        false,
        o.q,
        o.k_t,
        gemm::Parallelism::None,
    );
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
    matmul(
        (lq, dv, lk),
        o.out,
        o.out_rs,
        false,
        Strided::rows(scores.as_ptr(), lk),
        o.v,
        gemm::Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let mut scores = q.matmul(&k.t()?)?;
        if causal {
            let (_, lq, lk) = scores.dims3()?;
            let mask: Vec<f32> = (0..lq * lk)
                .map(|i| {
                    if i % lk > i / lk + lk - lq {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (lq, lk), &Device::Cpu)?)?;
        }
        candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(v)
    }

    #[test]
    fn matches_the_tensor_op_formulation() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, lq, lk, d, dv, causal) in [
            (16usize, 100usize, 77usize, 64usize, 64usize, false),
            (32, 77, 77, 64, 64, true),
            (3, 5, 9, 8, 4, true),
            // Causal against a longer key sequence (query i sees keys up to i + 10).
            (2, 40, 50, 16, 8, true),
            (1, 7, 7, 16, 16, false),
        ] {
            let q = (Tensor::randn(0f32, 1.0, (n, lq, d), &dev)? * 0.2)?;
            let k = Tensor::randn(0f32, 1.0, (n, lk, d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (n, lk, dv), &dev)?;
            let got = attention_f32(&q, &k, &v, causal)?.expect("kernel applies");
            let want = reference(&q, &k, &v, causal)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 2e-5, "{n}×{lq}×{lk}×{d} causal={causal}: {diff}");
        }
        // The in-place heads form against the split-heads one, with the scale and the mask.
        let (b, h, lq, lk, d) = (2usize, 4usize, 9usize, 9usize, 8usize);
        let q = Tensor::randn(0f32, 1.0, (b, lq, h * d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev)?;
        let split = |t: &Tensor, l: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, l, h, d))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * h, l, d))
        };
        let want = reference(
            &(split(&q, lq)? * 0.3)?,
            &split(&k, lk)?,
            &split(&v, lk)?,
            true,
        )?
        .reshape((b, h, lq, d))?
        .transpose(1, 2)?
        .reshape((b, lq, h * d))?;
        let got = attention_heads_f32(&q, &k, &v, h, 0.3, true)?.expect("kernel applies");
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 2e-5, "heads form: {diff}");
        // One large slice goes to candle's path.
        let q = Tensor::zeros((1, 2048, 512), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2048, 512), DType::F32, &dev)?;
        if candle_core::utils::get_num_threads() > 1 {
            assert!(attention_f32(&q, &k, &k, false)?.is_none());
        }
        Ok(())
    }
}
