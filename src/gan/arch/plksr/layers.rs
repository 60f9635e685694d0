//! The layers PLKSR and RealPLKSR share (spandrel 0.4.2 `architectures/PLKSR/__arch/PLKSR.py`
//! and `RealPLKSR.py`): convolutions of any kernel read from the weights, EA (element-wise
//! attention, `x * sigmoid(conv3x3(x))`), the partial application of the large kernel to the
//! first channels, and the repeated-input residual both networks add before upsampling.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module};

use super::ops::mul_sigmoid;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;

/// `nn.Conv2d(c_in, c_out, k, padding=k // 2 · dilation, dilation)` with bias, square `k`:
/// `prefix.weight` (c_out, c_in, k, k) and `prefix.bias`. 3×3 layers take the Winograd route
/// on the CPU.
pub(super) fn conv(
    w: &Weights,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    dilation: usize,
) -> Result<Conv2d> {
    let weight = w.get(&format!("{prefix}.weight"), &[c_out, c_in, k, k])?;
    let bias = w.get(&format!("{prefix}.bias"), &[c_out])?;
    let config = Conv2dConfig {
        padding: (k / 2) * dilation,
        dilation,
        ..Default::default()
    };
    Ok(Conv2d::new(weight, Some(bias), config).with_winograd())
}

/// A 1×1 convolution without bias (DySample's `scope`).
pub(super) fn conv1x1_no_bias(
    w: &Weights,
    prefix: &str,
    c_in: usize,
    c_out: usize,
) -> Result<Conv2d> {
    let weight = w.get(&format!("{prefix}.weight"), &[c_out, c_in, 1, 1])?;
    Ok(Conv2d::new(weight, None, Conv2dConfig::default()))
}

/// A kh × kw convolution with torch's per-axis "same" padding (kh / 2, kw / 2), which
/// candle's single padding cannot express: the input is zero-padded first, the conv itself
/// unpadded (RectSparsePLK's m×n, n×m kernels).
pub(super) struct RectConv {
    conv: Conv2d,
    pad: (usize, usize),
}

impl RectConv {
    pub(super) fn new(w: &Weights, prefix: &str, c: usize, kh: usize, kw: usize) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[c, c, kh, kw])?;
        let bias = w.get(&format!("{prefix}.bias"), &[c])?;
        Ok(Self {
            conv: Conv2d::new(weight, Some(bias), Conv2dConfig::default()),
            pad: (kh / 2, kw / 2),
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ph, pw) = self.pad;
        let padded = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
        Ok(self.conv.forward(&padded)?)
    }
}

/// EA: `x * sigmoid(f.0(x))`, f.0 a 3×3 conv over all channels.
pub(super) struct Ea {
    f: Conv2d,
}

impl Ea {
    pub(super) fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            f: conv(w, &format!("{prefix}.f.0"), dim, dim, 3, 1)?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        mul_sigmoid(x, &self.f.forward(x)?)
    }
}

/// `x[:, :pdim] = lk(x[:, :pdim])`: the large kernel applied to the first `pdim` channels,
/// the others passed through (what PyTorch does in place in eval mode).
pub(super) fn partial(
    x: &Tensor,
    pdim: usize,
    lk: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dim = x.dim(1)?;
    let head = lk(&x.narrow(1, 0, pdim)?.contiguous()?)?;
    if pdim == dim {
        return Ok(head);
    }
    Ok(Tensor::cat(&[&head, &x.narrow(1, pdim, dim - pdim)?], 1)?)
}

/// `torch.repeat_interleave(x, n, dim=1)`: each channel repeated `n` times in place.
pub(super) fn repeat_channels(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, c, n, h, w))?
        .reshape((b, c * n, h, w))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn repeat_channels_repeats_each_channel_in_place() -> Result<()> {
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
        let got = repeat_channels(&x, 3)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got, [1., 1., 1., 2., 2., 2.]);
        Ok(())
    }

    #[test]
    fn partial_replaces_the_first_channels_only() -> Result<()> {
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 4, 1, 2))?;
        let got = partial(&x, 1, |h| Ok((h * 10.0)?))?;
        let got = got.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got, [0., 10., 2., 3., 4., 5., 6., 7.]);
        let all = partial(&x, 4, |h| Ok(h.to_dtype(DType::F32)?))?;
        assert_eq!(all.dims(), x.dims());
        Ok(())
    }
}
