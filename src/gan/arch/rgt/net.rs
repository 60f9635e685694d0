//! RGT's network (spandrel 0.4.2 `architectures/RGT/__arch/rgt.py`, Chen et al., "Recursive
//! Generalization Transformer for Image Super-Resolution", ICLR 2024): the RGB mean
//! subtracted, a 3×3 conv to `embed_dim`, a layer norm over the tokens, residual groups of
//! [`Block`]s (each group closed by a conv and its own residual), a final norm and conv with
//! a residual to the shallow features, then the reconstruction: a 3×3 conv to 64 channels
//! with a leaky ReLU, pixel-shuffle stages, a 3×3 conv to the image, the mean added back.
//! Module names follow the reference so its keys load as is.

use candle_core::{Device, Tensor};
use candle_nn::Module;

use super::block::{Block, Norm};
use super::config::{ResiConnection, IMG_RANGE, MIN_SIDE, NUM_FEAT, RGB_MEAN};
use super::detect::upsample_stages;
use super::RgtParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::ChannelSlopes;
use crate::tiling::reflect_pad;

/// The residual conv of a group or of the body (`1conv` / `3conv`).
enum ResiConv {
    One(Conv2d),
    Three {
        convs: [Conv2d; 3],
        /// Leaky ReLU 0.2 over dim / 4 channels.
        act: ChannelSlopes,
    },
}

impl ResiConv {
    fn new(w: &Weights, prefix: &str, dim: usize, kind: ResiConnection) -> Result<Self> {
        Ok(match kind {
            ResiConnection::OneConv => Self::One(w.conv3x3(prefix, dim, dim)?),
            ResiConnection::ThreeConv => {
                let q = dim / 4;
                let squeeze = Conv2d::new(
                    w.get(&format!("{prefix}.2.weight"), &[q, q, 1, 1])?,
                    Some(w.get(&format!("{prefix}.2.bias"), &[q])?),
                    Default::default(),
                );
                Self::Three {
                    convs: [
                        w.conv3x3(&format!("{prefix}.0"), dim, q)?,
                        squeeze,
                        w.conv3x3(&format!("{prefix}.4"), q, dim)?,
                    ],
                    act: ChannelSlopes::uniform(0.2, q, w.dtype, w.device)?,
                }
            }
        })
    }

    /// conv(x), x (B, C, H, W).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::One(conv) => conv.forward(x)?,
            Self::Three { convs, act } => {
                let y = convs[0].forward_rectified(x, act)?;
                let y = convs[1].forward_rectified(&y, act)?;
                convs[2].forward(&y)?
            }
        })
    }

    /// conv(x) + residual, x and residual (B, C, H, W).
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::One(conv) => conv.forward_add(x, residual)?,
            Self::Three { convs, act } => {
                let y = convs[0].forward_rectified(x, act)?;
                let y = convs[1].forward_rectified(&y, act)?;
                convs[2].forward_add(&y, residual)?
            }
        })
    }
}

/// Tokens (B, H·W, C) as a (B, C, H, W) map.
fn to_map(t: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (b, _, c) = t.dims3()?;
    Ok(t.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?)
}

/// A (B, C, H, W) map as tokens (B, H·W, C).
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?)
}

/// `ResidualGroup`: its blocks, then its conv on the map, plus the group's input.
struct ResidualGroup {
    blocks: Vec<Block>,
    conv: ResiConv,
}

impl ResidualGroup {
    fn forward(&self, x: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
        let mut t = x.clone();
        for block in &self.blocks {
            t = block.forward(&t, hw)?;
        }
        let map = to_map(&t, hw)?;
        drop(t);
        let y = self.conv.forward(&map)?;
        drop(map);
        // conv(map) read as tokens (a transposed view) plus the group's input, in one pass.
        let (b, c, h, w) = y.dims4()?;
        Ok((y.reshape((b, c, h * w))?.transpose(1, 2)? + x)?)
    }
}

pub struct Rgt {
    /// (1, 3, 1, 1) RGB mean in the compute dtype for 3-channel models.
    mean: Option<Tensor>,
    conv_first: Conv2d,
    before_rg: Norm,
    layers: Vec<ResidualGroup>,
    norm: Norm,
    conv_after_body: ResiConv,
    conv_before_upsample: Conv2d,
    /// Leaky ReLU (PyTorch's default slope, 0.01) after `conv_before_upsample`.
    leaky: ChannelSlopes,
    /// The upsampler's convs and their pixel-shuffle factors.
    upsample: Vec<(Conv2d, usize)>,
    conv_last: Conv2d,
}

impl Rgt {
    pub(crate) fn new(p: &RgtParams, w: &Weights) -> Result<Self> {
        let dim = p.embed_dim;
        let mean = if p.in_chans == 3 {
            let mean = Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), &Device::Cpu)?;
            Some(mean.to_dtype(w.dtype)?.to_device(w.device)?)
        } else {
            None
        };
        let layers = p
            .depth
            .iter()
            .enumerate()
            .map(|(g, &depth)| {
                Ok(ResidualGroup {
                    blocks: (0..depth)
                        .map(|j| Block::new(w, p, g, j))
                        .collect::<Result<_>>()?,
                    conv: ResiConv::new(w, &format!("layers.{g}.conv"), dim, p.resi_connection)?,
                })
            })
            .collect::<Result<_>>()?;
        let upsample = upsample_stages(p.upscale)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let conv = w.conv3x3(&format!("upsample.{}", 2 * i), NUM_FEAT, r * r * NUM_FEAT)?;
                Ok((conv, r))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            mean,
            conv_first: w.conv3x3("conv_first", p.in_chans, dim)?,
            before_rg: Norm::new(w, "before_RG.1", dim)?,
            layers,
            norm: Norm::new(w, "norm", dim)?,
            conv_after_body: ResiConv::new(w, "conv_after_body", dim, p.resi_connection)?,
            conv_before_upsample: w.conv3x3("conv_before_upsample.0", dim, NUM_FEAT)?,
            leaky: ChannelSlopes::uniform(0.01, NUM_FEAT, w.dtype, w.device)?,
            upsample,
            conv_last: w.conv3x3("conv_last", NUM_FEAT, p.in_chans)?,
        })
    }

    /// The network on an input whose sides are at least [`MIN_SIDE`].
    fn forward_sized(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let x = match &self.mean {
            Some(mean) => x.broadcast_sub(mean)?,
            None => x.clone(),
        };
        let x = if IMG_RANGE == 1.0 {
            x
        } else {
            x.affine(IMG_RANGE, 0.0)?
        };
        let shallow = self.conv_first.forward(&x)?;
        let mut t = self.before_rg.forward(&to_tokens(&shallow)?)?;
        for layer in &self.layers {
            t = layer.forward(&t, (h, w))?;
        }
        let deep = to_map(&self.norm.forward(&t)?, (h, w))?;
        drop(t);
        let body = self.conv_after_body.forward_add(&deep, &shallow)?;
        drop((deep, shallow));
        let mut y = self
            .conv_before_upsample
            .forward_rectified(&body, &self.leaky)?;
        for (conv, r) in &self.upsample {
            y = candle_nn::ops::pixel_shuffle(&conv.forward(&y)?, *r)?;
        }
        let y = self.conv_last.forward(&y)?;
        let y = if IMG_RANGE == 1.0 {
            y
        } else {
            y.affine(1.0 / IMG_RANGE, 0.0)?
        };
        Ok(match &self.mean {
            Some(mean) => y.broadcast_add(mean)?,
            None => y,
        })
    }
}

/// Pads the bottom and right of x (B, C, H, W) to sides of at least `min` as spandrel's
/// `pad_tensor` does for `SizeRequirements.minimum`: mirrored by up to side − 1 pixels, the
/// rest replicated.
fn pad_to_minimum(x: &Tensor, min: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (pad_h, pad_w) = (min.saturating_sub(h), min.saturating_sub(w));
    let (rh, rw) = (
        pad_h.min(h.saturating_sub(1)),
        pad_w.min(w.saturating_sub(1)),
    );
    let x = reflect_pad(x, 0, rh, 0, rw)?;
    Ok(x.pad_with_same(2, 0, pad_h - rh)?
        .pad_with_same(3, 0, pad_w - rw)?)
}

impl SrNet for Rgt {
    /// Sides below 16 are padded up to 16 first and the output cropped back, as spandrel's
    /// model descriptor does for RGT's minimum size.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h >= MIN_SIDE && w >= MIN_SIDE {
            return self.forward_sized(x);
        }
        let y = self.forward_sized(&pad_to_minimum(x, MIN_SIDE)?)?;
        let s = y.dim(2)? / h.max(MIN_SIDE);
        Ok(y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(t.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?)
    }

    #[test]
    fn short_sides_are_reflected_then_replicated() -> Result<()> {
        // A row [0 1 2] padded by 3: 2 mirrored (1, 0), then the last replicated.
        let x = Tensor::arange(0f32, 3.0, &Device::Cpu)?.reshape((1, 1, 1, 3))?;
        let got = pad_to_minimum(&x, 6)?;
        assert_eq!(got.dims(), [1, 1, 6, 6]);
        assert_eq!(rows(&got)?[0], [0., 1., 2., 1., 0., 0.]);
        // A one-pixel axis only replicates.
        assert!(rows(&got)?.iter().all(|r| r == &rows(&got).unwrap()[0]));
        Ok(())
    }
}
