//! The small layers OmniSR's modules share (spandrel 0.4.2 `architectures/OmniSR/__arch`):
//! plain convolutions with an optional bias, the 3×3 depthwise convolutions of `MBConv`,
//! `Gated_Conv_FeedForward` and the channel attentions, and `LayerNorm2d` (a layer norm over
//! the channels of an NCHW map, `layernorm.py`). The depthwise conv and the channel norm have
//! a CPU f32 path in safe Rust (one pass, planes spread over the threads); other devices and
//! dtypes run the same maths in candle ops.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// A k×k "same" convolution (padding k / 2), `prefix.weight` and, when `bias`, `prefix.bias`.
pub(super) fn conv(
    w: &Weights,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    bias: bool,
) -> Result<Conv2d> {
    let weight = w.get(&format!("{prefix}.weight"), &[c_out, c_in, k, k])?;
    let bias = bias
        .then(|| w.get(&format!("{prefix}.bias"), &[c_out]))
        .transpose()?;
    let config = candle_nn::Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    let conv = Conv2d::new(weight, bias, config);
    Ok(if k == 3 { conv.with_winograd() } else { conv })
}

/// A 3×3 depthwise convolution with padding 1 (`groups = channels`), as torch computes it.
pub(super) struct DepthwiseConv3x3 {
    /// (C, 1, 3, 3) in the model's dtype and device.
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weights as host f32 (C × 9) and the bias (C), for the CPU path.
    host_weight: Vec<f32>,
    host_bias: Option<Vec<f32>>,
}

impl DepthwiseConv3x3 {
    pub(super) fn new(w: &Weights, prefix: &str, channels: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[channels, 1, 3, 3])?;
        let bias = bias
            .then(|| w.get(&format!("{prefix}.bias"), &[channels]))
            .transpose()?;
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
        };
        Ok(Self {
            host_weight: host(&weight)?,
            host_bias: bias.as_ref().map(host).transpose()?,
            weight,
            bias,
        })
    }

    /// x (B, C, H, W) → (B, C, H, W).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let bias = self.host_bias.as_deref();
        let cpu = on_cpu_f32([x], [], (b, c, h, w), |[x], []| {
            depthwise3x3(x, c, h, w, &self.host_weight, bias)
        })?;
        if let Some(y) = cpu {
            return Ok(y);
        }
        // Nine shifted views of the zero-padded input, each scaled by its tap.
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let taps = self.weight.reshape((1, c, 9))?;
        let mut acc: Option<Tensor> = None;
        for dy in 0..3 {
            for dx in 0..3 {
                let tap = taps.narrow(2, 3 * dy + dx, 1)?.reshape((1, c, 1, 1))?;
                let term = padded
                    .narrow(2, dy, h)?
                    .narrow(3, dx, w)?
                    .broadcast_mul(&tap)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        let y = acc.expect("nine taps");
        Ok(match &self.bias {
            None => y,
            Some(bias) => y.broadcast_add(&bias.reshape((1, c, 1, 1))?)?,
        })
    }
}

/// The depthwise 3×3 convolution on host f32 (B, C, H, W): each plane is its own job; within a
/// row each tap is one shifted multiply-add over the row (vectorised by the compiler).
fn depthwise3x3(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plane = h * w;
    let mut out = vec![0f32; x.len()];
    if plane == 0 || c == 0 {
        return out;
    }
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (o, src))| {
            let ch = i % c;
            let k = &weight[9 * ch..9 * ch + 9];
            let b = bias.map_or(0.0, |b| b[ch]);
            for (y, row) in o.chunks_exact_mut(w).enumerate() {
                row.fill(b);
                for dy in 0..3 {
                    let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    let s = &src[sy * w..(sy + 1) * w];
                    let (k0, k1, k2) = (k[3 * dy], k[3 * dy + 1], k[3 * dy + 2]);
                    // Column x reads x − 1, x and x + 1.
                    for (o, &v) in row[1..].iter_mut().zip(&s[..w - 1]) {
                        *o += k0 * v;
                    }
                    for (o, &v) in row.iter_mut().zip(s) {
                        *o += k1 * v;
                    }
                    for (o, &v) in row[..w - 1].iter_mut().zip(&s[1..]) {
                        *o += k2 * v;
                    }
                }
            }
        });
    out
}

/// `LayerNorm2d`: (x − mean) / sqrt(var + eps) · weight + bias over the channels of each
/// pixel of an NCHW map, biased variance, eps 1e-6.
pub(super) struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    host_weight: Vec<f32>,
    host_bias: Vec<f32>,
}

const LAYER_NORM_2D_EPS: f64 = 1e-6;

impl LayerNorm2d {
    pub(super) fn new(w: &Weights, prefix: &str, channels: usize) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[channels])?;
        let bias = w.get(&format!("{prefix}.bias"), &[channels])?;
        Ok(Self {
            host_weight: weight.to_dtype(DType::F32)?.to_vec1()?,
            host_bias: bias.to_dtype(DType::F32)?.to_vec1()?,
            weight,
            bias,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let cpu = on_cpu_f32([x], [], (b, c, h, w), |[x], []| {
            channel_norm(x, c, h * w, &self.host_weight, &self.host_bias)
        })?;
        if let Some(y) = cpu {
            return Ok(y);
        }
        // Statistics in f32 at least, as torch accumulates half-precision reductions.
        let dtype = x.dtype();
        let xs = x.to_dtype(wide(dtype))?;
        let mean = xs.mean_keepdim(1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let y = centred
            .broadcast_div(&(var + LAYER_NORM_2D_EPS)?.sqrt()?)?
            .to_dtype(dtype)?;
        let shape = (1, c, 1, 1);
        Ok(y.broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)?)
    }
}

/// Pixels per job of [`channel_norm`]'s statistics pass.
const NORM_SPAN: usize = 1024;

/// [`LayerNorm2d`] on host f32 (B, C, plane): the per-pixel statistics in f64 over spans of
/// pixels (each span reads its pixels' C channel rows), then one pass per channel plane.
fn channel_norm(x: &[f32], c: usize, plane: usize, weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if c == 0 || plane == 0 {
        return out;
    }
    let batch = x.len() / (c * plane);
    // (mean, 1 / std) of every pixel of every batch entry; a span may cross batch entries.
    let mut stats = vec![(0f32, 0f32); batch * plane];
    stats
        .par_chunks_mut(NORM_SPAN)
        .enumerate()
        .for_each(|(span, st)| {
            let first = span * NORM_SPAN;
            let mut sum = vec![0f64; st.len()];
            let mut sq = vec![0f64; st.len()];
            for (j, _) in st.iter().enumerate() {
                let (bj, pj) = ((first + j) / plane, (first + j) % plane);
                let base = bj * c * plane + pj;
                let mut s = 0f64;
                for ch in 0..c {
                    s += x[base + ch * plane] as f64;
                }
                sum[j] = s / c as f64;
            }
            for (j, _) in st.iter().enumerate() {
                let (bj, pj) = ((first + j) / plane, (first + j) % plane);
                let base = bj * c * plane + pj;
                let mean = sum[j];
                let mut s = 0f64;
                for ch in 0..c {
                    let d = x[base + ch * plane] as f64 - mean;
                    s += d * d;
                }
                sq[j] = s / c as f64;
            }
            for (j, s) in st.iter_mut().enumerate() {
                let inv = 1.0 / (sq[j] + LAYER_NORM_2D_EPS).sqrt();
                *s = (sum[j] as f32, inv as f32);
            }
        });
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (o, src))| {
            let (bi, ch) = (i / c, i % c);
            let st = &stats[bi * plane..(bi + 1) * plane];
            let (wc, bc) = (weight[ch], bias[ch]);
            for ((o, &v), &(mean, inv)) in o.iter_mut().zip(src).zip(st) {
                *o = (v - mean) * inv * wc + bc;
            }
        });
    out
}

/// `nn.LayerNorm(dim)` (eps 1e-5) over the last axis of tokens.
pub(super) struct TokenLayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl TokenLayerNorm {
    pub(super) fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            bias: w.get(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::models::layers::layer_norm::layer_norm(
            x,
            &self.weight,
            &self.bias,
            1e-5,
        )?)
    }
}

/// `F.normalize(x, dim=-1)`: x / max(‖x‖₂, 1e-12) along the last axis, in f32 at least (the
/// result is returned in that dtype): a half-precision sum of squares over a long axis (the
/// grid channel attention's axis runs over every window of the image) would overflow.
pub(super) fn l2_normalize_last(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(wide(x.dtype()))?;
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The dtype reductions of `dtype` values run in: f32 for the half-precision types, which
/// torch also accumulates in f32; the dtype itself otherwise.
pub(super) fn wide(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn cpu_paths_equal_the_tensor_op_forms() -> Result<()> {
        let dev = Device::Cpu;
        let (c, h, w) = (5, 7, 6);
        let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        let dict: crate::gan::StateDict = [
            ("dw.weight".to_string(), weight.clone()),
            ("dw.bias".to_string(), bias.clone()),
            ("ln.weight".to_string(), (bias.clone() + 1.0)?),
            ("ln.bias".to_string(), bias.clone()),
        ]
        .into();
        let path = std::path::Path::new("m.safetensors");
        let wts = Weights::new(&dict, DType::F32, &dev, path);
        let dw = DepthwiseConv3x3::new(&wts, "dw", c, true)?;
        let want = x
            .conv2d(&weight, 1, 1, 1, c)?
            .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        let got = dw.forward(&x)?;
        let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "depthwise cpu: {d}");
        // f64 takes the tensor ops.
        let wts64 = Weights::new(&dict, DType::F64, &dev, path);
        let dw64 = DepthwiseConv3x3::new(&wts64, "dw", c, true)?;
        let got = dw64
            .forward(&x.to_dtype(DType::F64)?)?
            .to_dtype(DType::F32)?;
        let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "depthwise ops: {d}");
        let ln = LayerNorm2d::new(&wts, "ln", c)?;
        let x = (x + 2.0)?;
        let cpu = ln.forward(&x)?;
        let ln64 = LayerNorm2d::new(&wts64, "ln", c)?;
        let ops = ln64
            .forward(&x.to_dtype(DType::F64)?)?
            .to_dtype(DType::F32)?;
        let d = (cpu - ops)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "layer norm 2d: {d}");
        Ok(())
    }
}
