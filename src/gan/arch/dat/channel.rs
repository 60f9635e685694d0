//! DAT's channel block attention (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`,
//! `Adaptive_Channel_Attention`, after XCiT): per head, the head's channels attend to each
//! other across the whole map — q and k normalised along the tokens, a (head_dim × head_dim)
//! score matrix scaled by a learned temperature — and the result is combined with the conv
//! branch by the interaction module.

use candle_core::{Tensor, D};
use candle_nn::Module;

use super::interaction::{Gating, Interaction};
use super::DatParams;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::softmax::softmax_last_dim;

pub(super) struct ChannelAttention {
    common: Interaction,
    /// (heads, 1, 1).
    temperature: Tensor,
    heads: usize,
}

/// `F.normalize`'s floor on the norm.
const NORM_EPS: f64 = 1e-12;

impl ChannelAttention {
    /// The channel block of group `rg_idx` under `a` (`layers.i.blocks.j.attn`).
    pub(super) fn new(w: &Weights, a: &str, p: &DatParams, rg_idx: usize) -> Result<Self> {
        let heads = p.num_heads.get(rg_idx).copied().unwrap_or(2);
        Ok(Self {
            common: Interaction::new(
                w,
                a,
                (p.embed_dim, p.qkv_bias),
                None,
                Gating::ChannelMapFromAttention,
            )?,
            temperature: w.get(&format!("{a}.temperature"), &[heads, 1, 1])?,
            heads,
        })
    }

    /// residual + the attention of xn (B, L, C), an h × w map.
    pub(super) fn forward(
        &self,
        xn: &Tensor,
        residual: &Tensor,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        let (b, l, c) = xn.dims3()?;
        let (heads, hd) = (self.heads, c / self.heads);
        let qkv = self.common.qkv.forward(xn)?;
        // (B, L, C) slice i → (B, heads, hd, L): each head's channels as rows over the tokens.
        let rows = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * c, c)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, heads, hd, l))?)
        };
        let normalise = |x: Tensor| -> Result<Tensor> {
            let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(NORM_EPS)?;
            Ok(x.broadcast_div(&norm)?)
        };
        let q = normalise(rows(0)?)?;
        let k = normalise(rows(1)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_mul(&self.temperature)?;
        let probs = softmax_last_dim(&scores)?;
        let attention = probs
            .matmul(&rows(2)?)?
            .reshape((b, c, l))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.reshape((b, h, w, c))?;
        let conv = self.common.conv_branch(&v)?.reshape((b, l, c))?;
        self.common.combine(&attention, &conv, residual)
    }
}
