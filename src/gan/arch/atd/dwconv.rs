//! ATD's depthwise convolution (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py`,
//! `dwconv`: `nn.Conv2d(hidden, hidden, k, 1, (k − 1) / 2, groups=hidden)`, k odd, 5 or 7 in
//! the released models), run on the channels-last token maps (B, H·W, C) the transformer
//! holds, so no transpose to and from (B, C, H, W) is made.
//!
//! On the CPU in f32 one pass per output row accumulates the k² taps over contiguous channel
//! vectors, rows spread over the threads (candle would run one convolution per channel).
//! Other devices and dtypes sum k² shifted views of the zero-padded map in tensor ops.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// A depthwise k × k convolution, zero padding (k − 1) / 2, with bias, over channels-last maps.
#[derive(Debug, Clone)]
pub(super) struct DepthwiseConv {
    /// (k², C): tap-major weights, tap = k·dy + dx, in the model's dtype and device.
    taps: Tensor,
    bias: Tensor,
    /// The same as f32 host values, for the CPU path.
    taps_host: Vec<f32>,
    bias_host: Vec<f32>,
    kernel: usize,
    channels: usize,
}

impl DepthwiseConv {
    /// `prefix.weight` (C, 1, k, k) and `prefix.bias` (C).
    pub(super) fn new(w: &Weights, prefix: &str, channels: usize, kernel: usize) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[channels, 1, kernel, kernel])?;
        let bias = w.get(&format!("{prefix}.bias"), &[channels])?;
        let taps = weight
            .reshape((channels, kernel * kernel))?
            .t()?
            .contiguous()?;
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?)
        };
        Ok(Self {
            taps_host: host(&taps)?,
            bias_host: host(&bias)?,
            taps,
            bias,
            kernel,
            channels,
        })
    }

    /// x (B, H·W, C) tokens of an `h` × `w` map → the same shape.
    pub(super) fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        if c != self.channels || l != h * w {
            return Err(candle_core::Error::Msg(format!(
                "depthwise conv of {} channels given {:?} as {h}x{w}",
                self.channels,
                x.dims()
            ))
            .into());
        }
        let (taps, bias, k) = (&self.taps_host, &self.bias_host, self.kernel);
        let out = on_cpu_f32([x], [], (b, l, c), |[x], []| {
            depthwise_rows(x, taps, bias, k, (b, h, w, c))
        })?;
        match out {
            Some(out) => Ok(out),
            None => self.forward_ops(x, h, w),
        }
    }

    /// The tensor-op form: the bias plus k² products of shifted views of the padded map.
    fn forward_ops(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let (k, p) = (self.kernel, self.kernel / 2);
        let x = x.reshape((b, h, w, c))?;
        let padded = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
        let mut acc = x.zeros_like()?.broadcast_add(&self.bias)?;
        for dy in 0..k {
            for dx in 0..k {
                let tap = self.taps.get(k * dy + dx)?;
                let view = padded.narrow(1, dy, h)?.narrow(2, dx, w)?;
                acc = (acc + view.broadcast_mul(&tap)?)?;
            }
        }
        Ok(acc.reshape((b, h * w, c))?)
    }
}

/// The CPU kernel: every output row is the bias plus, for each of the k × k taps, the tap's
/// channel weights times the matching shifted input row (zero outside the map).
fn depthwise_rows(
    x: &[f32],
    taps: &[f32],
    bias: &[f32],
    k: usize,
    (b, h, w, c): (usize, usize, usize, usize),
) -> Vec<f32> {
    let row = w * c;
    let p = k / 2;
    let mut out = vec![0f32; b * h * row];
    if row == 0 {
        return out;
    }
    out.par_chunks_mut(row).enumerate().for_each(|(r, o)| {
        let (img, y) = (r / h, r % h);
        for px in o.chunks_exact_mut(c) {
            px.copy_from_slice(bias);
        }
        for dy in 0..k {
            // Input row y + dy − p, skipped outside the map (zero padding).
            let Some(sy) = (y + dy).checked_sub(p).filter(|&sy| sy < h) else {
                continue;
            };
            let src = &x[(img * h + sy) * row..][..row];
            for dx in 0..k {
                let tap = &taps[(k * dy + dx) * c..][..c];
                // Output columns whose input column ox + dx − p lies inside the map.
                let first = p.saturating_sub(dx);
                let last = (w + p).saturating_sub(dx).min(w);
                for ox in first..last {
                    let sx = ox + dx - p;
                    let o = &mut o[ox * c..][..c];
                    let s = &src[sx * c..][..c];
                    for ((o, &s), &t) in o.iter_mut().zip(s).zip(tap) {
                        *o += s * t;
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::gan::StateDict;

    #[test]
    fn equals_candles_grouped_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for (b, h, w, c, k) in [
            (1usize, 5usize, 7usize, 6usize, 5usize),
            (2, 1, 3, 4, 3),
            (1, 4, 9, 3, 7),
        ] {
            let weight = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            let dict: StateDict = [
                ("dw.weight".to_string(), weight.clone()),
                ("dw.bias".into(), bias.clone()),
            ]
            .into_iter()
            .collect();
            let wts = Weights::new(&dict, DType::F32, &dev, Path::new("t"));
            let conv = DepthwiseConv::new(&wts, "dw", c, k)?;
            let x = Tensor::randn(0f32, 1.0, (b, h * w, c), &dev)?;
            let want = x
                .transpose(1, 2)?
                .reshape((b, c, h, w))?
                .contiguous()?
                .conv2d(&weight, k / 2, 1, 1, c)?
                .broadcast_add(&bias.reshape((1, c, 1, 1))?)?
                .flatten_from(2)?
                .transpose(1, 2)?;
            for got in [conv.forward(&x, h, w)?, conv.forward_ops(&x, h, w)?] {
                let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "{b}×{h}×{w}×{c} k{k}: {d}");
            }
        }
        Ok(())
    }
}
