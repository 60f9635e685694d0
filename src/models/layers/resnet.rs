//! `ResnetBlock2D` of diffusers' models/resnet.py, with `time_embedding_norm="default"` (the
//! time embedding is projected and added between the two convolutions) or no time embedding
//! at all (the VAE's blocks).

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use super::conv::{conv2d, Conv2d};
use super::group_norm::GroupNorm;
use super::group_norm_stats::GroupNormMode;
use super::linear::{linear, Linear};
use crate::Result;

/// Construction options, named as `ResnetBlock2D.__init__` names them.
#[derive(Debug, Clone)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding; `None` builds no `time_emb_proj`.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    /// Groups of `norm2`; defaults to `groups`.
    pub groups_out: Option<usize>,
    pub eps: f64,
    pub output_scale_factor: f64,
}

/// norm1 → SiLU → conv1 (+ projected time embedding) → norm2 → SiLU → conv2, plus a shortcut
/// (a 1x1 `conv_shortcut` when the channel count changes).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// A 3x3 convolution with padding 1, as every conv of the block uses.
pub(crate) fn conv3x3(input: usize, output: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(conv2d(input, output, 3, cfg, vb)?)
}

impl ResnetBlock2D {
    pub fn new(cfg: &ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let (cin, cout) = (cfg.in_channels, cfg.out_channels);
        let groups_out = cfg.groups_out.unwrap_or(cfg.groups);
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => Some(linear(t, cout, vb.pp("time_emb_proj"))?),
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(conv2d(
                cin,
                cout,
                1,
                Conv2dConfig::default(),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, cin, cfg.eps, vb.pp("norm1"))?,
            conv1: conv3x3(cin, cout, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: GroupNorm::new(groups_out, cout, cfg.eps, vb.pp("norm2"))?,
            conv2: conv3x3(cout, cout, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// x (B, C_in, H, W), temb (B, T) -> (B, C_out, H, W).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with_stats(x, temb, &mut GroupNormMode::Own)
    }

    /// [`Self::forward`] with the GroupNorm statistics `mode` says (recorded or replayed by a
    /// tiled VAE decode).
    pub fn forward_with_stats(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        mode: &mut GroupNormMode,
    ) -> Result<Tensor> {
        let mut h = self
            .conv1
            .forward(&self.norm1.forward_with_stats(x, true, mode)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&temb.silu()?)?;
            let (b, c) = t.dims2()?;
            h = h.broadcast_add(&t.reshape((b, c, 1, 1))?)?;
        }
        let h = self.norm2.forward_with_stats(&h, true, mode)?;
        // The skip connection is added inside conv2's output pass.
        let out = match &self.conv_shortcut {
            Some(conv) => self.conv2.forward_add(&h, &conv.forward(x)?)?,
            None => self.conv2.forward_add(&h, x)?,
        };
        if self.output_scale_factor != 1.0 {
            Ok((out / self.output_scale_factor)?)
        } else {
            Ok(out)
        }
    }
}
