//! DySample, RealPLKSR's learned upsampler (spandrel 0.4.2
//! `architectures/__arch_helpers/dysample.py`, after "Learning to Upsample by Learning to
//! Sample", arXiv 2308.15085): 1×1 convs predict, for each of `groups` channel groups and each
//! of the s² output pixels of an input pixel, an offset (`offset(x) · sigmoid(scope(x)) · 0.5
//! + init_pos`); the group's channels are sampled bilinearly (border padding) at the input
//! pixel moved by that offset; an optional 1×1 `end_conv` maps the channels to the image.
//!
//! The reference builds normalised grid coordinates 2·(pixel + 0.5 + offset) / size − 1 and
//! grid_sample unnormalises them back to pixel + offset: the sampling here takes pixel +
//! offset directly (the same value, without the round trip), in f32 whatever the model's
//! dtype, since a half-precision coordinate would be off by a quarter pixel at 512.

use candle_core::{DType, Tensor};
use candle_nn::Module;

use super::grid_sample::sample_bilinear_border;
use super::layers::{conv, conv1x1_no_bias};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;

pub(super) struct DySample {
    offset: Conv2d,
    scope: Conv2d,
    /// (1, 2·groups·s², 1, 1): the file's `init_pos` buffer (the offsets' resting positions).
    init_pos: Tensor,
    end_conv: Option<Conv2d>,
    scale: usize,
    groups: usize,
}

impl DySample {
    /// `prefix` (`to_img`) with `channels` inputs, `out` outputs through the end conv (none
    /// when `end_conv` is false), `groups` sampling groups, ×`scale`.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        channels: usize,
        out: usize,
        scale: usize,
        groups: usize,
        end_conv: bool,
    ) -> Result<Self> {
        let offsets = 2 * groups * scale * scale;
        Ok(Self {
            offset: conv(w, &format!("{prefix}.offset"), channels, offsets, 1, 1)?,
            scope: conv1x1_no_bias(w, &format!("{prefix}.scope"), channels, offsets)?,
            init_pos: w.get(&format!("{prefix}.init_pos"), &[1, offsets, 1, 1])?,
            end_conv: end_conv
                .then(|| conv(w, &format!("{prefix}.end_conv"), channels, out, 1, 1))
                .transpose()?,
            scale,
            groups,
        })
    }

    /// x (B, C, H, W) → (B, out, s·H, s·W).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (s, g) = (self.scale, self.groups);
        // offset(x) · sigmoid(scope(x)) · 0.5 + init_pos, then in f32.
        let gate = candle_nn::ops::sigmoid(&self.scope.forward(x)?)?;
        let offset = (self.offset.forward(x)? * gate)?
            .affine(0.5, 0.0)?
            .broadcast_add(&self.init_pos)?
            .to_dtype(DType::F32)?;
        // Channel (axis, group, i, j) at (y, x) is output pixel (s·y + i, s·x + j) of that
        // group's axis: a pixel shuffle, to (B, 2·g, s·H, s·W) = (B, 2, g, sH, sW).
        let (sh, sw) = (s * h, s * w);
        let offset = candle_nn::ops::pixel_shuffle(&offset, s)?.reshape((b, 2, g, sh, sw))?;
        // The source pixel each output pixel starts from: (⌊Y / s⌋, ⌊X / s⌋).
        let dev = x.device();
        let source = |n: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..n * s).map(|i| (i / s) as f32).collect();
            Ok(Tensor::from_vec(v, n * s, dev)?)
        };
        let ix = offset
            .narrow(1, 0, 1)?
            .reshape((b * g, sh, sw))?
            .broadcast_add(&source(w)?.reshape((1, 1, sw))?)?;
        let iy = offset
            .narrow(1, 1, 1)?
            .reshape((b * g, sh, sw))?
            .broadcast_add(&source(h)?.reshape((1, sh, 1))?)?;
        let groups = x.reshape((b * g, c / g, h, w))?;
        let sampled = sample_bilinear_border(&groups, &ix, &iy)?
            .reshape((b, c, sh, sw))?
            .to_dtype(x.dtype())?;
        match &self.end_conv {
            Some(end) => Ok(end.forward(&sampled)?),
            None => Ok(sampled),
        }
    }
}
