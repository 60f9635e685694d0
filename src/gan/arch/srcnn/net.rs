//! SRCNN as the common PyTorch port runs it (yjn870/SRCNN-pytorch `test.py` and `models.py`):
//! the RGB input upscaled by Pillow's bicubic, converted to YCbCr, the three convolutions
//! (ReLU after the first two, "same" padding) on Y, the result clamped to [0, 1] as the port
//! clamps its prediction, and merged back with the bicubic Cb and Cr into RGB. A 3-channel
//! SRCNN runs on the bicubic RGB directly. The port's 8-bit rounding of the bicubic image is
//! not reproduced: diffsr keeps the whole pipeline in floating point.

use candle_core::Tensor;
use candle_nn::Module;

use super::bicubic::resize_bicubic;
use super::colour::{rgb_to_ycbcr, ycbcr_to_rgb};
use super::SrcnnParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

pub struct Srcnn {
    convs: [Conv2d; 3],
    relu: [ChannelSlopes; 2],
    /// The YCbCr conversions, for a network on Y.
    colour: Option<(Conv2d, Conv2d)>,
    scale: usize,
}

impl Srcnn {
    pub(crate) fn new(p: &SrcnnParams, w: &Weights) -> Result<Self> {
        let c = p.net_channels;
        let [n1, n2] = p.filters;
        let conv = |name: &str, c_in: usize, c_out: usize, k: usize| -> Result<Conv2d> {
            let weight = w.get(&format!("{name}.weight"), &[c_out, c_in, k, k])?;
            let bias = p
                .bias
                .then(|| w.get(&format!("{name}.bias"), &[c_out]))
                .transpose()?;
            let config = candle_nn::Conv2dConfig {
                padding: k / 2,
                ..Default::default()
            };
            let conv = Conv2d::new(weight, bias, config);
            Ok(if k == 3 { conv.with_winograd() } else { conv })
        };
        let [f1, f2, f3] = p.kernels;
        let colour = if c == 1 {
            Some((
                rgb_to_ycbcr(w.dtype, w.device)?,
                ycbcr_to_rgb(w.dtype, w.device)?,
            ))
        } else {
            None
        };
        Ok(Self {
            convs: [
                conv("conv1", c, n1, f1)?,
                conv("conv2", n1, n2, f2)?,
                conv("conv3", n2, c, f3)?,
            ],
            relu: [
                ChannelSlopes::uniform(0.0, n1, w.dtype, w.device)?,
                ChannelSlopes::uniform(0.0, n2, w.dtype, w.device)?,
            ],
            colour,
            scale: p.scale,
        })
    }

    fn network(&self, x: &Tensor) -> Result<Tensor> {
        let [c1, c2, c3] = &self.convs;
        let h = c1.forward_rectified(x, &self.relu[0])?;
        let h = c2.forward_rectified(&h, &self.relu[1])?;
        Ok(c3.forward(&h)?)
    }
}

impl SrNet for Srcnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let s = self.scale;
        let up = resize_bicubic(x, h * s, w * s)?;
        let Some((to_ycbcr, to_rgb)) = &self.colour else {
            return self.network(&up);
        };
        let ycbcr = to_ycbcr.forward(&up)?;
        let y = self.network(&ycbcr.narrow(1, 0, 1)?)?.clamp(0f32, 1f32)?;
        let merged = Tensor::cat(&[&y, &ycbcr.narrow(1, 1, 2)?], 1)?;
        Ok(to_rgb.forward(&merged)?)
    }
}
