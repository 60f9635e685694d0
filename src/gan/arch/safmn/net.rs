//! SAFMN's network (spandrel 0.4.2 `architectures/SAFMN/__arch/safmn.py`, Sun et al.,
//! "Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution"): a 3×3 conv
//! to `dim` channels, `n_blocks` attention blocks (channel-wise layer norm → SAFM, layer norm
//! → CCM, each with a residual), a residual around them all, and a 3×3 conv + pixel shuffle.
//! Module names follow the reference so its keys load as is.

use candle_core::Tensor;
use candle_nn::Module;

use super::config::LEVELS;
use super::norm::ChannelNorm;
use super::safm::Safm;
use super::SafmnParams;
use crate::error::{Error, Result};
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::geglu::gelu_erf;

/// Convolutional channel mixer: 3×3 conv to the hidden width, GELU, 1×1 conv back.
struct Ccm {
    expand: Conv2d,
    project: Conv2d,
}

impl Ccm {
    fn new(w: &Weights, prefix: &str, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            expand: w.conv3x3(&format!("{prefix}.ccm.0"), dim, hidden)?,
            project: Conv2d::new(
                w.get(&format!("{prefix}.ccm.2.weight"), &[dim, hidden, 1, 1])?,
                Some(w.get(&format!("{prefix}.ccm.2.bias"), &[dim])?),
                Default::default(),
            ),
        })
    }

    /// CCM(x) + residual, the add fused into the last conv.
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let hidden = gelu_erf(&self.expand.forward(x)?)?;
        Ok(self.project.forward_add(&hidden, residual)?)
    }
}

/// `AttBlock`: x + SAFM(norm1(x)), then + CCM(norm2(·)).
struct AttBlock {
    norm1: ChannelNorm,
    norm2: ChannelNorm,
    safm: Safm,
    ccm: Ccm,
}

impl AttBlock {
    fn new(w: &Weights, prefix: &str, p: &SafmnParams) -> Result<Self> {
        Ok(Self {
            norm1: ChannelNorm::new(w, &format!("{prefix}.norm1"), p.dim)?,
            norm2: ChannelNorm::new(w, &format!("{prefix}.norm2"), p.dim)?,
            safm: Safm::new(w, &format!("{prefix}.safm"), p.dim)?,
            ccm: Ccm::new(w, &format!("{prefix}.ccm"), p.dim, p.hidden_dim)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.safm.forward_add(&self.norm1.forward(x)?, x)?;
        self.ccm.forward_add(&self.norm2.forward(&x)?, &x)
    }
}

pub struct Safmn {
    to_feat: Conv2d,
    feats: Vec<AttBlock>,
    to_img: Conv2d,
    upscale: usize,
}

impl Safmn {
    pub(crate) fn new(p: &SafmnParams, w: &Weights) -> Result<Self> {
        // The reference splits the channels with `chunk(4)`, which makes fewer or uneven
        // chunks unless 4 divides them; its forward then fails on the per-chunk convs.
        if p.dim % LEVELS != 0 {
            return Err(Error::unsupported(
                "SAFMN dim",
                format!(
                    "is {}: SAFM splits it into {LEVELS} equal chunks, so it must be a multiple \
                     of {LEVELS}",
                    p.dim
                ),
            ));
        }
        let feats = (0..p.n_blocks)
            .map(|b| AttBlock::new(w, &format!("feats.{b}"), p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            to_feat: w.conv3x3("to_feat", 3, p.dim)?,
            feats,
            to_img: w.conv3x3("to_img.0", p.dim, 3 * p.upscale * p.upscale)?,
            upscale: p.upscale,
        })
    }
}

impl SrNet for Safmn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let feat = self.to_feat.forward(x)?;
        let mut h = feat.clone();
        for block in &self.feats {
            h = block.forward(&h)?;
        }
        let h = (h + feat)?;
        let up = self.to_img.forward(&h)?;
        Ok(candle_nn::ops::pixel_shuffle(&up, self.upscale)?)
    }
}
