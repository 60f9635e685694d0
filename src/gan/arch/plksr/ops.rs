//! The element-wise and per-pixel operations PLKSR / RealPLKSR use that candle has no op for
//! (spandrel 0.4.2 `architectures/PLKSR/__arch/RealPLKSR.py`): `nn.Mish`, RealPLKSR's
//! channel-wise `LayerNorm` (statistics over the channels of each pixel, eps 1e-6), and EA's
//! `x * sigmoid(g)`. Each has one pass over f32 slices on the CPU (safe Rust on the rayon
//! pool, in place of the half-dozen full-size temporaries of a tensor-op form) and the tensor
//! ops everywhere else, computed in f32 for half-precision inputs.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// Elements below which a pass stays on the calling thread (waking the pool costs more).
const PARALLEL_MIN: usize = 1 << 15;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Where `softplus` is the identity in torch (`threshold=20`), and where tanh(softplus(x))
/// is 1 in f32: the exponential below is clamped there so it cannot overflow.
const MISH_CLAMP: f32 = 20.0;

/// tanh(softplus(x)) = n / (n + 2) with n = eˣ(eˣ + 2): one exponential, no cancellation.
fn mish_scalar(x: f32) -> f32 {
    let e = x.min(MISH_CLAMP).exp();
    let n = e * (e + 2.0);
    x * (n / (n + 2.0))
}

/// Runs `f` over `out` in chunks, in parallel when large.
fn for_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() < PARALLEL_MIN {
        f(0, out);
        return;
    }
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, o)| f(i * CHUNK, o));
}

/// Mish(x) = x · tanh(softplus(x)), element-wise.
pub(crate) fn mish(x: &Tensor) -> Result<Tensor> {
    let fast = on_cpu_f32([x], [], x.shape(), |[x], []| {
        let mut out = vec![0f32; x.len()];
        for_chunks(&mut out, |start, o| {
            for (o, &v) in o.iter_mut().zip(&x[start..]) {
                *o = mish_scalar(v);
            }
        });
        out
    })?;
    if let Some(y) = fast {
        return Ok(y);
    }
    // The same formula in tensor ops, in f32 at least (e^20 overflows f16).
    let dtype = x.dtype();
    let xf = if dtype == DType::F64 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let e = xf.minimum(MISH_CLAMP as f64)?.exp()?;
    let n = (&e * (&e + 2.0)?)?;
    let ratio = (&n / (&n + 2.0)?)?;
    Ok((xf * ratio)?.to_dtype(dtype)?)
}

/// x · sigmoid(g), element-wise, for x and g of one shape (EA's attention).
pub(crate) fn mul_sigmoid(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    if x.dims() == g.dims() {
        let fast = on_cpu_f32([x, g], [], x.shape(), |[x, g], []| {
            let mut out = vec![0f32; x.len()];
            for_chunks(&mut out, |start, o| {
                let xs = &x[start..];
                let gs = &g[start..];
                for ((o, &v), &gv) in o.iter_mut().zip(xs).zip(gs) {
                    *o = v / (1.0 + (-gv).exp());
                }
            });
            out
        })?;
        if let Some(y) = fast {
            return Ok(y);
        }
    }
    Ok((x * candle_nn::ops::sigmoid(g)?)?)
}

/// RealPLKSR's `LayerNorm` over the channels of each pixel of x (B, C, H, W):
/// (x − mean) / sqrt(var + eps) · weight[c] + bias[c], biased variance, as
/// `x.mean(1)` / `(x - u).pow(2).mean(1)` compute it.
pub(crate) fn channel_layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let plane = h * w;
    if weight.elem_count() == c && bias.elem_count() == c && w > 0 && c > 0 {
        let fast = on_cpu_f32([x, weight, bias], [], x.shape(), |[x, wt, bs], []| {
            // Pass 1: each pixel's mean and 1/std, a row of pixels per task (f64 sums).
            let mut mean = vec![0f64; b * plane];
            let mut inv = vec![0f64; b * plane];
            let stats = |row: usize, (m, s): (&mut [f64], &mut [f64])| {
                let (img, y) = (row / h, row % h);
                let base = img * c * plane + y * w;
                for ch in 0..c {
                    for (m, &v) in m.iter_mut().zip(&x[base + ch * plane..][..w]) {
                        *m += v as f64;
                    }
                }
                m.iter_mut().for_each(|m| *m /= c as f64);
                for ch in 0..c {
                    let src = &x[base + ch * plane..][..w];
                    for ((s, &v), &m) in s.iter_mut().zip(src).zip(m.iter()) {
                        *s += (v as f64 - m) * (v as f64 - m);
                    }
                }
                s.iter_mut()
                    .for_each(|s| *s = 1.0 / (*s / c as f64 + eps).sqrt());
            };
            if x.len() < PARALLEL_MIN {
                mean.chunks_mut(w)
                    .zip(inv.chunks_mut(w))
                    .enumerate()
                    .for_each(|(r, ms)| stats(r, ms));
            } else {
                mean.par_chunks_mut(w)
                    .zip(inv.par_chunks_mut(w))
                    .enumerate()
                    .for_each(|(r, ms)| stats(r, ms));
            }
            // Pass 2: each channel plane normalised and scaled.
            let mut out = vec![0f32; x.len()];
            let apply = |i: usize, o: &mut [f32]| {
                let (img, ch) = (i / c, i % c);
                let (wc, bc) = (wt[ch] as f64, bs[ch] as f64);
                let src = &x[i * plane..][..plane];
                let m = &mean[img * plane..][..plane];
                let s = &inv[img * plane..][..plane];
                for (((o, &v), &m), &s) in o.iter_mut().zip(src).zip(m).zip(s) {
                    *o = ((v as f64 - m) * s * wc + bc) as f32;
                }
            };
            if x.len() < PARALLEL_MIN || plane == 0 {
                out.chunks_mut(plane.max(1))
                    .enumerate()
                    .for_each(|(i, o)| apply(i, o));
            } else {
                out.par_chunks_mut(plane)
                    .enumerate()
                    .for_each(|(i, o)| apply(i, o));
            }
            out
        })?;
        if let Some(y) = fast {
            return Ok(y);
        }
    }
    channel_layer_norm_ops(x, weight, bias, eps)
}

/// The tensor-op form, in f32 at least.
fn channel_layer_norm_ops(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.dim(1)?;
    let dtype = x.dtype();
    let work = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let xf = x.to_dtype(work)?;
    let centred = xf.broadcast_sub(&xf.mean_keepdim(1)?)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    let shape = (1, c, 1, 1);
    let y = normed
        .broadcast_mul(&weight.to_dtype(work)?.reshape(shape)?)?
        .broadcast_add(&bias.to_dtype(work)?.reshape(shape)?)?;
    Ok(y.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
        Ok(d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
    }

    #[test]
    fn mish_matches_its_definition_and_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Wide enough to take the parallel path, with extremes on both sides.
        let x = Tensor::randn(0f32, 8.0, (2, 8, 64, 65), &dev)?;
        let x64 = x.to_dtype(DType::F64)?;
        // torch: x · tanh(softplus(x)), softplus = x beyond 20.
        let softplus = x64.exp()?.affine(1.0, 1.0)?.log()?;
        let softplus = x64.gt(20.0)?.where_cond(&x64, &softplus)?;
        let want = (&x64 * softplus.tanh()?)?;
        let fast = mish(&x)?;
        assert!(max_diff(&fast, &want)? < 1e-5);
        let ops = mish(&x64)?;
        assert!(max_diff(&ops, &want)? < 1e-12);
        let half = mish(&x.to_dtype(DType::F16)?)?;
        assert!(half
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()));
        Ok(())
    }

    #[test]
    fn mul_sigmoid_matches_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 4, 3, 5), &dev)?;
        let g = Tensor::randn(0f32, 4.0, (1, 4, 3, 5), &dev)?;
        let want = (&x * candle_nn::ops::sigmoid(&g)?)?;
        assert!(max_diff(&mul_sigmoid(&x, &g)?, &want)? < 1e-6);
        Ok(())
    }

    #[test]
    fn channel_layer_norm_matches_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        for shape in [(2, 5, 3, 7), (1, 16, 48, 50)] {
            let x = (Tensor::randn(0f32, 2.0, shape, &dev)? + 3.0)?;
            let w = Tensor::randn(1f32, 0.2, shape.1, &dev)?;
            let b = Tensor::randn(0f32, 0.2, shape.1, &dev)?;
            let f64_ = |t: &Tensor| t.to_dtype(DType::F64);
            let want = channel_layer_norm_ops(&f64_(&x)?, &f64_(&w)?, &f64_(&b)?, 1e-6)?;
            let got = channel_layer_norm(&x, &w, &b, 1e-6)?;
            assert!(max_diff(&got, &want)? < 1e-5, "{shape:?}");
        }
        Ok(())
    }
}
