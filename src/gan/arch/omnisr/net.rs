//! OmniSR's network (spandrel 0.4.2 `architectures/OmniSR/__arch/OmniSR.py`): a 3×3 input
//! conv, `res_num` OSAGs, a 3×3 output conv with the input conv's features added back, and a
//! 3×3 conv + pixel shuffle to the output. Inputs reach it zero-padded to a multiple of the
//! window ([`super::OmniSrParams::input_size`], `check_image_size`); a side still under 16 is
//! first reflect-padded to 16, as spandrel's call pads to `SizeRequirements(minimum=16)`.

use candle_core::Tensor;
use candle_nn::Module;

use super::config::MIN_SIDE;
use super::ops::conv;
use super::osag::Osag;
use super::OmniSrParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::tiling::reflect_pad;

pub struct OmniSr {
    input: Conv2d,
    groups: Vec<Osag>,
    output: Conv2d,
    up: Conv2d,
    scale: usize,
    window: usize,
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
            window: p.window_size.max(1),
        })
    }

    /// The model on an input whose sides are multiples of the window and at least 16.
    fn forward_padded(&self, x: &Tensor) -> Result<Tensor> {
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

impl SrNet for OmniSr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h >= MIN_SIDE && w >= MIN_SIDE {
            return self.forward_padded(x);
        }
        // spandrel's `pad_tensor`: reflect as far as the side allows, replicate the rest; then
        // the model's own zero padding to the window.
        let (th, tw) = (h.max(MIN_SIDE), w.max(MIN_SIDE));
        let (rh, rw) = ((th - h).min(h.saturating_sub(1)), (tw - w).min(w.saturating_sub(1)));
        let x = reflect_pad(x, 0, rh, 0, rw)?;
        let x = x
            .pad_with_same(2, 0, th - h - rh)?
            .pad_with_same(3, 0, tw - w - rw)?;
        let (ph, pw) = (th.next_multiple_of(self.window), tw.next_multiple_of(self.window));
        let x = x.pad_with_zeros(2, 0, ph - th)?.pad_with_zeros(3, 0, pw - tw)?;
        let s = self.scale;
        Ok(self
            .forward_padded(&x)?
            .narrow(2, 0, h * s)?
            .narrow(3, 0, w * s)?)
    }
}
