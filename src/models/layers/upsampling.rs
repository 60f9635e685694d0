//! `Upsample2D` of diffusers' models/upsampling.py with `use_conv=True`: nearest-neighbour
//! interpolation (to twice the size, or to an explicit size when the UNet forwards one for
//! latents that are not a multiple of its downsampling factor), then a 3x3 convolution.

use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::conv::Conv2d;

use super::resnet::conv3x3;
use crate::Result;

#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(channels, out_channels, vb.pp("conv"))?,
        })
    }

    /// x (B, C, H, W) -> (B, C_out, 2H, 2W), or (B, C_out, size.0, size.1).
    ///
    /// candle's nearest interpolation picks source index ⌊i·in/out⌋, as torch's
    /// `F.interpolate(size=...)` does.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        let up = crate::profile::time(crate::profile::Stage::Resample, || {
            x.upsample_nearest2d(th, tw)
        })?;
        Ok(self.conv.forward(&up)?)
    }
}
