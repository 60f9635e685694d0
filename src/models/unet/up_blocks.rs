//! `UpBlock2D` and `CrossAttnUpBlock2D` (diffusers models/unets/unet_2d_blocks.py): each resnet
//! takes the running state concatenated with one skip state from the down path (last first),
//! is followed by a `Transformer2DModel` in the cross-attention flavour, and the block ends in
//! an optional `Upsample2D` that can be told its output size.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::models::layers::{ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::{Error, Result};

/// Construction options of one up block, as `UNet2DConditionModel.__init__` derives them.
#[derive(Debug, Clone)]
pub struct UpBlockConfig {
    /// Channels of the deepest skip this block consumes (its last resnet's skip).
    pub in_channels: usize,
    /// Channels of the state arriving from the block below.
    pub prev_output_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub layers: usize,
    pub groups: usize,
    pub eps: f64,
    pub add_upsample: bool,
    /// `Some` for `CrossAttnUpBlock2D`.
    pub attention: Option<Transformer2DConfig>,
}

#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    pub fn new(cfg: &UpBlockConfig, vb: VarBuilder) -> Result<Self> {
        let mut resnets = Vec::with_capacity(cfg.layers);
        let mut attentions = Vec::new();
        for i in 0..cfg.layers {
            let skip = if i + 1 == cfg.layers {
                cfg.in_channels
            } else {
                cfg.out_channels
            };
            let input = if i == 0 {
                cfg.prev_output_channels
            } else {
                cfg.out_channels
            };
            let resnet = ResnetConfig {
                in_channels: input + skip,
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
        let upsampler = if cfg.add_upsample {
            Some(Upsample2D::new(
                cfg.out_channels,
                cfg.out_channels,
                vb.pp("upsamplers").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip states this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        for attn in &mut self.attentions {
            attn.set_max_score_bytes(bytes);
        }
    }

    /// `skips` are this block's skip states in down-path order (the last one is used first).
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        if skips.len() != self.resnets.len() {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "up block needs {} skip states, got {}",
                self.resnets.len(),
                skips.len()
            ))));
        }
        let mut x = x.clone();
        for (i, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1)?, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, upsample_size),
            None => Ok(x),
        }
    }
}
