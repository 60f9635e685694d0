//! RGT's depthwise convolutions (`groups = channels`: Rwin-SA's `get_v`, the MLP gate's
//! `conv`, RG-SA's `reduction1` (4×4, stride 4), `dwconv` and `cpe`; spandrel 0.4.2
//! `architectures/RGT/__arch/rgt.py`) run on token maps, (B, H·W, C) in row-major pixel order
//! — the layout the blocks keep their features in — instead of the reference's transposes
//! to (B, C, H, W) and back. The input may be a channel range of a wider map (the v third of
//! the qkv projection), and the output pass can multiply by a gate or add a residual.
//!
//! On the CPU in f32 one pass over the output rows, the channels innermost (contiguous in
//! memory, so the taps vectorise); elsewhere (GPUs, f64) the same sums as tensor ops: shifted
//! views times per-channel taps for stride 1, a reshape into 4×4 cells for the reduction.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// A depthwise k×k convolution with bias, stride `stride`, zero padding `pad`.
pub(super) struct Depthwise {
    /// (C, 1, k, k), in the compute dtype.
    weight: Tensor,
    bias: Tensor,
    /// The taps as (k·k, C) f32 on the host, for the CPU pass.
    taps: Option<Tensor>,
    k: usize,
    stride: usize,
    pad: usize,
}

/// What the output pass does besides the convolution.
#[derive(Clone, Copy)]
pub(super) enum Epilogue<'a> {
    None,
    /// Times channels `start ..` of this (B, H·W, ≥ start + C) map, pixel by pixel.
    Mul(&'a Tensor, usize),
    /// Plus this (B, H·W, C) map.
    Add(&'a Tensor),
}

/// A map's geometry: batch, height, width and its channels (the row stride).
#[derive(Debug, Clone, Copy)]
struct Grid {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Depthwise {
    /// `prefix.weight` (C, 1, k, k) and `prefix.bias`.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        channels: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[channels, 1, k, k])?;
        let bias = w.get(&format!("{prefix}.bias"), &[channels])?;
        let taps = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            Some(weight.reshape((channels, k * k))?.t()?.contiguous()?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            taps,
            k,
            stride,
            pad,
        })
    }

    /// The 3×3, stride-1, padding-1 convolution of `prefix`.
    pub(super) fn same3x3(w: &Weights, prefix: &str, channels: usize) -> Result<Self> {
        Self::new(w, prefix, channels, 3, 1, 1)
    }

    fn channels(&self) -> usize {
        self.bias.elem_count()
    }

    /// The output side for an input side `n`.
    pub(super) fn out_side(&self, n: usize) -> Option<usize> {
        (n + 2 * self.pad)
            .checked_sub(self.k)
            .map(|m| m / self.stride + 1)
    }

    /// The convolution of channels `start .. start + C` of x (B, h·w, ≥ start + C), an h × w
    /// map, into (B, h'·w', C), with `epilogue` applied.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        start: usize,
        (h, w): (usize, usize),
        epilogue: Epilogue,
    ) -> Result<Tensor> {
        let c = self.channels();
        let (b, l, cx) = x.dims3()?;
        let (Some(ho), Some(wo)) = (self.out_side(h), self.out_side(w)) else {
            return Err(Error::option(
                "image",
                format!(
                    "RGT's {0}x{0} convolution needs a map of at least {0}x{0}, not {h}x{w}",
                    self.k
                ),
            ));
        };
        if l != h * w || start + c > cx {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "depthwise conv: map {:?} is no {h}x{w} map with channels {start}..{}",
                x.dims(),
                start + c
            ))));
        }
        let fits = match epilogue {
            Epilogue::None => true,
            Epilogue::Mul(m, s) => {
                let (mb, ml, mc) = m.dims3()?;
                (mb, ml) == (b, ho * wo) && s + c <= mc
            }
            Epilogue::Add(a) => a.dims() == [b, ho * wo, c],
        };
        if !fits {
            return Err(Error::Tensor(candle_core::Error::Msg(
                "depthwise conv: the epilogue's map does not fit the output".into(),
            )));
        }
        let src = Grid { b, h, w, c: cx };
        let dst = Grid { b, h: ho, w: wo, c };
        if let Some(taps) = &self.taps {
            let (mul, mul_start, add) = match epilogue {
                Epilogue::None => (None, 0, None),
                Epilogue::Mul(m, s) => (Some(m), s, None),
                Epilogue::Add(a) => (None, 0, Some(a)),
            };
            let mul_c = mul.map(|m| m.dim(D::Minus1)).transpose()?.unwrap_or(0);
            let fast = on_cpu_f32(
                [x, taps, &self.bias],
                [mul, add],
                (b, ho * wo, c),
                |[x, taps, bias], [mul, add]| {
                    let mut out = self.cpu_pass(x, start, src, dst, taps, bias);
                    if let Some(m) = mul {
                        gate(&mut out, m, mul_c, mul_start, c);
                    }
                    if let Some(a) = add {
                        out.par_iter_mut()
                            .zip(a.par_iter())
                            .for_each(|(o, &a)| *o += a);
                    }
                    out
                },
            )?;
            if let Some(y) = fast {
                return Ok(y);
            }
        }
        let y = self.tensor_path(x, start, src, dst)?;
        Ok(match epilogue {
            Epilogue::None => y,
            Epilogue::Mul(m, s) => (y * m.narrow(2, s, c)?)?,
            Epilogue::Add(a) => (y + a)?,
        })
    }

    /// The CPU pass: output rows in parallel, each pixel's channels accumulated tap by tap.
    fn cpu_pass(
        &self,
        x: &[f32],
        start: usize,
        src: Grid,
        dst: Grid,
        taps: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let (k, s, p, c) = (self.k, self.stride, self.pad, dst.c);
        let mut out = vec![0f32; dst.b * dst.h * dst.w * c];
        out.par_chunks_mut((dst.w * c).max(1))
            .enumerate()
            .for_each(|(row, orow)| {
                let (n, oy) = (row / dst.h, row % dst.h);
                for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
                    o.copy_from_slice(bias);
                    for dy in 0..k {
                        // Input row oy·s + dy − p; rows outside are the zero padding.
                        let Some(sy) = (oy * s + dy).checked_sub(p).filter(|&y| y < src.h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(sx) = (ox * s + dx).checked_sub(p).filter(|&x| x < src.w)
                            else {
                                continue;
                            };
                            let at = ((n * src.h + sy) * src.w + sx) * src.c + start;
                            let tap = &taps[(dy * k + dx) * c..][..c];
                            for ((o, &t), &v) in o.iter_mut().zip(tap).zip(&x[at..at + c]) {
                                *o += t * v;
                            }
                        }
                    }
                }
            });
        out
    }

    /// The same convolution in tensor ops (any device and dtype).
    fn tensor_path(&self, x: &Tensor, start: usize, src: Grid, dst: Grid) -> Result<Tensor> {
        let (k, c) = (self.k, dst.c);
        let img = x.narrow(2, start, c)?.reshape((src.b, src.h, src.w, c))?;
        let taps = self.weight.reshape((c, k * k))?.t()?;
        let y = if self.stride == 1 {
            let p = self.pad;
            let padded = img.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
            let mut acc: Option<Tensor> = None;
            for dy in 0..k {
                for dx in 0..k {
                    let tap = taps.narrow(0, dy * k + dx, 1)?.reshape(c)?;
                    let view = padded.narrow(1, dy, dst.h)?.narrow(2, dx, dst.w)?;
                    let term = view.broadcast_mul(&tap)?;
                    acc = Some(match acc {
                        None => term,
                        Some(a) => (a + term)?,
                    });
                }
            }
            acc.ok_or_else(|| Error::unsupported("RGT depthwise conv", "has no taps"))?
        } else if self.stride == k && self.pad == 0 {
            // Non-overlapping k×k cells: the remainder rows and columns are dropped.
            let cells = img
                .narrow(1, 0, dst.h * k)?
                .narrow(2, 0, dst.w * k)?
                .reshape((src.b, dst.h, k, dst.w, k, c))?;
            let kernel = taps.reshape((1, 1, k, 1, k, c))?;
            cells.broadcast_mul(&kernel)?.sum(4)?.sum(2)?
        } else {
            return Err(Error::unsupported(
                "RGT depthwise conv",
                format!("stride {} with padding {}", self.stride, self.pad),
            ));
        };
        Ok(y.broadcast_add(&self.bias)?
            .reshape((dst.b, dst.h * dst.w, c))?)
    }
}

/// out[p][c] *= m[p][start + c] for a (pixels, mc) map `m`.
fn gate(out: &mut [f32], m: &[f32], mc: usize, start: usize, c: usize) {
    out.par_chunks_mut(c.max(1))
        .zip(m.par_chunks(mc.max(1)))
        .for_each(|(o, m)| {
            for (o, &g) in o.iter_mut().zip(&m[start..start + c]) {
                *o *= g;
            }
        });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::Device;

    use super::*;
    use crate::gan::StateDict;

    fn max(t: Tensor) -> Result<f32> {
        Ok(t.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    /// The convolution as torch computes it: transposed to (B, C, H, W), candle's grouped
    /// conv2d, back to tokens.
    fn reference(
        x: &Tensor,
        start: usize,
        c: usize,
        hw: (usize, usize),
        conv: &Depthwise,
    ) -> Result<Tensor> {
        let (b, _, _) = x.dims3()?;
        let img = x
            .narrow(2, start, c)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, c, hw.0, hw.1))?;
        let y = img.conv2d(&conv.weight, conv.pad, conv.stride, 1, c)?;
        let y = y.broadcast_add(&conv.bias.reshape((1, c, 1, 1))?)?;
        let (_, _, ho, wo) = y.dims4()?;
        Ok(y.reshape((b, c, ho * wo))?.transpose(1, 2)?.contiguous()?)
    }

    #[test]
    fn cpu_and_tensor_paths_equal_torchs_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        let c = 5;
        let dict: StateDict = [
            (
                "d3.weight".to_string(),
                Tensor::randn(0f32, 0.3, (c, 1, 3, 3), &dev)?,
            ),
            ("d3.bias".to_string(), Tensor::randn(0f32, 0.1, c, &dev)?),
            (
                "d4.weight".to_string(),
                Tensor::randn(0f32, 0.3, (c, 1, 4, 4), &dev)?,
            ),
            ("d4.bias".to_string(), Tensor::randn(0f32, 0.1, c, &dev)?),
        ]
        .into();
        for dtype in [DType::F32, DType::F64] {
            let w = Weights::new(&dict, dtype, &dev, Path::new("m"));
            let d3 = Depthwise::same3x3(&w, "d3", c)?;
            let d4 = Depthwise::new(&w, "d4", c, 4, 4, 0)?;
            for (h, wd) in [(9, 7), (1, 6), (17, 16)] {
                let x = Tensor::randn(0f32, 1.0, (2, h * wd, 3 * c), &dev)?.to_dtype(dtype)?;
                let want = reference(&x, 2 * c, c, (h, wd), &d3)?;
                let got = d3.forward(&x, 2 * c, (h, wd), Epilogue::None)?;
                assert!(max((got - &want)?.to_dtype(DType::F32)?)? < 1e-5);
                // The gate reads channels 1.. of a wider map; the residual is added.
                let got = d3.forward(&x, 2 * c, (h, wd), Epilogue::Mul(&x, 1))?;
                let gated = (&want * x.narrow(2, 1, c)?)?;
                assert!(max((got - gated)?.to_dtype(DType::F32)?)? < 1e-5);
                let r = x.narrow(2, 0, c)?.contiguous()?;
                let got = d3.forward(&x, 2 * c, (h, wd), Epilogue::Add(&r))?;
                assert!(max((got - (&want + &r)?)?.to_dtype(DType::F32)?)? < 1e-5);
                if h >= 4 && wd >= 4 {
                    let want = reference(&x, 0, c, (h, wd), &d4)?;
                    let got = d4.forward(&x, 0, (h, wd), Epilogue::None)?;
                    assert_eq!(got.dims(), want.dims());
                    assert!(max((got - want)?.to_dtype(DType::F32)?)? < 1e-5);
                } else {
                    assert!(d4.forward(&x, 0, (h, wd), Epilogue::None).is_err());
                }
            }
        }
        Ok(())
    }
}
