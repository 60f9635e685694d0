//! `DownBlock2D` and `CrossAttnDownBlock2D` (diffusers models/unets/unet_2d_blocks.py): resnets,
//! each followed by a `Transformer2DModel` in the cross-attention flavour, then an optional
//! stride-2 `Downsample2D`. Both return every intermediate state for the up path's skips.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::models::layers::{Downsample2D, ResnetBlock2D, ResnetConfig};
use crate::Result;

/// Construction options of one down block, as `UNet2DConditionModel.__init__` derives them.
#[derive(Debug, Clone)]
pub struct DownBlockConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub layers: usize,
    pub groups: usize,
    pub eps: f64,
    pub add_downsample: bool,
    pub downsample_padding: usize,
    /// `Some` for `CrossAttnDownBlock2D`.
    pub attention: Option<Transformer2DConfig>,
}

#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(cfg: &DownBlockConfig, vb: VarBuilder) -> Result<Self> {
        let mut resnets = Vec::with_capacity(cfg.layers);
        let mut attentions = Vec::new();
        for i in 0..cfg.layers {
            let resnet = ResnetConfig {
                in_channels: if i == 0 {
                    cfg.in_channels
                } else {
                    cfg.out_channels
                },
                out_channels: cfg.out_channels,
                temb_channels: Some(cfg.temb_channels),
                groups: cfg.groups,
                groups_out: None,
                eps: cfg.eps,
                output_scale_factor: 1.0,
            };
            resnets.push(ResnetBlock2D::new(&resnet, vb.pp("resnets").pp(i))?);
            if let Some(attn) = &cfg.attention {
                attentions.push(Transformer2DModel::new(attn, vb.pp("attentions").pp(i))?);
            }
        }
        let downsampler = if cfg.add_downsample {
            Some(Downsample2D::new(
                cfg.out_channels,
                cfg.out_channels,
                cfg.downsample_padding,
                vb.pp("downsamplers").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        for attn in &mut self.attentions {
            attn.set_max_score_bytes(bytes);
        }
    }

    /// Returns the block's output and the states the up path will concatenate back.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
            states.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            states.push(x.clone());
        }
        Ok((x, states))
    }
}
