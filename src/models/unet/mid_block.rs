//! The UNet's mid block (diffusers models/unets/unet_2d_blocks.py):
//! `UNetMidBlock2DCrossAttn` (resnet, then transformer + resnet pairs; its transformers always
//! self-attend in `attn1`, whatever `only_cross_attention` says for the levels) or, with
//! `mid_block_type: "UNetMidBlock2D"`, the single resnet diffusers builds for the UNet.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::models::layers::{ResnetBlock2D, ResnetConfig};
use crate::Result;

#[derive(Debug, Clone)]
pub struct MidBlockConfig {
    pub channels: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
    /// `Some` for `UNetMidBlock2DCrossAttn` (one transformer, `num_layers=1` in diffusers).
    pub attention: Option<Transformer2DConfig>,
}

#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn new(cfg: &MidBlockConfig, vb: VarBuilder) -> Result<Self> {
        let resnet = ResnetConfig {
            in_channels: cfg.channels,
            out_channels: cfg.channels,
            temb_channels: Some(cfg.temb_channels),
            groups: cfg.groups,
            groups_out: None,
            eps: cfg.eps,
            output_scale_factor: cfg.output_scale_factor,
        };
        let mut resnets = vec![ResnetBlock2D::new(&resnet, vb.pp("resnets").pp(0))?];
        let mut attentions = Vec::new();
        if let Some(attn) = &cfg.attention {
            let attn = Transformer2DConfig {
                only_cross_attention: false,
                ..attn.clone()
            };
            attentions.push(Transformer2DModel::new(&attn, vb.pp("attentions").pp(0))?);
            resnets.push(ResnetBlock2D::new(&resnet, vb.pp("resnets").pp(1))?);
        }
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        for attn in &mut self.attentions {
            attn.set_max_score_bytes(bytes);
        }
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(&x, context)?;
            x = resnet.forward(&x, Some(temb))?;
        }
        Ok(x)
    }
}
