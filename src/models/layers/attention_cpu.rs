//! softmax(q kᵀ) v for many small (batch × head) slices on the CPU in f32, by
//! `diffsr_kernels::attention` (the slices spread over the threads, each with single-threaded
//! GEMMs), optionally with a causal mask (CLIP's text tower); candle's batched matmul runs the
//! slices one after another with pool wake-ups that cost more than the arithmetic. Large
//! single slices (the VAE's one-head attention over every latent pixel), other devices and
//! dtypes take candle's ops.

use candle_core::{DType, Tensor};
use diffsr_kernels::attention::{attention, suits, AttentionShape};

use super::cpu_dispatch::{cpu_threads, on_cpu_f32};
use super::softmax::softmax_last_dim;
use crate::Result;

/// softmax(q kᵀ) v for q (n, lq, d) already scaled, k (n, lk, d), v (n, lk, dv), or `None`
/// when this problem belongs on candle's path (another device or dtype, or too few and too
/// large slices to spread). With `causal`, query i sees keys j ≤ i + (lk − lq).
pub(crate) fn attention_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
) -> candle_core::Result<Option<Tensor>> {
    let (n, lq, d) = q.dims3()?;
    let (nk, lk, dk) = k.dims3()?;
    let (nv, lv, dv) = v.dims3()?;
    if nk != n || nv != n || dk != d || lv != lk {
        return Ok(None);
    }
    let s = AttentionShape {
        batch: n,
        heads: 1,
        lq,
        lk,
        d,
        dv,
    };
    run(q, k, v, &s, 1.0, causal)
}

/// softmax(scale · q kᵀ) v per head, for q (b, lq, heads·d), k (b, lk, heads·d) and
/// v (b, lk, heads·dv) as the projections make them, into (b, lq, heads·dv): the heads are
/// read and written in place, so the (b, heads, l, d) copies around the product are never
/// made. `None` as [`attention_f32`].
fn attention_heads_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> candle_core::Result<Option<Tensor>> {
    let (b, lq, qc) = q.dims3()?;
    let (bk, lk, kc) = k.dims3()?;
    let (bv, lv, vc) = v.dims3()?;
    if heads == 0
        || bk != b
        || bv != b
        || kc != qc
        || lv != lk
        || qc % heads != 0
        || vc % heads != 0
    {
        return Ok(None);
    }
    let s = AttentionShape {
        batch: b,
        heads,
        lq,
        lk,
        d: qc / heads,
        dv: vc / heads,
    };
    run(q, k, v, &s, scale, causal)
}

/// The kernel on CPU f32 tensors, when it suits the problem.
fn run(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    s: &AttentionShape,
    scale: f32,
    causal: bool,
) -> candle_core::Result<Option<Tensor>> {
    let threads = cpu_threads();
    if !suits(s, threads) {
        return Ok(None);
    }
    let shape = (s.batch, s.lq, s.heads * s.dv);
    on_cpu_f32([q, k, v], [], shape, |[q, k, v], []| {
        attention(q, k, v, s, scale, causal, threads)
    })
}

/// Causal multi-head self-attention, softmax(scale · q kᵀ + mask) v per head, for q, k, v
/// (b, t, heads·d) as the projections make them, into (b, t, heads·d) in q's dtype. On the CPU
/// in f32 the kernel reads the heads in place and masks key j > i itself; elsewhere the heads
/// are split and `causal_mask` (t, t), 0 where a query may attend and a large negative value
/// after, is added to the scores, which are computed in f32.
pub(crate) fn causal_self_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    causal_mask: &Tensor,
) -> Result<Tensor> {
    if let Some(out) = attention_heads_f32(q, k, v, heads, scale as f32, true)? {
        return Ok(out);
    }
    let (b, t, c) = q.dims3()?;
    let head_dim = c / heads.max(1);
    // (b, t, c) -> (b, heads, t, head_dim), in f32 for the scores and the softmax.
    let split = |x: &Tensor| -> Result<Tensor> {
        Ok(x.reshape((b, t, heads, head_dim))?
            .transpose(1, 2)?
            .to_dtype(DType::F32)?
            .contiguous()?)
    };
    let (qh, kh, vh) = (split(q)?, split(k)?, split(v)?);
    let scores = (qh.matmul(&kh.t()?)? * scale)?.broadcast_add(causal_mask)?;
    Ok(softmax_last_dim(&scores)?
        .matmul(&vh)?
        .transpose(1, 2)?
        .reshape((b, t, c))?
        .to_dtype(q.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

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
        if rayon::current_num_threads() > 1 {
            assert!(attention_f32(&q, &k, &k, false)?.is_none());
        }
        Ok(())
    }
}
