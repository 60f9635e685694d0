//! `Downsample2D` of diffusers' models/downsampling.py with `use_conv=True`: a stride-2 3x3
//! convolution. With `padding=0` (the VAE encoder) diffusers first pads one zero column on the
//! right and one zero row at the bottom, so odd sizes round up the same way.

use candle_core::Tensor;
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};

use crate::Result;

#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_bottom_right: bool,
}

impl Downsample2D {
    pub fn new(
        channels: usize,
        out_channels: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(channels, out_channels, 3, cfg, vb.pp("conv"))?,
            pad_bottom_right: padding == 0,
        })
    }

    /// x (B, C, H, W) -> (B, C_out, ⌈H/2⌉-ish, ⌈W/2⌉-ish) per the conv arithmetic.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_bottom_right {
            let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            Ok(self.conv.forward(&padded)?)
        } else {
            Ok(self.conv.forward(x)?)
        }
    }
}
