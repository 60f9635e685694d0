//! The VAE `Encoder` of diffusers models/autoencoders/vae.py: conv_in, `DownEncoderBlock2D`s,
//! the attention mid block, group norm + SiLU, and conv_out to 2 x latent_channels (mean and
//! log-variance, `double_z=True`).

use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::blocks::{DownEncoderBlock2D, UNetMidBlock2D, VAE_EPS};
use super::config::AutoencoderKLConfig;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::resnet::conv3x3;
use crate::models::layers::{GroupNorm, GroupNormMode};
use crate::Result;

#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(c: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &c.block_out_channels;
        let n = boc.len();
        let groups = c.norm_num_groups;
        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                DownEncoderBlock2D::new(
                    cin,
                    boc[i],
                    c.layers_per_block,
                    groups,
                    i + 1 < n,
                    vb.pp("down_blocks").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let top = boc[n - 1];
        Ok(Self {
            conv_in: conv3x3(c.in_channels, boc[0], vb.pp("conv_in"))?,
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                top,
                groups,
                c.mid_block_add_attention,
                vb.pp("mid_block"),
            )?,
            conv_norm_out: GroupNorm::new(groups, top, VAE_EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(top, 2 * c.latent_channels, vb.pp("conv_out"))?,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        self.mid_block.set_max_score_bytes(bytes);
    }

    /// image (B, in_channels, H, W) -> moments (B, 2·latent_channels, h, w), every
    /// GroupNorm's statistics as `mode` says.
    pub fn forward(&self, x: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            x = block.forward(&x, mode)?;
        }
        let x = self.mid_block.forward(&x, mode)?;
        let x = self.conv_norm_out.forward_with_stats(&x, true, mode)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
