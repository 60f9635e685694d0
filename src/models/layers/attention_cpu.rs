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
    let mut out = vec![0f32; n * lq * dv];
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
                let qi = &qv[i * lq * d..(i + 1) * lq * d];
                let ki = &kv[i * lk * d..(i + 1) * lk * d];
                let vi = &vv[i * lk * dv..(i + 1) * lk * dv];
                // SAFETY: slice i's rows of `out` are written by this iteration alone.
                let oi = unsafe { shared.part(i * lq * dv, lq * dv) };
                slice_attention(qi, ki, vi, oi, &mut scores, (lq, lk, d, dv), causal);
            }
        };
        on_threads(threads.min(n), work);
    }
    Ok(Some(Tensor::from_vec(out, (n, lq, dv), &Device::Cpu)?))
}

/// One slice: scores = q kᵀ (lq × lk), masked, softmax per row, out = scores · v.
fn slice_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    scores: &mut [f32],
    (lq, lk, d, dv): (usize, usize, usize, usize),
    causal: bool,
) {
    // SAFETY: scores is lq×lk (row stride lk); q is lq×d (row stride d); kᵀ is d×lk read from
    // k (lk×d) with row stride 1 and column stride d. All in bounds.
    unsafe {
        matmul(
            (lq, lk, d),
            scores.as_mut_ptr(),
            lk,
            false,
            Strided::rows(q.as_ptr(), d),
            Strided::transposed(k.as_ptr(), d),
            gemm::Parallelism::None,
        );
    }
    for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
        if causal {
            let visible = (r + 1 + lk).saturating_sub(lq).min(lk);
            row[visible..].fill(f32::NEG_INFINITY);
        }
        softmax_row(row);
    }
    // SAFETY: out is lq×dv (row stride dv); scores lq×lk (row stride lk); v lk×dv (row
    // stride dv). All in bounds.
    unsafe {
        matmul(
            (lq, dv, lk),
            out.as_mut_ptr(),
            dv,
            false,
            Strided::rows(scores.as_ptr(), lk),
            Strided::rows(v.as_ptr(), dv),
            gemm::Parallelism::None,
        );
    }
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
        // One large slice goes to candle's path.
        let q = Tensor::zeros((1, 2048, 512), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2048, 512), DType::F32, &dev)?;
        if candle_core::utils::get_num_threads() > 1 {
            assert!(attention_f32(&q, &k, &k, false)?.is_none());
        }
        Ok(())
    }
}
