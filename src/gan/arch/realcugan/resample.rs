//! Real-CUGAN's resampling layers (spandrel 0.4.2 `architectures/RealCUGAN/__arch/upcunet_v3.py`)
//! rewritten as stride-1 convolutions, the only kind the project's fast CPU kernels run:
//!
//! - `nn.Conv2d(c, c, k, stride=k)` (the UNets' `conv*_down`) reads disjoint k×k blocks: it is
//!   a pixel unshuffle by k followed by a 1×1 convolution whose weight is the original one
//!   reshaped (the unshuffle orders channels `c·k² + ky·k + kx`, as the weight's last three axes
//!   flatten).
//! - `nn.ConvTranspose2d(ci, co, k, stride=s, padding=p)` (`conv*_up`, UNet1's `conv_bottom`)
//!   writes output `o = s·i + t − p` from input `i` and tap `t`. Output phase `r = o mod s`
//!   (`o = s·m + r`) reads inputs `m + δ` with `δ = (r + p − t) / s` wherever that divides, so
//!   every phase is an ordinary convolution over a few neighbouring inputs. One convolution
//!   with `co·s²` outputs computes all phases at once and a pixel shuffle interleaves them:
//!   2×2 stride 2 becomes a 1×1 conv, 4×4 stride 2 pad 3 a 3×3 conv, 5×5 stride 3 pad 2 a 3×3
//!   conv with padding 1 (its phases read `m` and `m + 1`; the padding supplies the last
//!   output row, which reads past the input's end only in taps that are zero).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, Module};

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// The leaky-ReLU slope Real-CUGAN uses after every convolution but the last.
pub(super) const SLOPE: f32 = 0.1;

/// A convolution with kernel = stride = `factor` and bias, then the leaky ReLU that always
/// follows it in Real-CUGAN (`F.leaky_relu(x, 0.1)` after `conv1_down` / `conv2_down`).
pub(super) struct StridedConv {
    conv: Conv2d,
    lrelu: ChannelSlopes,
    factor: usize,
}

impl StridedConv {
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        ci: usize,
        co: usize,
        factor: usize,
    ) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[co, ci, factor, factor])?;
        let bias = w.get(&format!("{prefix}.bias"), &[co])?;
        let weight = weight.reshape((co, ci * factor * factor, 1, 1))?;
        Ok(Self {
            conv: Conv2d::new(weight, Some(bias), Conv2dConfig::default()),
            lrelu: ChannelSlopes::uniform(SLOPE, co, w.dtype, w.device)?,
            factor,
        })
    }

    /// (B, ci, H, W) with H and W multiples of the factor → (B, co, H / f, W / f).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let blocks = candle_nn::ops::pixel_unshuffle(x, self.factor)?;
        self.conv.forward_rectified(&blocks, &self.lrelu)
    }
}

/// The geometry of a `ConvTranspose2d(kernel, stride, padding)` as a stride-1 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phases {
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Side of the equivalent convolution's kernel.
    taps: usize,
    /// Its (symmetric) zero padding.
    conv_padding: usize,
}

impl Phases {
    /// `δ` ranges over `0..=max_delta` (Real-CUGAN's layers never read before `m`), so the
    /// convolution's kernel index of `δ` is `δ + conv_padding`, with `conv_padding` the least
    /// that leaves the `ceil(out / s)` convolution outputs the phases need. `None` for a layer
    /// with a phase reading before `m` (none of Real-CUGAN's).
    fn new(kernel: usize, stride: usize, padding: usize) -> Option<Self> {
        if stride == 0 || kernel == 0 {
            return None;
        }
        let pairs = || (0..stride).flat_map(|r| (0..kernel).map(move |t| (r, t)));
        // Tap t feeds phase r when s divides r + p − t; a negative quotient reads before m.
        if pairs().any(|(r, t)| t > r + padding && (t - r - padding) % stride == 0) {
            return None;
        }
        let max_delta = pairs()
            .filter(|&(r, t)| t <= r + padding && (r + padding - t) % stride == 0)
            .map(|(r, t)| (r + padding - t) / stride)
            .max()?;
        // The conv gives n + P − max_delta rows for an input of n; the phases need
        // ceil(((n − 1)·s + k − 2p) / s) = n + ceil((k − 2p − s) / s).
        let (k, s, p) = (kernel as isize, stride as isize, padding as isize);
        let excess = k - 2 * p - s;
        let rows_over_n = if excess >= 0 {
            (excess + s - 1) / s
        } else {
            -(-excess / s)
        };
        let conv_padding = usize::try_from(rows_over_n + max_delta as isize).unwrap_or(0);
        Some(Self {
            kernel,
            stride,
            padding,
            taps: max_delta + conv_padding + 1,
            conv_padding,
        })
    }

    /// PyTorch's output length for an input of `n`.
    fn out_len(&self, n: usize) -> usize {
        ((n - 1) * self.stride + self.kernel).saturating_sub(2 * self.padding)
    }

    /// The tap of the transposed kernel that phase `r` applies at equivalent-kernel index `j`,
    /// if any.
    fn tap(&self, r: usize, j: usize) -> Option<usize> {
        let delta = j.checked_sub(self.conv_padding)?;
        let t = (r + self.padding).checked_sub(self.stride * delta)?;
        (t < self.kernel).then_some(t)
    }
}

/// `nn.ConvTranspose2d(ci, co, kernel, stride, padding)` with bias, optionally followed by the
/// leaky ReLU (the 2×2 `conv*_up` layers are; UNet1's `conv_bottom` is not).
pub(super) struct TransposedConv {
    conv: Conv2d,
    lrelu: Option<ChannelSlopes>,
    phases: Phases,
}

impl TransposedConv {
    /// Reads `prefix.weight` (ci, co, k, k) and `prefix.bias` (co), PyTorch's layout.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        (ci, co): (usize, usize),
        (kernel, stride, padding): (usize, usize, usize),
        activated: bool,
    ) -> Result<Self> {
        let phases = Phases::new(kernel, stride, padding).ok_or_else(|| {
            crate::Error::option(
                "ConvTranspose2d",
                format!("kernel {kernel}, stride {stride}, padding {padding} is not supported"),
            )
        })?;
        let weight = w.get(&format!("{prefix}.weight"), &[ci, co, kernel, kernel])?;
        let bias = w.get(&format!("{prefix}.bias"), &[co])?;
        let (weight, bias) = phase_weights(&weight, &bias, &phases)?;
        let (weight, bias) = (
            weight.to_device(w.device)?.to_dtype(w.dtype)?,
            bias.to_device(w.device)?.to_dtype(w.dtype)?,
        );
        let config = Conv2dConfig {
            padding: phases.conv_padding,
            ..Default::default()
        };
        let phased = co * stride * stride;
        let lrelu = activated
            .then(|| ChannelSlopes::uniform(SLOPE, phased, w.dtype, w.device))
            .transpose()?;
        Ok(Self {
            conv: Conv2d::new(weight, Some(bias), config).with_winograd(),
            lrelu,
            phases,
        })
    }

    /// (B, ci, H, W) → (B, co, out_len(H), out_len(W)).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let phased = match &self.lrelu {
            Some(lrelu) => self.conv.forward_rectified(x, lrelu)?,
            None => self.conv.forward(x)?,
        };
        let out = candle_nn::ops::pixel_shuffle(&phased, self.phases.stride)?;
        let (oh, ow) = (self.phases.out_len(h), self.phases.out_len(w));
        let (_, _, sh, sw) = out.dims4()?;
        if (sh, sw) == (oh, ow) {
            return Ok(out);
        }
        Ok(out.narrow(2, 0, oh)?.narrow(3, 0, ow)?)
    }
}

/// The equivalent convolution's weight (co·s², ci, K, K) and bias (co·s²) from the transposed
/// kernel (ci, co, k, k) and bias (co), arranged on the host in f32 (once, at load).
fn phase_weights(weight: &Tensor, bias: &Tensor, ph: &Phases) -> Result<(Tensor, Tensor)> {
    let (ci, co, k, _) = weight.dims4()?;
    let (s, taps) = (ph.stride, ph.taps);
    let src = weight
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = bias
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let out_ch = co * s * s;
    let mut dst = vec![0f32; out_ch * ci * taps * taps];
    let mut dst_bias = Vec::with_capacity(out_ch);
    for (o, &bias_o) in b.iter().enumerate().take(co) {
        for ry in 0..s {
            for rx in 0..s {
                let oc = (o * s + ry) * s + rx;
                dst_bias.push(bias_o);
                for jy in 0..taps {
                    let Some(ty) = ph.tap(ry, jy) else { continue };
                    for jx in 0..taps {
                        let Some(tx) = ph.tap(rx, jx) else { continue };
                        for i in 0..ci {
                            let from = ((i * co + o) * k + ty) * k + tx;
                            let to = ((oc * ci + i) * taps + jy) * taps + jx;
                            dst[to] = src[from];
                        }
                    }
                }
            }
        }
    }
    Ok((
        Tensor::from_vec(dst, (out_ch, ci, taps, taps), &Device::Cpu)?,
        Tensor::from_vec(dst_bias, out_ch, &Device::Cpu)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::gan::StateDict;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn phases_of_real_cugans_layers() {
        let p = |k, s, pad| Phases::new(k, s, pad).map(|p| (p.taps, p.conv_padding));
        assert_eq!(p(2, 2, 0), Some((1, 0)));
        assert_eq!(p(4, 2, 3), Some((3, 0)));
        assert_eq!(p(5, 3, 2), Some((3, 1)));
    }

    #[test]
    fn transposed_convs_equal_candles() -> Result<()> {
        let dev = Device::Cpu;
        for (ci, co, k, s, p) in [(3, 5, 2, 2, 0), (4, 3, 4, 2, 3), (4, 2, 5, 3, 2)] {
            let weight = Tensor::randn(0f32, 1.0, (ci, co, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, co, &dev)?;
            let dict: StateDict = [
                ("t.weight".to_string(), weight.clone()),
                ("t.bias".to_string(), bias.clone()),
            ]
            .into();
            let w = Weights::new(&dict, DType::F32, &dev, Path::new("t.safetensors"));
            let layer = TransposedConv::new(&w, "t", (ci, co), (k, s, p), false)?;
            for (h, wd) in [(7, 9), (8, 8), (12, 5)] {
                let x = Tensor::randn(0f32, 1.0, (2, ci, h, wd), &dev)?;
                let want = x
                    .conv_transpose2d(&weight, p, 0, s, 1)?
                    .broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
                let got = layer.forward(&x)?;
                assert_eq!(got.dims(), want.dims(), "k {k} s {s} p {p} {h}x{wd}");
                assert!(max_diff(&got, &want) < 1e-4, "k {k} s {s} p {p}");
            }
        }
        Ok(())
    }

    #[test]
    fn strided_convs_equal_candles() -> Result<()> {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (5, 3, 2, 2), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let dict: StateDict = [
            ("d.weight".to_string(), weight.clone()),
            ("d.bias".to_string(), bias.clone()),
        ]
        .into();
        let w = Weights::new(&dict, DType::F32, &dev, Path::new("d.safetensors"));
        let layer = StridedConv::new(&w, "d", 3, 5, 2)?;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 6, 10), &dev)?;
        let conv = x
            .conv2d(&weight, 0, 2, 1, 1)?
            .broadcast_add(&bias.reshape((1, 5, 1, 1))?)?;
        let want = candle_nn::ops::leaky_relu(&conv, f64::from(SLOPE))?;
        assert!(max_diff(&layer.forward(&x)?, &want) < 1e-5);
        Ok(())
    }
}
