//! The depthwise 3×3 convolutions of DAT (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`:
//! `nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)` in the attention's conv branch, where a
//! batch norm follows and is folded in, and in the SGFN's spatial gate), run on the
//! channels-last token maps (B, H, W, C) the transformer holds, so no transpose to and from
//! (B, C, H, W) is made.
//!
//! candle runs a grouped convolution as one convolution per group (180 for DAT); here, on
//! the CPU in f32, one pass per output row accumulates the nine taps over contiguous channel
//! vectors, rows spread over the threads. Other devices and dtypes sum nine shifted views of
//! the zero-padded map in tensor ops.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// A depthwise 3×3 convolution, padding 1, with bias, over channels-last maps.
pub(super) struct DepthwiseConv3x3 {
    /// (9, C): tap-major weights, tap = 3·dy + dx, in the model's dtype and device.
    taps: Tensor,
    bias: Tensor,
    /// The same as f32 host values, for the CPU path.
    taps_host: Vec<f32>,
    bias_host: Vec<f32>,
    channels: usize,
}

impl DepthwiseConv3x3 {
    /// From a (C, 1, 3, 3) weight and a (C) bias (any dtype and device), used in the dtype
    /// and on the device of `like`.
    pub(super) fn new(weight: &Tensor, bias: &Tensor, like: &Tensor) -> Result<Self> {
        let channels = bias.dims1()?;
        let taps32 = weight
            .to_dtype(DType::F32)?
            .reshape((channels, 9))?
            .t()?
            .contiguous()?;
        let bias32 = bias.to_dtype(DType::F32)?;
        Ok(Self {
            taps_host: taps32
                .flatten_all()?
                .to_device(&candle_core::Device::Cpu)?
                .to_vec1()?,
            bias_host: bias32.to_device(&candle_core::Device::Cpu)?.to_vec1()?,
            taps: taps32.to_dtype(like.dtype())?.to_device(like.device())?,
            bias: bias32.to_dtype(like.dtype())?.to_device(like.device())?,
            channels,
        })
    }

    /// x (B, H, W, C) → (B, H, W, C).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        if c != self.channels {
            return Err(candle_core::Error::Msg(format!(
                "depthwise conv of {} channels given {c}",
                self.channels
            ))
            .into());
        }
        let (taps, bias) = (&self.taps_host, &self.bias_host);
        let out = on_cpu_f32([x], [], (b, h, w, c), |[x], []| {
            depthwise_rows(x, taps, bias, (b, h, w, c))
        })?;
        match out {
            Some(out) => Ok(out),
            None => self.forward_ops(x),
        }
    }

    /// The tensor-op form: the bias plus nine products of shifted views of the padded map.
    fn forward_ops(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut acc = x.zeros_like()?.broadcast_add(&self.bias)?;
        for dy in 0..3 {
            for dx in 0..3 {
                let tap = self.taps.get(3 * dy + dx)?;
                let view = padded.narrow(1, dy, h)?.narrow(2, dx, w)?;
                acc = (acc + view.broadcast_mul(&tap)?)?;
            }
        }
        Ok(acc)
    }
}

/// The CPU kernel: every output row is the bias plus, for each of the 3 × 3 taps, the
/// tap's channel weights times the matching shifted input row (zero outside the map).
fn depthwise_rows(
    x: &[f32],
    taps: &[f32],
    bias: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
) -> Vec<f32> {
    let row = w * c;
    let mut out = vec![0f32; b * h * row];
    if row == 0 {
        return out;
    }
    out.par_chunks_mut(row).enumerate().for_each(|(r, o)| {
        let (img, y) = (r / h, r % h);
        for px in o.chunks_exact_mut(c) {
            px.copy_from_slice(bias);
        }
        for dy in 0..3 {
            // Input row y + dy − 1, skipped outside the map (zero padding).
            let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                continue;
            };
            let src = &x[(img * h + sy) * row..][..row];
            for dx in 0..3 {
                let tap = &taps[(3 * dy + dx) * c..][..c];
                // Output columns whose input column x + dx − 1 lies inside the map.
                let first = 1usize.saturating_sub(dx);
                let last = (w + 1 - dx).min(w);
                for ox in first..last {
                    let sx = ox + dx - 1;
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
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_grouped_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for (b, h, w, c) in [(1usize, 5usize, 7usize, 6usize), (2, 1, 3, 4), (1, 4, 1, 3)] {
            let weight = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &dev)?;
            let want = x
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .conv2d(&weight, 1, 1, 1, c)?
                .broadcast_add(&bias.reshape((1, c, 1, 1))?)?
                .permute((0, 2, 3, 1))?;
            let conv = DepthwiseConv3x3::new(&weight, &bias, &x)?;
            for got in [conv.forward(&x)?, conv.forward_ops(&x)?] {
                let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "{b}×{h}×{w}×{c}: {d}");
            }
        }
        Ok(())
    }
}
