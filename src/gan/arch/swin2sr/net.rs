//! Swin2SR's network (spandrel 0.4.2 `architectures/Swin2SR/__arch/Swin2SR.py`
//! `Swin2SR.forward`): as SwinIR's, with Swin V2 blocks, a 1×1 conv patch embedding (at the
//! body's start and closing every residual stage), an optional absolute position embedding,
//! and the `pixelshuffle_aux` tail of the compressed-input model.

use candle_core::Tensor;
use candle_nn::Module;

use super::bicubic::resize_bicubic;
use super::block::Swin2Block;
use super::detect::{block_dims, tail_dims};
use super::{Swin2SrParams, Swin2SrUpsampler};
use crate::error::{Error, Result};
use crate::gan::arch::swin::layers::{conv1x1, image_mean, to_image, to_tokens, LayerNorm};
use crate::gan::arch::swin::{shuffle_stages, ResiConv, Tail};
use crate::gan::arch::{InputSize, SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// A residual Swin V2 stage: blocks, the residual conv, the stage's 1×1 patch embedding, plus
/// the stage input.
struct Rstb {
    blocks: Vec<Swin2Block>,
    conv: ResiConv,
    proj: Conv2d,
}

impl Rstb {
    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward(&y, h, w)?;
        }
        let y = self.conv.forward(&to_image(&y, h, w)?)?;
        to_tokens(&self.proj.forward_add(&y, &to_image(x, h, w)?)?)
    }
}

/// The `pixelshuffle_aux` tail: a bicubic-upscaled input branch (`conv_bicubic`), an
/// auxiliary low-resolution image (`conv_aux`) that the upsampler starts from
/// (`conv_after_aux`), their sum through `conv_last`.
struct AuxTail {
    bicubic: Conv2d,
    before: Conv2d,
    aux: Conv2d,
    after_aux: Conv2d,
    ups: Vec<(Conv2d, usize)>,
    last: Conv2d,
    /// `nn.LeakyReLU()`'s slope 0.01, after `conv_before_upsample` and `conv_after_aux`.
    lrelu: ChannelSlopes,
    scale: usize,
}

impl AuxTail {
    fn new(w: &Weights, p: &Swin2SrParams) -> Result<Self> {
        let (nf, c) = (p.num_feat, p.in_channels);
        let ups = shuffle_stages(p.upscale)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok((
                    w.conv3x3(&format!("upsample.{}", 2 * i), nf, r * r * nf)?,
                    r,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            bicubic: w.conv3x3("conv_bicubic", c, nf)?,
            before: w.conv3x3("conv_before_upsample.0", p.embed_dim, nf)?,
            aux: w.conv3x3("conv_aux", nf, c)?,
            after_aux: w.conv3x3("conv_after_aux.0", 3, nf)?,
            ups,
            last: w.conv3x3("conv_last", nf, c)?,
            lrelu: ChannelSlopes::uniform(0.01, nf, w.dtype, w.device)?,
            scale: p.upscale,
        })
    }

    /// `features` the body's output; `input` the normalised padded input; (h, w) the size
    /// before padding.
    fn forward(&self, features: &Tensor, input: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (oh, ow) = (h * self.scale, w * self.scale);
        let bicubic = self.bicubic.forward(&resize_bicubic(input, oh, ow)?)?;
        let x = self.before.forward_rectified(features, &self.lrelu)?;
        let aux = self.aux.forward(&x)?;
        let mut x = self.after_aux.forward_rectified(&aux, &self.lrelu)?;
        for (conv, r) in &self.ups {
            x = candle_nn::ops::pixel_shuffle(&conv.forward(&x)?, *r)?;
        }
        let x = (x.narrow(2, 0, oh)?.narrow(3, 0, ow)? + bicubic)?;
        Ok(self.last.forward(&x)?)
    }
}

enum Reconstruction {
    Shared(Tail),
    Aux(AuxTail),
}

pub struct Swin2Sr {
    mean: Tensor,
    img_range: f64,
    window: usize,
    conv_first: Conv2d,
    patch_proj: Conv2d,
    patch_norm: Option<LayerNorm>,
    /// (1, img_size², C), with the training size it was made for.
    ape: Option<(Tensor, usize)>,
    layers: Vec<Rstb>,
    norm: LayerNorm,
    conv_after_body: ResiConv,
    tail: Reconstruction,
}

impl Swin2Sr {
    pub(crate) fn new(p: &Swin2SrParams, w: &Weights) -> Result<Self> {
        let c = p.embed_dim;
        let mut layers = Vec::with_capacity(p.depths.len());
        for (i, (&depth, &heads)) in p.depths.iter().zip(&p.num_heads).enumerate() {
            let blocks = (0..depth)
                .map(|j| {
                    let prefix = format!("layers.{i}.residual_group.blocks.{j}");
                    Swin2Block::new(w, &prefix, &block_dims(p, heads, j), p.qkv_bias)
                })
                .collect::<Result<_>>()?;
            layers.push(Rstb {
                blocks,
                conv: ResiConv::new(w, &format!("layers.{i}.conv"), p.resi_connection, c)?,
                proj: conv1x1(w, &format!("layers.{i}.patch_embed.proj"), c, c)?,
            });
        }
        let ape = if p.ape {
            let t = w.get("absolute_pos_embed", &[1, p.img_size * p.img_size, c])?;
            Some((t, p.img_size))
        } else {
            None
        };
        let tail = match p.upsampler {
            Swin2SrUpsampler::Shared(u) => Reconstruction::Shared(Tail::new(w, u, &tail_dims(p))?),
            Swin2SrUpsampler::PixelShuffleAux => Reconstruction::Aux(AuxTail::new(w, p)?),
        };
        Ok(Self {
            mean: image_mean(p.in_channels, w.dtype, w.device)?,
            img_range: p.img_range,
            window: p.window_size,
            conv_first: w.conv3x3("conv_first", p.in_channels, c)?,
            patch_proj: conv1x1(w, "patch_embed.proj", c, c)?,
            patch_norm: if p.patch_norm {
                Some(LayerNorm::new(w, "patch_embed.norm", c)?)
            } else {
                None
            },
            ape,
            layers,
            norm: LayerNorm::new(w, "norm", c)?,
            conv_after_body: ResiConv::new(w, "conv_after_body", p.resi_connection, c)?,
            tail,
        })
    }

    /// `forward_features`: patch embedding, stages, norm, back to an image.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut t = to_tokens(&self.patch_proj.forward(x)?)?;
        if let Some(norm) = &self.patch_norm {
            t = norm.forward(&t)?;
        }
        if let Some((ape, size)) = &self.ape {
            if (h, w) != (*size, *size) {
                return Err(Error::unsupported(
                    "input size",
                    format!(
                        "{w}x{h} (padded): this Swin2SR has an absolute position embedding and \
                         runs at its training size {size}x{size} only"
                    ),
                ));
            }
            t = t.broadcast_add(ape)?;
        }
        for layer in &self.layers {
            t = layer.forward(&t, h, w)?;
        }
        to_image(&self.norm.forward(&t)?, h, w)
    }
}

impl SrNet for Swin2Sr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        // The aux model takes any size and pads itself (its bicubic branch needs h and w).
        let size = InputSize::reflect_to(self.window);
        let x = if size.fits(h, w) {
            x.clone()
        } else {
            size.pad(x)?
        };
        let mut x = x.broadcast_sub(&self.mean)?;
        if self.img_range != 1.0 {
            x = x.affine(self.img_range, 0.0)?;
        }
        let first = self.conv_first.forward(&x)?;
        let body = self
            .conv_after_body
            .forward_add(&self.features(&first)?, &first)?;
        let mut out = match &self.tail {
            Reconstruction::Shared(tail) => tail.forward(&body, &x)?,
            Reconstruction::Aux(tail) => tail.forward(&body, &x, h, w)?,
        };
        if self.img_range != 1.0 {
            out = out.affine(1.0 / self.img_range, 0.0)?;
        }
        Ok(out.broadcast_add(&self.mean)?)
    }
}
