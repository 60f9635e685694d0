//! SRResNet's network (BasicSR `srresnet_arch.py`, `MSRResNet.forward`): leaky-ReLU(0.1)
//! after conv_first, residual blocks conv–ReLU–conv + x (no batch norm, residual scale 1), the
//! pixel-shuffle upsampling with a leaky ReLU after each shuffle, conv_hr with a leaky ReLU,
//! conv_last, plus the input upsampled bilinearly (`align_corners=False`).
//!
//! A leaky ReLU after a pixel shuffle equals one before it (the shuffle only moves values), so
//! it is fused into the upsampling conv's output pass; the bilinear base is added in
//! conv_last's.

use candle_core::Tensor;

use super::SrResNetParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// BasicSR's `nn.LeakyReLU(negative_slope=0.1)`.
const SLOPE: f32 = 0.1;

/// `ResidualBlockNoBN`: x + conv2(relu(conv1(x))).
struct ResidualBlock {
    conv1: Conv2d,
    conv2: Conv2d,
}

pub struct SrResNet {
    conv_first: Conv2d,
    body: Vec<ResidualBlock>,
    /// upconv1, and upconv2 for ×4; each followed by a pixel shuffle by `shuffle`.
    upconvs: Vec<Conv2d>,
    shuffle: usize,
    conv_hr: Conv2d,
    conv_last: Conv2d,
    relu: ChannelSlopes,
    lrelu: ChannelSlopes,
    /// The upsampling convs' outputs (nf · shuffle²) take the leaky ReLU too.
    lrelu_up: ChannelSlopes,
    scale: usize,
}

impl SrResNet {
    pub(crate) fn new(p: &SrResNetParams, w: &Weights) -> Result<Self> {
        let nf = p.num_feat;
        let body = (0..p.num_block)
            .map(|b| {
                Ok(ResidualBlock {
                    conv1: w.conv3x3(&format!("body.{b}.conv1"), nf, nf)?,
                    conv2: w.conv3x3(&format!("body.{b}.conv2"), nf, nf)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shuffle = if p.upscale == 4 { 2 } else { p.upscale };
        let up_out = nf * shuffle * shuffle;
        let mut upconvs = vec![w.conv3x3("upconv1", nf, up_out)?];
        if p.upscale == 4 {
            upconvs.push(w.conv3x3("upconv2", nf, up_out)?);
        }
        Ok(Self {
            conv_first: w.conv3x3("conv_first", p.in_channels, nf)?,
            body,
            upconvs,
            shuffle,
            conv_hr: w.conv3x3("conv_hr", nf, nf)?,
            conv_last: w.conv3x3("conv_last", nf, p.out_channels)?,
            relu: ChannelSlopes::uniform(0.0, nf, w.dtype, w.device)?,
            lrelu: ChannelSlopes::uniform(SLOPE, nf, w.dtype, w.device)?,
            lrelu_up: ChannelSlopes::uniform(SLOPE, up_out, w.dtype, w.device)?,
            scale: p.upscale,
        })
    }
}

impl SrNet for SrResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut feat = self.conv_first.forward_rectified(x, &self.lrelu)?;
        for block in &self.body {
            let mid = block.conv1.forward_rectified(&feat, &self.relu)?;
            feat = block.conv2.forward_add(&mid, &feat)?;
        }
        for up in &self.upconvs {
            let y = up.forward_rectified(&feat, &self.lrelu_up)?;
            feat = candle_nn::ops::pixel_shuffle(&y, self.shuffle)?;
        }
        let hr = self.conv_hr.forward_rectified(&feat, &self.lrelu)?;
        let s = self.scale;
        let base = x.upsample_bilinear2d(h * s, w * s, false)?;
        Ok(self.conv_last.forward_add(&hr, &base)?)
    }
}
