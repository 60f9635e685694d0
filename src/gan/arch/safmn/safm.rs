//! SAFMN's spatially-adaptive feature modulation, `SAFM` (spandrel 0.4.2
//! `architectures/SAFMN/__arch/safmn.py`): the channels split in four; chunk 0 goes through a
//! depthwise 3×3 conv at full size, chunk i through a 2^i max-pool, a depthwise 3×3 conv and a
//! nearest upsample back; a 1×1 conv (`aggr`) mixes the four, and its GELU modulates the
//! input. With the sides multiples of 8, `adaptive_max_pool2d` to (h / 2^i, w / 2^i) is a
//! plain 2^i × 2^i max-pool and `interpolate(mode="nearest")` repeats each pixel 2^i times.
//!
//! On the CPU in f32 the pooling reads its chunk straight from the input, the depthwise conv
//! is a direct loop, and the upsampling and concatenation are one pass writing `aggr`'s input;
//! elsewhere candle's ops.

use candle_core::Tensor;
use candle_nn::Module;
use rayon::prelude::*;

use super::config::LEVELS;
use crate::error::{Error, Result};
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::cpu_dispatch::on_cpu_f32;
use crate::models::layers::geglu::gelu_erf;

/// A depthwise 3×3 convolution with bias and zero padding 1 (`groups = channels`).
struct Depthwise {
    /// (C, 1, 3, 3) and (C), in the compute dtype.
    weight: Tensor,
    bias: Tensor,
}

impl Depthwise {
    fn new(w: &Weights, prefix: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[channels, 1, 3, 3])?,
            bias: w.get(&format!("{prefix}.bias"), &[channels])?,
        })
    }

    /// The conv of channels `start .. start + C` of x (B, ≥ start + C, H, W).
    fn forward(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let c = self.bias.elem_count();
        let (b, cx, h, w) = x.dims4()?;
        let fast = on_cpu_f32(
            [x, &self.weight, &self.bias],
            [],
            (b, c, h, w),
            |[x, weight, bias], []| depthwise(x, cx, start, weight, bias, b, h, w),
        )?;
        if let Some(y) = fast {
            return Ok(y);
        }
        let chunk = x.narrow(1, start, c)?;
        let y = chunk.conv2d(&self.weight, 1, 1, 1, c)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?)
    }
}

/// Depthwise 3×3, padding 1, on channels `start ..` of a contiguous (b, cx, h, w) buffer.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    x: &[f32],
    cx: usize,
    start: usize,
    weight: &[f32],
    bias: &[f32],
    b: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let c = bias.len();
    let plane = h * w;
    let mut out = vec![0f32; b * c * plane];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, o)| {
            let (n, ch) = (i / c, i % c);
            let src = &x[(n * cx + start + ch) * plane..][..plane];
            let k = &weight[ch * 9..ch * 9 + 9];
            o.fill(bias[ch]);
            for y in 0..h {
                let row = &mut o[y * w..(y + 1) * w];
                for dy in 0..3 {
                    // Input row y + dy - 1; rows outside are the zero padding.
                    let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    let srow = &src[sy * w..(sy + 1) * w];
                    let (k0, k1, k2) = (k[dy * 3], k[dy * 3 + 1], k[dy * 3 + 2]);
                    // Centre tap over the whole row, then the side taps where they exist.
                    for (o, &v) in row.iter_mut().zip(srow) {
                        *o += k1 * v;
                    }
                    if w > 1 {
                        for (o, &v) in row[1..].iter_mut().zip(&srow[..w - 1]) {
                            *o += k0 * v;
                        }
                        for (o, &v) in row[..w - 1].iter_mut().zip(&srow[1..]) {
                            *o += k2 * v;
                        }
                    }
                }
            }
        });
    out
}

/// The f × f max-pool of channels `start .. start + c` of x (B, ≥ start + c, H, W), H and W
/// multiples of f.
fn max_pool(x: &Tensor, start: usize, c: usize, f: usize) -> Result<Tensor> {
    let (b, cx, h, w) = x.dims4()?;
    let (ph, pw) = (h / f, w / f);
    let fast = on_cpu_f32([x], [], (b, c, ph, pw), |[x], []| {
        let mut out = vec![f32::NEG_INFINITY; b * c * ph * pw];
        out.par_chunks_mut((ph * pw).max(1))
            .enumerate()
            .for_each(|(i, o)| {
                let (n, ch) = (i / c, i % c);
                let src = &x[(n * cx + start + ch) * h * w..][..h * w];
                for (y, srow) in src.chunks_exact(w).enumerate() {
                    let orow = &mut o[(y / f) * pw..(y / f + 1) * pw];
                    for (m, cell) in orow.iter_mut().zip(srow.chunks_exact(f)) {
                        for &v in cell {
                            *m = m.max(v);
                        }
                    }
                }
            });
        out
    })?;
    match fast {
        Some(y) => Ok(y),
        None => Ok(x.narrow(1, start, c)?.contiguous()?.max_pool2d(f)?),
    }
}

/// The pyramid's levels (level i: (B, C, H / 2^i, W / 2^i)) upsampled by nearest repetition
/// to H × W and concatenated along the channels.
fn assemble(levels: &[Tensor; LEVELS], h: usize, w: usize) -> Result<Tensor> {
    let (b, c, _, _) = levels[0].dims4()?;
    let [l0, l1, l2, l3] = levels;
    let fast = on_cpu_f32(
        [l0, l1, l2, l3],
        [],
        (b, LEVELS * c, h, w),
        |sources, []| {
            let mut out = vec![0f32; b * LEVELS * c * h * w];
            out.par_chunks_mut((h * w).max(1))
                .enumerate()
                .for_each(|(i, o)| {
                    let (n, ch) = (i / (LEVELS * c), i % (LEVELS * c));
                    let (level, lc) = (ch / c, ch % c);
                    let f = 1 << level;
                    let (sh, sw) = (h / f, w / f);
                    let src = &sources[level][(n * c + lc) * sh * sw..][..sh * sw];
                    for (y, orow) in o.chunks_exact_mut(w).enumerate() {
                        let srow = &src[(y / f) * sw..(y / f + 1) * sw];
                        for (x, v) in orow.iter_mut().enumerate() {
                            *v = srow[x / f];
                        }
                    }
                });
            out
        },
    )?;
    if let Some(y) = fast {
        return Ok(y);
    }
    let up = levels
        .iter()
        .map(|l| l.upsample_nearest2d(h, w))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&up, 1)?)
}

/// `gelu · x + residual`, one pass on the CPU in f32.
fn modulate_add(gelu: &Tensor, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if gelu.dims() == x.dims() && x.dims() == residual.dims() {
        let fast = on_cpu_f32([gelu, x, residual], [], x.shape(), |[g, x, r], []| {
            let mut out = vec![0f32; x.len()];
            const CHUNK: usize = 1 << 14;
            out.par_chunks_mut(CHUNK)
                .zip(
                    g.par_chunks(CHUNK)
                        .zip(x.par_chunks(CHUNK).zip(r.par_chunks(CHUNK))),
                )
                .for_each(|(o, (g, (x, r)))| {
                    for (((o, &g), &x), &r) in o.iter_mut().zip(g).zip(x).zip(r) {
                        *o = g * x + r;
                    }
                });
            out
        })?;
        if let Some(y) = fast {
            return Ok(y);
        }
    }
    Ok(((gelu * x)? + residual)?)
}

pub(super) struct Safm {
    mfr: [Depthwise; LEVELS],
    aggr: Conv2d,
    chunk: usize,
}

impl Safm {
    pub(super) fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        let chunk = dim / LEVELS;
        let mfr = |i: usize| Depthwise::new(w, &format!("{prefix}.mfr.{i}"), chunk);
        let aggr = Conv2d::new(
            w.get(&format!("{prefix}.aggr.weight"), &[dim, dim, 1, 1])?,
            Some(w.get(&format!("{prefix}.aggr.bias"), &[dim])?),
            Default::default(),
        );
        Ok(Self {
            mfr: [mfr(0)?, mfr(1)?, mfr(2)?, mfr(3)?],
            aggr,
            chunk,
        })
    }

    /// `SAFM(x) + residual` for x (B, dim, H, W), H and W multiples of 2^(LEVELS − 1).
    pub(super) fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let multiple = 1 << (LEVELS - 1);
        if h % multiple != 0 || w % multiple != 0 {
            return Err(Error::option(
                "image",
                format!("SAFMN takes sides that are multiples of {multiple}, not {h}x{w}"),
            ));
        }
        let c = self.chunk;
        let level = |i: usize| -> Result<Tensor> {
            if i == 0 {
                self.mfr[0].forward(x, 0)
            } else {
                self.mfr[i].forward(&max_pool(x, i * c, c, 1 << i)?, 0)
            }
        };
        let levels = [level(0)?, level(1)?, level(2)?, level(3)?];
        let mixed = self.aggr.forward(&assemble(&levels, h, w)?)?;
        drop(levels);
        modulate_add(&gelu_erf(&mixed)?, x, residual)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    fn max(t: Tensor) -> Result<f32> {
        Ok(t.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    /// The CPU passes against candle's ops (which f64 takes).
    #[test]
    fn the_cpu_passes_equal_candles_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, cx, h, w) = (2, 12, 16, 24);
        let x = Tensor::randn(0f32, 1.0, (b, cx, h, w), &dev)?;
        let x64 = x.to_dtype(DType::F64)?;
        let conv = Depthwise {
            weight: Tensor::randn(0f32, 0.3, (3, 1, 3, 3), &dev)?,
            bias: Tensor::randn(0f32, 0.1, 3, &dev)?,
        };
        let conv64 = Depthwise {
            weight: conv.weight.to_dtype(DType::F64)?,
            bias: conv.bias.to_dtype(DType::F64)?,
        };
        for start in [0, 3, 9] {
            let want = conv64.forward(&x64, start)?.to_dtype(DType::F32)?;
            assert!(max((conv.forward(&x, start)? - want)?)? < 1e-5);
            for f in [2, 4, 8] {
                let want = max_pool(&x64, start, 3, f)?.to_dtype(DType::F32)?;
                assert_eq!(max((max_pool(&x, start, 3, f)? - want)?)?, 0.0);
            }
        }
        // One pixel wide or high: the side taps fall in the padding.
        let thin = Tensor::randn(0f32, 1.0, (1, 3, 5, 1), &dev)?;
        let want = conv64.forward(&thin.to_dtype(DType::F64)?, 0)?;
        assert!(max((conv.forward(&thin, 0)? - want.to_dtype(DType::F32)?)?)? < 1e-5);
        let levels: [Tensor; LEVELS] = std::array::from_fn(|i| {
            Tensor::randn(0f32, 1.0, (b, 3, h >> i, w >> i), &dev).unwrap()
        });
        let levels64 = levels.clone().map(|l| l.to_dtype(DType::F64).unwrap());
        let want = assemble(&levels64, h, w)?.to_dtype(DType::F32)?;
        assert_eq!(max((assemble(&levels, h, w)? - want)?)?, 0.0);
        Ok(())
    }
}
