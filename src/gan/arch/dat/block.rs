//! One DAT block (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`, `DATB`): pre-norm
//! attention — spatial windows at even indices (DSTB), channels at odd ones (DCTB) — and a
//! pre-norm SGFN, each with a residual connection.

use candle_core::Tensor;

use super::channel::ChannelAttention;
use super::modules::Norm;
use super::sgfn::Sgfn;
use super::spatial::SpatialAttention;
use super::DatParams;
use crate::error::Result;
use crate::gan::arch::Weights;

enum Attention {
    Spatial(SpatialAttention),
    Channel(ChannelAttention),
}

pub(super) struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    ffn: Sgfn,
}

impl Block {
    /// Block `b_idx` of group `rg_idx` (`layers.{rg_idx}.blocks.{b_idx}`).
    pub(super) fn new(w: &Weights, p: &DatParams, rg_idx: usize, b_idx: usize) -> Result<Self> {
        let prefix = format!("layers.{rg_idx}.blocks.{b_idx}");
        let a = format!("{prefix}.attn");
        let c = p.embed_dim;
        let attn = if b_idx % 2 == 0 {
            Attention::Spatial(SpatialAttention::new(w, &a, p, (rg_idx, b_idx))?)
        } else {
            Attention::Channel(ChannelAttention::new(w, &a, p, rg_idx)?)
        };
        Ok(Self {
            norm1: Norm::new(w, &format!("{prefix}.norm1"), c)?,
            attn,
            norm2: Norm::new(w, &format!("{prefix}.norm2"), c)?,
            ffn: Sgfn::new(w, &format!("{prefix}.ffn"), c, p.ffn_hidden)?,
        })
    }

    /// x (B, L, C) of an h × w map → (B, L, C).
    pub(super) fn forward(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        let xn = self.norm1.forward(x)?;
        let x = match &self.attn {
            Attention::Spatial(a) => a.forward(&xn, x, size)?,
            Attention::Channel(a) => a.forward(&xn, x, size)?,
        };
        let xn = self.norm2.forward(&x)?;
        self.ffn.forward(&xn, &x, size)
    }
}
