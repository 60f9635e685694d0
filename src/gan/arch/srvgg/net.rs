//! SRVGGNetCompact's network (Real-ESRGAN's `srvgg_arch.py`): a plain chain of 3×3
//! convolutions and activations at the input resolution, a pixel shuffle, and the
//! nearest-neighbour upsampled input added back.

use candle_core::Tensor;
use candle_nn::Module;

use super::shuffle_add::pixel_shuffle_add_nearest;
use super::{OutputResize, SrvggAct, SrvggParams};
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

pub struct Srvgg {
    convs: Vec<Conv2d>,
    /// The rectifier after each conv but the last, fused into the conv's output pass.
    acts: Vec<ChannelSlopes>,
    upscale: usize,
    output_resize: Option<OutputResize>,
}

impl Srvgg {
    pub(crate) fn new(p: &SrvggParams, w: &Weights) -> Result<Self> {
        let mut convs = Vec::with_capacity(p.num_conv + 2);
        let mut acts = Vec::with_capacity(p.num_conv + 1);
        // body = [conv, act, (conv, act) × num_conv, conv]: module index 2k is the k-th conv.
        for k in 0..=p.num_conv {
            let c_in = if k == 0 { p.in_channels } else { p.num_feat };
            convs.push(w.conv3x3(&format!("body.{}", 2 * k), c_in, p.num_feat)?);
            let uniform = |slope| ChannelSlopes::uniform(slope, p.num_feat, w.dtype, w.device);
            acts.push(match p.act {
                SrvggAct::PRelu => ChannelSlopes::learned(
                    &w.get(&format!("body.{}.weight", 2 * k + 1), &[p.num_feat])?,
                )?,
                SrvggAct::Relu => uniform(0.0)?,
                // Real-ESRGAN's act_type='leakyrelu' is nn.LeakyReLU(0.1).
                SrvggAct::LeakyRelu => uniform(0.1)?,
            });
        }
        let last = 2 * p.num_conv + 2;
        let c_out = p.out_channels * p.upscale * p.upscale;
        convs.push(w.conv3x3(&format!("body.{last}"), p.num_feat, c_out)?);
        Ok(Self {
            convs,
            acts,
            upscale: p.upscale,
            output_resize: p.output_resize,
        })
    }
}

impl SrNet for Srvgg {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (conv, act) in self.convs.iter().zip(&self.acts) {
            h = conv.forward_rectified(&h, act)?;
        }
        let last = self.convs.last().expect("at least one conv").forward(&h)?;
        let out = pixel_shuffle_add_nearest(&last, x, self.upscale)?;
        match &self.output_resize {
            None => Ok(out),
            Some(resize) => resize.apply(&out),
        }
    }
}
