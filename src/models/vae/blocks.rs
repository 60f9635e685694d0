//! The VAE's blocks (diffusers models/unets/unet_2d_blocks.py): `DownEncoderBlock2D`,
//! `UpDecoderBlock2D` and `UNetMidBlock2D` (resnet, single-head spatial attention, resnet),
//! all without a time embedding and with eps 1e-6.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::models::layers::{
    Attention, AttentionConfig, Downsample2D, GroupNormMode, ResnetBlock2D, ResnetConfig,
    Upsample2D,
};
use crate::Result;

/// Norm eps of every VAE block (hard-coded in diffusers' Encoder / Decoder).
pub const VAE_EPS: f64 = 1e-6;

fn resnet(cin: usize, cout: usize, groups: usize, vb: VarBuilder) -> Result<ResnetBlock2D> {
    let cfg = ResnetConfig {
        in_channels: cin,
        out_channels: cout,
        temb_channels: None,
        groups,
        groups_out: None,
        eps: VAE_EPS,
        output_scale_factor: 1.0,
    };
    ResnetBlock2D::new(&cfg, vb)
}

/// Resnets, then a stride-2 downsample padded bottom / right (`downsample_padding=0`).
#[derive(Debug, Clone)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        add_downsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let input = if i == 0 { cin } else { cout };
                resnet(input, cout, groups, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if add_downsample {
            Some(Downsample2D::new(
                cout,
                cout,
                0,
                vb.pp("downsamplers").pp(0),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_with_stats(&x, None, mode)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

/// Resnets, then a nearest x2 upsample and conv.
#[derive(Debug, Clone)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(
        cin: usize,
        cout: usize,
        layers: usize,
        groups: usize,
        add_upsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let input = if i == 0 { cin } else { cout };
                resnet(input, cout, groups, vb.pp("resnets").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Upsample2D::new(cout, cout, vb.pp("upsamplers").pp(0))?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, x: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_with_stats(&x, None, mode)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(&x, None),
            None => Ok(x),
        }
    }
}

/// resnet → (single-head attention over every pixel) → resnet.
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl UNetMidBlock2D {
    pub fn new(
        channels: usize,
        groups: usize,
        add_attention: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let attention = if add_attention {
            // attention_head_dim = channels: one head as wide as the block.
            let cfg = AttentionConfig {
                query_dim: channels,
                cross_attention_dim: None,
                heads: 1,
                dim_head: channels,
                bias: true,
                out_bias: true,
                upcast_attention: false,
                norm_num_groups: Some((groups, VAE_EPS)),
                residual_connection: true,
                rescale_output_factor: 1.0,
            };
            Some(Attention::new(&cfg, vb.pp("attentions").pp(0))?)
        } else {
            None
        };
        Ok(Self {
            resnets: vec![
                resnet(channels, channels, groups, vb.pp("resnets").pp(0))?,
                resnet(channels, channels, groups, vb.pp("resnets").pp(1))?,
            ],
            attention,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        if let Some(a) = &mut self.attention {
            a.set_max_score_bytes(bytes);
        }
    }

    pub fn forward(&self, x: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let mut x = self.resnets[0].forward_with_stats(x, None, mode)?;
        if let Some(a) = &self.attention {
            x = a.forward_spatial(&x, mode)?;
        }
        self.resnets[1].forward_with_stats(&x, None, mode)
    }
}
