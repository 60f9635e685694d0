//! Real-CUGAN's two U-Nets and their blocks (spandrel 0.4.2
//! `architectures/RealCUGAN/__arch/upcunet_v3.py`: `SEBlock`, `UNetConv`, `UNet1`, `UNet1x3`,
//! `UNet2`). Every convolution is unpadded ("valid"), so each block shrinks its input; the
//! skip connections crop the larger map to the smaller (`F.pad` with negative pads) before
//! adding. Widths are fixed (32 to 256 channels); only the image channels vary.

use candle_core::{DType, Tensor, D};
use candle_nn::{Conv2dConfig, Module};

use super::resample::{StridedConv, TransposedConv, SLOPE};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// An unpadded convolution `prefix.weight` (co, ci, k, k) with bias.
fn valid_conv(w: &Weights, prefix: &str, ci: usize, co: usize, k: usize) -> Result<Conv2d> {
    let weight = w.get(&format!("{prefix}.weight"), &[co, ci, k, k])?;
    let bias = w.get(&format!("{prefix}.bias"), &[co])?;
    Ok(Conv2d::new(weight, Some(bias), Conv2dConfig::default()))
}

/// A 3×3 valid convolution followed by the leaky ReLU.
struct ConvLrelu {
    conv: Conv2d,
    lrelu: ChannelSlopes,
}

impl ConvLrelu {
    fn new(w: &Weights, prefix: &str, ci: usize, co: usize) -> Result<Self> {
        Ok(Self {
            conv: valid_conv(w, prefix, ci, co, 3)?,
            lrelu: ChannelSlopes::uniform(SLOPE, co, w.dtype, w.device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward_rectified(x, &self.lrelu)
    }
}

/// Squeeze-and-excitation: each channel scaled by a gate computed from the means of all
/// channels over the whole map (1×1 convs C → C/8 → C with biases, ReLU, sigmoid). Runs in
/// f32 whatever the network's dtype, as spandrel takes the mean of an f16 map in f32.
struct SeBlock {
    /// (C/8, C) and (C, C/8), f32.
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl SeBlock {
    fn new(w: &Weights, prefix: &str, c: usize) -> Result<Self> {
        let r = c / 8;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(w.get(&format!("{prefix}.{name}"), shape)?
                .to_dtype(DType::F32)?)
        };
        Ok(Self {
            w1: get("conv1.weight", &[r, c, 1, 1])?
                .reshape((r, c))?
                .t()?
                .contiguous()?,
            b1: get("conv1.bias", &[r])?.unsqueeze(0)?,
            w2: get("conv2.weight", &[c, r, 1, 1])?
                .reshape((c, r))?
                .t()?
                .contiguous()?,
            b2: get("conv2.bias", &[c])?.unsqueeze(0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let mean = x.to_dtype(DType::F32)?.flatten_from(2)?.mean(D::Minus1)?;
        let hidden = mean.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        let gate = candle_nn::ops::sigmoid(&hidden.matmul(&self.w2)?.broadcast_add(&self.b2)?)?;
        let gate = gate.to_dtype(x.dtype())?.reshape((b, c, 1, 1))?;
        Ok(x.broadcast_mul(&gate)?)
    }
}

/// `UNetConv`: two 3×3 valid convs with leaky ReLUs (shrinking the map by 4), then the
/// optional squeeze-and-excitation.
struct UNetConv {
    conv0: ConvLrelu,
    conv2: ConvLrelu,
    se: Option<SeBlock>,
}

impl UNetConv {
    fn new(
        w: &Weights,
        prefix: &str,
        (ci, mid, co): (usize, usize, usize),
        se: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv0: ConvLrelu::new(w, &format!("{prefix}.conv.0"), ci, mid)?,
            conv2: ConvLrelu::new(w, &format!("{prefix}.conv.2"), mid, co)?,
            se: se
                .then(|| SeBlock::new(w, &format!("{prefix}.seblock"), co))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.conv2.forward(&self.conv0.forward(x)?)?;
        match &self.se {
            Some(se) => se.forward(&z),
            None => Ok(z),
        }
    }
}

/// `x` without `n` pixels on each side (`F.pad(x, (-n, -n, -n, -n))`), a view.
pub(super) fn crop(x: &Tensor, n: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(x.narrow(2, n, h - 2 * n)?.narrow(3, n, w - 2 * n)?)
}

/// How UNet1 upsamples at its end (`conv_bottom`, a transposed conv): ×2 (`UNet1`, kernel 4,
/// padding 3) or ×3 (`UNet1x3`, kernel 5, padding 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bottom {
    X2,
    X3,
}

impl Bottom {
    /// (kernel, stride, padding) of `conv_bottom`.
    pub(super) fn geometry(self) -> (usize, usize, usize) {
        match self {
            Self::X2 => (4, 2, 3),
            Self::X3 => (5, 3, 2),
        }
    }
}

/// `UNet1` / `UNet1x3` with `deconv=True` (every Real-CUGAN builds it so): one level down,
/// then `conv_bottom` upsamples ×2 or ×3. Output side `s·(n − 14) − (4 or 2)` for input `n`.
pub(super) struct UNet1 {
    conv1: UNetConv,
    conv1_down: StridedConv,
    conv2: UNetConv,
    conv2_up: TransposedConv,
    conv3: ConvLrelu,
    conv_bottom: TransposedConv,
}

impl UNet1 {
    pub(super) fn new(
        w: &Weights,
        (ci, co): (usize, usize),
        bottom: Bottom,
        se: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv1: UNetConv::new(w, "unet1.conv1", (ci, 32, 64), false)?,
            conv1_down: StridedConv::new(w, "unet1.conv1_down", 64, 64, 2)?,
            conv2: UNetConv::new(w, "unet1.conv2", (64, 128, 64), se)?,
            conv2_up: TransposedConv::new(w, "unet1.conv2_up", (64, 64), (2, 2, 0), true)?,
            conv3: ConvLrelu::new(w, "unet1.conv3", 64, 64)?,
            conv_bottom: TransposedConv::new(
                w,
                "unet1.conv_bottom",
                (64, co),
                bottom.geometry(),
                false,
            )?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x1 = self.conv1.forward(x)?;
        let x2 = self.conv1_down.forward(&x1)?;
        let x2 = self.conv2_up.forward(&self.conv2.forward(&x2)?)?;
        let x3 = self.conv3.forward(&(crop(&x1, 4)? + x2)?)?;
        self.conv_bottom.forward(&x3)
    }
}

/// `UNet2` with `deconv=False`: two levels down and back, then a 3×3 valid `conv_bottom`.
/// Output side `n − 40` for input `n` (`n` ≡ 0 mod 4 after the first conv block's 4).
pub(super) struct UNet2 {
    conv1: UNetConv,
    conv1_down: StridedConv,
    conv2: UNetConv,
    conv2_down: StridedConv,
    conv3: UNetConv,
    conv3_up: TransposedConv,
    conv4: UNetConv,
    conv4_up: TransposedConv,
    conv5: ConvLrelu,
    conv_bottom: Conv2d,
}

impl UNet2 {
    pub(super) fn new(w: &Weights, (ci, co): (usize, usize), se: bool) -> Result<Self> {
        Ok(Self {
            conv1: UNetConv::new(w, "unet2.conv1", (ci, 32, 64), false)?,
            conv1_down: StridedConv::new(w, "unet2.conv1_down", 64, 64, 2)?,
            conv2: UNetConv::new(w, "unet2.conv2", (64, 64, 128), se)?,
            conv2_down: StridedConv::new(w, "unet2.conv2_down", 128, 128, 2)?,
            conv3: UNetConv::new(w, "unet2.conv3", (128, 256, 128), se)?,
            conv3_up: TransposedConv::new(w, "unet2.conv3_up", (128, 128), (2, 2, 0), true)?,
            conv4: UNetConv::new(w, "unet2.conv4", (128, 64, 64), se)?,
            conv4_up: TransposedConv::new(w, "unet2.conv4_up", (64, 64), (2, 2, 0), true)?,
            conv5: ConvLrelu::new(w, "unet2.conv5", 64, 64)?,
            conv_bottom: valid_conv(w, "unet2.conv_bottom", 64, co, 3)?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x1 = self.conv1.forward(x)?;
        let x2 = self.conv2.forward(&self.conv1_down.forward(&x1)?)?;
        let x3 = self.conv3.forward(&self.conv2_down.forward(&x2)?)?;
        let x3 = self.conv3_up.forward(&x3)?;
        let x4 = self.conv4.forward(&(crop(&x2, 4)? + x3)?)?;
        drop(x2);
        let x4 = self.conv4_up.forward(&x4)?;
        let x5 = self.conv5.forward(&(crop(&x1, 16)? + x4)?)?;
        drop(x1);
        Ok(self.conv_bottom.forward(&x5)?)
    }
}
