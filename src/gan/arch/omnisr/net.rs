//! OmniSR's network (spandrel 0.4.2 `architectures/OmniSR/__arch/OmniSR.py`): a 3×3 input
//! conv, `res_num` OSAGs, a 3×3 output conv with the input conv's features added back, and a
//! 3×3 conv + pixel shuffle to the output. Inputs reach it zero-padded to a multiple of the
//! window ([`super::OmniSrParams::input_size`], `check_image_size`), a side under 16 first
//! reflect-padded to 16 ([`super::OmniSrParams::min_input_side`], spandrel's
//! `SizeRequirements(minimum=16)`), both by [`crate::gan::GanNetwork`].

use candle_core::Tensor;
use candle_nn::Module;

use super::ops::conv;
use super::osag::Osag;
use super::OmniSrParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;

pub struct OmniSr {
    input: Conv2d,
    groups: Vec<Osag>,
    output: Conv2d,
    up: Conv2d,
    scale: usize,
}

impl OmniSr {
    pub(crate) fn new(p: &OmniSrParams, w: &Weights) -> Result<Self> {
        let c = p.num_feat;
        let groups = (0..p.res_num)
            .map(|r| Osag::new(w, &format!("residual_layer.{r}"), p))
            .collect::<Result<Vec<_>>>()?;
        let shuffled = p.out_channels * p.up_scale * p.up_scale;
        Ok(Self {
            input: conv(w, "input", p.in_channels, c, 3, p.bias)?,
            groups,
            output: conv(w, "output", c, c, 3, p.bias)?,
            up: conv(w, "up.0", c, shuffled, 3, p.bias)?,
            scale: p.up_scale,
        })
    }
}

impl SrNet for OmniSr {
    /// x's sides are multiples of the window and at least 16.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let residual = self.input.forward(x)?;
        let mut out = residual.clone();
        for group in &self.groups {
            out = group.forward(&out)?;
        }
        let out = self.output.forward_add(&out, &residual)?;
        Ok(candle_nn::ops::pixel_shuffle(
            &self.up.forward(&out)?,
            self.scale,
        )?)
    }
}
