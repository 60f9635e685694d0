//! The VAE `Decoder` of diffusers models/autoencoders/vae.py (`norm_type="group"`): conv_in,
//! the attention mid block, `UpDecoderBlock2D`s (layers_per_block + 1 resnets each), group
//! norm + SiLU, conv_out.

use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::blocks::{UNetMidBlock2D, UpDecoderBlock2D, VAE_EPS};
use super::config::AutoencoderKLConfig;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::resnet::conv3x3;
use crate::models::layers::{GroupNorm, GroupNormMode};
use crate::Result;

#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(c: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &c.block_out_channels;
        let n = boc.len();
        let groups = c.norm_num_groups;
        let top = boc[n - 1];
        let up_blocks = (0..n)
            .map(|i| {
                // Up block i mirrors level n-1-i and starts from the level above it.
                let cin = boc[n - i.max(1)];
                UpDecoderBlock2D::new(
                    cin,
                    boc[n - 1 - i],
                    c.layers_per_block + 1,
                    groups,
                    i + 1 < n,
                    vb.pp("up_blocks").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: conv3x3(c.latent_channels, top, vb.pp("conv_in"))?,
            mid_block: UNetMidBlock2D::new(
                top,
                groups,
                c.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, boc[0], VAE_EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(boc[0], c.out_channels, vb.pp("conv_out"))?,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        self.mid_block.set_max_score_bytes(bytes);
    }

    /// latents (B, latent_channels, h, w) -> image (B, out_channels, h·f, w·f), every
    /// GroupNorm's statistics as `mode` says.
    pub fn forward(&self, z: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let x = self.conv_in.forward(z)?;
        let mut x = self.mid_block.forward(&x, mode)?;
        for block in &self.up_blocks {
            x = block.forward(&x, mode)?;
        }
        let x = self.conv_norm_out.forward_with_stats(&x, true, mode)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
