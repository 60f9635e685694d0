//! What DAT's two attention modules share (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`,
//! `Adaptive_Spatial_Attention` and `Adaptive_Channel_Attention`): the q, k, v and output
//! projections, the convolution branch on v (depthwise 3×3, batch norm, GELU) and the
//! adaptive interaction module (AIM) that gates the attention and convolution branches with
//! each other's channel map (average pool, 1×1 conv, batch norm, GELU, 1×1 conv) and spatial
//! map (1×1 conv, batch norm, GELU, 1×1 conv to one channel). On the channels-last token maps
//! every 1×1 conv is a per-token linear layer, and each batch norm is folded into the conv
//! before it.

use candle_core::Tensor;
use candle_nn::Module;

use super::dwconv::DepthwiseConv3x3;
use super::modules::{fold_batch_norm, linear, pointwise, pointwise_bn};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::geglu::gelu_erf;
use crate::models::layers::linear::Linear;

/// Which branch's maps gate which: the spatial module gates its attention output with the
/// conv branch's channel map (and the conv branch with the attention's spatial map), the
/// channel module the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gating {
    /// `Adaptive_Spatial_Attention`: channel map from the conv branch.
    ChannelMapFromConv,
    /// `Adaptive_Channel_Attention`: channel map from the attention branch.
    ChannelMapFromAttention,
}

/// The projections, the conv branch and the interaction module of one attention module.
pub(super) struct Interaction {
    pub qkv: Linear,
    proj: Linear,
    dwconv: DepthwiseConv3x3,
    /// `channel_interaction.1` + `.2`, then `.4`.
    channel_in: Linear,
    channel_out: Linear,
    /// `spatial_interaction.0` + `.1`, then `.3`.
    spatial_in: Linear,
    spatial_out: Linear,
    gating: Gating,
}

impl Interaction {
    /// The modules under `a` (`layers.i.blocks.j.attn`) for `c` channels. `q_scale`
    /// multiplies the q rows of the projection (the window attention's head_dim^−½, applied
    /// to q in the reference, folded into its weights here).
    pub(super) fn new(
        w: &Weights,
        a: &str,
        (c, qkv_bias): (usize, bool),
        q_scale: Option<f64>,
        gating: Gating,
    ) -> Result<Self> {
        let dw_weight = w.get(&format!("{a}.dwconv.0.weight"), &[c, 1, 3, 3])?;
        let dw_bias = w.get(&format!("{a}.dwconv.0.bias"), &[c])?;
        let (dw_weight, dw_bias) =
            fold_batch_norm(w, &dw_weight, &dw_bias, &format!("{a}.dwconv.1"))?;
        let ci = format!("{a}.channel_interaction");
        let si = format!("{a}.spatial_interaction");
        Ok(Self {
            qkv: qkv_projection(w, a, (c, qkv_bias), q_scale)?,
            proj: linear(w, &format!("{a}.proj"), c, c, true)?,
            dwconv: DepthwiseConv3x3::new(&dw_weight, &dw_bias, &dw_bias)?,
            channel_in: pointwise_bn(w, &format!("{ci}.1"), &format!("{ci}.2"), c, c / 8)?,
            channel_out: pointwise(w, &format!("{ci}.4"), c / 8, c)?,
            spatial_in: pointwise_bn(w, &format!("{si}.0"), &format!("{si}.1"), c, c / 16)?,
            spatial_out: pointwise(w, &format!("{si}.3"), c / 16, 1)?,
            gating,
        })
    }

    /// The conv branch: GELU(BN(dwconv(v))) for v (B, H, W, C), channels-last.
    pub(super) fn conv_branch(&self, v: &Tensor) -> Result<Tensor> {
        Ok(gelu_erf(&self.dwconv.forward(v)?)?)
    }

    /// (B, 1, C) channel map (before the sigmoid) of x (B, L, C).
    fn channel_map(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = x.mean_keepdim(1)?;
        let hidden = gelu_erf(&self.channel_in.forward(&pooled)?)?;
        Ok(self.channel_out.forward(&hidden)?)
    }

    /// (B, L, 1) spatial map (before the sigmoid) of x (B, L, C).
    fn spatial_map(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = gelu_erf(&self.spatial_in.forward(x)?)?;
        Ok(self.spatial_out.forward(&hidden)?)
    }

    /// residual + proj(attention · σ(map) + conv · σ(map')), the maps taken as [`Gating`]
    /// says; `attention` and `conv` are (B, L, C).
    pub(super) fn combine(
        &self,
        attention: &Tensor,
        conv: &Tensor,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let sigmoid = candle_nn::ops::sigmoid;
        let (attention, conv) = match self.gating {
            Gating::ChannelMapFromConv => {
                let channel = sigmoid(&self.channel_map(conv)?)?;
                let spatial = sigmoid(&self.spatial_map(attention)?)?;
                (
                    attention.broadcast_mul(&channel)?,
                    conv.broadcast_mul(&spatial)?,
                )
            }
            Gating::ChannelMapFromAttention => {
                let channel = sigmoid(&self.channel_map(attention)?)?;
                let spatial = sigmoid(&self.spatial_map(conv)?)?;
                (
                    attention.broadcast_mul(&spatial)?,
                    conv.broadcast_mul(&channel)?,
                )
            }
        };
        Ok(self.proj.forward_add(&(attention + conv)?, residual)?)
    }
}

/// The q, k, v projection under `{a}.qkv`, its q rows (weight and bias) times `q_scale`.
fn qkv_projection(
    w: &Weights,
    a: &str,
    (c, bias): (usize, bool),
    q_scale: Option<f64>,
) -> Result<Linear> {
    let Some(scale) = q_scale else {
        return linear(w, &format!("{a}.qkv"), c, 3 * c, bias);
    };
    let rows = |t: Tensor| -> Result<Tensor> {
        let q = (t.narrow(0, 0, c)? * scale)?;
        Ok(Tensor::cat(&[&q, &t.narrow(0, c, 2 * c)?], 0)?.contiguous()?)
    };
    let weight = rows(w.get(&format!("{a}.qkv.weight"), &[3 * c, c])?)?;
    let bias = bias
        .then(|| w.get(&format!("{a}.qkv.bias"), &[3 * c]).and_then(rows))
        .transpose()?;
    Ok(Linear::new(weight, bias))
}
