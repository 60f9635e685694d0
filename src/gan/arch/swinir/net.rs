//! SwinIR's network (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py` `SwinIR.forward`):
//! the input less the DIV2K mean, times `img_range`, (pixel-unshuffled), a 3×3 conv, residual
//! Swin stages (RSTB: blocks, then the residual conv, plus the stage input), a LayerNorm, the
//! body's residual conv plus the first conv's output, then the tail; divided back and the mean
//! added. The input sides are multiples of the window (`GanNetwork` pads them as the
//! reference's `check_image_size` does).

use candle_core::Tensor;
use candle_nn::Module;

use super::detect::{block_dims, tail_dims};
use super::SwinIrParams;
use crate::error::Result;
use crate::gan::arch::swin::layers::{image_mean, to_image, to_tokens, LayerNorm};
use crate::gan::arch::swin::{ResiConv, SwinBlock, Tail};
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;

/// A residual Swin stage (RSTB).
struct Rstb {
    blocks: Vec<SwinBlock>,
    conv: ResiConv,
}

impl Rstb {
    /// x (B, H·W, C) tokens → conv(blocks(x)) + x, the same shape.
    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward(&y, h, w)?;
        }
        let out = self
            .conv
            .forward_add(&to_image(&y, h, w)?, &to_image(x, h, w)?)?;
        to_tokens(&out)
    }
}

pub struct SwinIr {
    mean: Tensor,
    img_range: f64,
    unshuffle: usize,
    conv_first: Conv2d,
    patch_norm: LayerNorm,
    layers: Vec<Rstb>,
    norm: LayerNorm,
    conv_after_body: ResiConv,
    tail: Tail,
}

impl SwinIr {
    pub(crate) fn new(p: &SwinIrParams, w: &Weights) -> Result<Self> {
        let c = p.embed_dim;
        let s2 = p.start_unshuffle * p.start_unshuffle;
        let mut layers = Vec::with_capacity(p.depths.len());
        for (i, (&depth, &heads)) in p.depths.iter().zip(&p.num_heads).enumerate() {
            let blocks = (0..depth)
                .map(|j| {
                    let prefix = format!("layers.{i}.residual_group.blocks.{j}");
                    SwinBlock::new(w, &prefix, &block_dims(p, heads, j))
                })
                .collect::<Result<_>>()?;
            let conv = ResiConv::new(w, &format!("layers.{i}.conv"), p.resi_connection, c)?;
            layers.push(Rstb { blocks, conv });
        }
        Ok(Self {
            mean: image_mean(p.in_channels, w.dtype, w.device)?,
            img_range: p.img_range,
            unshuffle: p.start_unshuffle,
            conv_first: w.conv3x3(p.first_conv(), p.in_channels * s2, c)?,
            patch_norm: LayerNorm::new(w, "patch_embed.norm", c)?,
            layers,
            norm: LayerNorm::new(w, "norm", c)?,
            conv_after_body: ResiConv::new(w, "conv_after_body", p.resi_connection, c)?,
            tail: Tail::new(w, p.upsampler, &tail_dims(p))?,
        })
    }
}

impl SrNet for SwinIr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.broadcast_sub(&self.mean)?;
        if self.img_range != 1.0 {
            x = x.affine(self.img_range, 0.0)?;
        }
        if self.unshuffle > 1 {
            x = candle_nn::ops::pixel_unshuffle(&x, self.unshuffle)?;
        }
        let (_, _, h, w) = x.dims4()?;
        let first = self.conv_first.forward(&x)?;
        let mut tokens = self.patch_norm.forward(&to_tokens(&first)?)?;
        for layer in &self.layers {
            tokens = layer.forward(&tokens, h, w)?;
        }
        let features = to_image(&self.norm.forward(&tokens)?, h, w)?;
        let body = self.conv_after_body.forward_add(&features, &first)?;
        let mut out = self.tail.forward(&body, &x)?;
        if self.img_range != 1.0 {
            out = out.affine(1.0 / self.img_range, 0.0)?;
        }
        Ok(out.broadcast_add(&self.mean)?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};

    use super::*;
    use crate::gan::arch::swin::{ResiConnection, Upsampler};
    use crate::gan::arch::swinir::{synthetic_swinir, tiny_params};
    use crate::gan::arch::GanNetwork;
    use crate::gan::StateDict;

    /// Every variant runs and makes the reference's output size, on odd inputs too.
    #[test]
    fn every_variant_runs_at_its_scale() -> Result<()> {
        let unshuffled = SwinIrParams {
            start_unshuffle: 2,
            first_conv_nested: true,
            ..tiny_params(Upsampler::NearestConv, ResiConnection::OneConv, 4)
        };
        for p in [
            tiny_params(Upsampler::PixelShuffle, ResiConnection::ThreeConv, 3),
            tiny_params(Upsampler::None, ResiConnection::OneConv, 1),
            unshuffled,
        ] {
            let dict: StateDict = synthetic_swinir(&p)
                .into_iter()
                .map(|(k, t)| {
                    let t = match t.dtype() {
                        DType::F32 => Tensor::randn(0f32, 0.2, t.dims(), &Device::Cpu)?,
                        _ => t,
                    };
                    Ok((k, t))
                })
                .collect::<Result<_>>()?;
            let arch = crate::gan::arch::GanArch::from(p.clone());
            let path = Path::new("model.safetensors");
            let net = GanNetwork::new(&arch, &dict, DType::F32, &Device::Cpu, path)?;
            let x = Tensor::rand(0f32, 1.0, (1, 3, 13, 10), &Device::Cpu)?;
            let y = net.forward(&x)?;
            let s = p.upscale / p.start_unshuffle;
            assert_eq!(y.dims(), [1, 3, 13 * s, 10 * s], "{p:?}");
        }
        Ok(())
    }
}
