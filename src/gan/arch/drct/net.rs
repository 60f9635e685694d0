//! DRCT's network (spandrel 0.4.2 `architectures/DRCT/__arch/drct_arch.py`, `RDG` and
//! `DRCT.forward`): the input less the DIV2K mean (times `img_range`), a 3×3 conv, the patch
//! embedding (its LayerNorm, the absolute position embedding), the residual dense groups, a
//! LayerNorm, the body's residual conv plus the first conv's output, the pixel-shuffle tail;
//! divided back and the mean added. Without upsampler the reference skips all of it and
//! returns the input (the mean taken off and put back). Sides are multiples of 16 and of the
//! window (`GanNetwork` pads them as spandrel's `pad_tensor`).

use candle_core::Tensor;
use candle_nn::Module;

use super::block::DrctBlock;
use super::{DrctParams, DrctResi};
use crate::error::Result;
use crate::gan::arch::swin::layers::{image_mean, to_image, to_tokens, LayerNorm};
use crate::gan::arch::swin::{Tail, TailDims, Upsampler};
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::linear::Linear;

/// A 1×1 convolution on tokens: `prefix.weight` (c_out, c_in, 1, 1) as a linear layer.
fn adjust(w: &Weights, prefix: &str, c_in: usize, c_out: usize) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[c_out, c_in, 1, 1])?;
    let bias = w.get(&format!("{prefix}.bias"), &[c_out])?;
    Ok(Linear::new(weight.reshape((c_out, c_in))?, Some(bias)))
}

/// Leaky ReLU with slope 0.2 (`nn.LeakyReLU(negative_slope=0.2)`): max(x, 0.2·x).
fn lrelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.maximum(&x.affine(0.2, 0.0)?)?)
}

/// A residual dense group (RDG): five Swin blocks, block k on the concatenation of the group
/// input and the k earlier outputs, each output compressed to gc channels by a 1×1 conv
/// (`adjustK`, leaky ReLU 0.2), the last back to embed_dim; out = 0.2 · x5 + x.
struct Rdg {
    blocks: Vec<DrctBlock>,
    adjusts: Vec<Linear>,
}

impl Rdg {
    fn new(p: &DrctParams, w: &Weights, layer: usize) -> Result<Self> {
        let dims = p.block_dims(layer);
        let mut blocks = Vec::with_capacity(5);
        let mut adjusts = Vec::with_capacity(5);
        for (k, d) in dims.iter().enumerate() {
            let prefix = format!("layers.{layer}.swin{}", k + 1);
            blocks.push(DrctBlock::new(w, &prefix, d, p.qkv_bias)?);
            let out = if k < 4 { p.gc } else { p.embed_dim };
            adjusts.push(adjust(
                w,
                &format!("layers.{layer}.adjust{}", k + 1),
                d.dim,
                out,
            )?);
        }
        Ok(Self { blocks, adjusts })
    }

    /// x (B, H·W, C) tokens → the same shape.
    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        // Tokens in image order: the reference's PatchUnEmbed → 1×1 conv → PatchEmbed is a
        // linear map on each token.
        let mut dense = x.clone();
        let last = self.blocks.len() - 1;
        for (k, (block, adjust)) in self.blocks.iter().zip(&self.adjusts).enumerate() {
            let y = adjust.forward(&block.forward(&dense, h, w)?)?;
            if k == last {
                return Ok((y.affine(0.2, 0.0)? + x)?);
            }
            dense = Tensor::cat(&[&dense, &lrelu(&y)?], 2)?;
        }
        Ok(dense)
    }
}

/// The body and tail, present when the network has an upsampler.
struct Body {
    conv_first: Conv2d,
    patch_norm: Option<LayerNorm>,
    /// (1, img_size², C).
    pos_embed: Option<Tensor>,
    layers: Vec<Rdg>,
    norm: LayerNorm,
    conv_after_body: Option<Conv2d>,
    tail: Tail,
}

pub struct Drct {
    mean: Tensor,
    img_range: f64,
    body: Option<Body>,
}

impl Drct {
    pub(crate) fn new(p: &DrctParams, w: &Weights) -> Result<Self> {
        let c = p.embed_dim;
        let body = match p.upsampler {
            Upsampler::None => None,
            _ => Some(Body {
                conv_first: w.conv3x3("conv_first", p.in_channels, c)?,
                patch_norm: p
                    .patch_norm
                    .then(|| LayerNorm::new(w, "patch_embed.norm", c))
                    .transpose()?,
                pos_embed: p
                    .ape
                    .then(|| w.get("absolute_pos_embed", &[1, p.img_size * p.img_size, c]))
                    .transpose()?,
                layers: (0..p.num_heads.len())
                    .map(|i| Rdg::new(p, w, i))
                    .collect::<Result<_>>()?,
                norm: LayerNorm::new(w, "norm", c)?,
                conv_after_body: match p.resi_connection {
                    DrctResi::OneConv => Some(w.conv3x3("conv_after_body", c, c)?),
                    DrctResi::Identity => None,
                },
                tail: Tail::new(
                    w,
                    p.upsampler,
                    &TailDims {
                        embed: c,
                        num_feat: p.num_feat,
                        out_channels: p.in_channels,
                        scale: p.upscale,
                    },
                )?,
            }),
        };
        Ok(Self {
            mean: image_mean(p.in_channels, w.dtype, w.device)?,
            img_range: p.img_range,
            body,
        })
    }
}

impl Body {
    /// The normalised input (B, C_in, H, W) → the tail's output.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let first = self.conv_first.forward(x)?;
        let mut tokens = to_tokens(&first)?;
        if let Some(norm) = &self.patch_norm {
            tokens = norm.forward(&tokens)?;
        }
        if let Some(pos) = &self.pos_embed {
            let (_, n, _) = pos.dims3()?;
            if n != h * w {
                return Err(candle_core::Error::Msg(format!(
                    "this DRCT has an absolute position embedding for {n} tokens: it only \
                     takes inputs padded to its training size, not {h}x{w} (run untiled)"
                ))
                .into());
            }
            tokens = tokens.broadcast_add(pos)?;
        }
        for layer in &self.layers {
            tokens = layer.forward(&tokens, h, w)?;
        }
        let features = to_image(&self.norm.forward(&tokens)?, h, w)?;
        let body = match &self.conv_after_body {
            Some(conv) => conv.forward_add(&features, &first)?,
            None => (features + &first)?,
        };
        self.tail.forward(&body, x)
    }
}

impl SrNet for Drct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.broadcast_sub(&self.mean)?;
        if self.img_range != 1.0 {
            x = x.affine(self.img_range, 0.0)?;
        }
        if let Some(body) = &self.body {
            x = body.forward(&x)?;
        }
        if self.img_range != 1.0 {
            x = x.affine(1.0 / self.img_range, 0.0)?;
        }
        Ok(x.broadcast_add(&self.mean)?)
    }
}
