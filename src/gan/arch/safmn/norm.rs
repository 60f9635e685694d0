//! SAFMN's `LayerNorm(data_format="channels_first")` (spandrel 0.4.2
//! `architectures/SAFMN/__arch/safmn.py`): every pixel normalised over its channels,
//! `(x − mean) / sqrt(var + 1e-6)` with the biased variance, then a per-channel scale and
//! shift. On the CPU in f32 two multi-threaded passes (per-pixel statistics over pixel runs,
//! then the normalised planes); elsewhere candle's ops, as the reference writes it.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// The reference's epsilon.
const EPS: f32 = 1e-6;
/// Pixels per parallel work item of the statistics pass.
const RUN: usize = 1 << 12;

pub(super) struct ChannelNorm {
    /// (C), in the compute dtype.
    weight: Tensor,
    bias: Tensor,
}

impl ChannelNorm {
    pub(super) fn new(w: &Weights, prefix: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[channels])?,
            bias: w.get(&format!("{prefix}.bias"), &[channels])?,
        })
    }

    /// Normalises x (B, C, H, W) over C.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c == self.weight.elem_count() {
            let fast = on_cpu_f32(
                [x, &self.weight, &self.bias],
                [],
                x.shape(),
                |[x, weight, bias], []| normalise(x, weight, bias, b, h * w),
            )?;
            if let Some(y) = fast {
                return Ok(y);
            }
        }
        // The reference's own ops; f16 statistics would lose too much, so in f32 at least.
        let dtype = x.dtype();
        let x = if dtype == DType::F64 {
            x.clone()
        } else {
            x.to_dtype(DType::F32)?
        };
        let centred = x.broadcast_sub(&x.mean_keepdim(1)?)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let shape = (1, c, 1, 1);
        let y = centred
            .broadcast_div(&(var + EPS as f64)?.sqrt()?)?
            .broadcast_mul(&self.weight.to_dtype(x.dtype())?.reshape(shape)?)?
            .broadcast_add(&self.bias.to_dtype(x.dtype())?.reshape(shape)?)?;
        Ok(y.to_dtype(dtype)?)
    }
}

/// The CPU pass on a contiguous (batch, C, plane) buffer.
fn normalise(x: &[f32], weight: &[f32], bias: &[f32], batch: usize, plane: usize) -> Vec<f32> {
    let c = weight.len();
    let mut mean = vec![0f32; batch * plane];
    let mut rstd = vec![0f32; batch * plane];
    for b in 0..batch {
        let image = &x[b * c * plane..(b + 1) * c * plane];
        let span = b * plane..(b + 1) * plane;
        mean[span.clone()]
            .par_chunks_mut(RUN)
            .zip(rstd[span].par_chunks_mut(RUN))
            .enumerate()
            .for_each(|(run, (mean, rstd))| {
                let start = run * RUN;
                let len = mean.len();
                // Sums over the channel planes, each read as a contiguous run of pixels.
                for ch in 0..c {
                    let row = &image[ch * plane + start..ch * plane + start + len];
                    for (m, &v) in mean.iter_mut().zip(row) {
                        *m += v;
                    }
                }
                for m in mean.iter_mut() {
                    *m /= c as f32;
                }
                for ch in 0..c {
                    let row = &image[ch * plane + start..ch * plane + start + len];
                    for ((s, &m), &v) in rstd.iter_mut().zip(mean.iter()).zip(row) {
                        *s += (v - m) * (v - m);
                    }
                }
                for s in rstd.iter_mut() {
                    *s = 1.0 / (*s / c as f32 + EPS).sqrt();
                }
            });
    }
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(plane.max(1))
        .zip(x.par_chunks(plane.max(1)))
        .enumerate()
        .for_each(|(i, (o, x))| {
            let (b, ch) = (i / c, i % c);
            let (scale, shift) = (weight[ch], bias[ch]);
            let stats = b * plane..(b + 1) * plane;
            for (((o, &v), &m), &r) in o
                .iter_mut()
                .zip(x)
                .zip(&mean[stats.clone()])
                .zip(&rstd[stats])
            {
                *o = (v - m) * r * scale + shift;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::Device;

    use super::*;
    use crate::gan::StateDict;

    #[test]
    fn the_cpu_pass_equals_the_reference_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (c, h, w) = (7, 67, 65);
        let dict: StateDict = [
            ("n.weight".to_string(), Tensor::randn(1f32, 0.2, c, &dev)?),
            ("n.bias".to_string(), Tensor::randn(0f32, 0.1, c, &dev)?),
        ]
        .into();
        // An offset mean, as residual streams have.
        let x = (Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)? + 2.0)?;
        let w32 = Weights::new(&dict, DType::F32, &dev, Path::new("m"));
        let w64 = Weights::new(&dict, DType::F64, &dev, Path::new("m"));
        let got = ChannelNorm::new(&w32, "n", c)?.forward(&x)?;
        // f64 takes the tensor ops.
        let want = ChannelNorm::new(&w64, "n", c)?
            .forward(&x.to_dtype(DType::F64)?)?
            .to_dtype(DType::F32)?;
        let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }
}
