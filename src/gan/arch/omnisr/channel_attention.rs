//! OmniSR's channel attentions inside their pre-norm residual (spandrel 0.4.2
//! `architectures/OmniSR/__arch/OSA.py`: `Conv_PreNormResidual(LayerNorm2d,
//! Channel_Attention)` and `Channel_Attention_grid`): a 1×1 conv to q, k, v, a depthwise 3×3
//! conv, then per group of pixels and per head (4 heads) a d×d attention between channels —
//! softmax(temperature · q̂ k̂ᵀ) v with q̂, k̂ L2-normalised over the group's pixels — and a 1×1
//! output conv plus the residual. The groups are the windows (`Channel_Attention`) or the
//! positions within a window across all windows (`Channel_Attention_grid`, which therefore
//! mixes the whole image).

use candle_core::Tensor;
use candle_nn::Module;

use super::config::HEADS;
use super::ops::{conv, l2_normalize_last, DepthwiseConv3x3, LayerNorm2d};
use super::partition::{from_channel_groups, to_channel_groups, Layout};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::softmax::softmax_last_dim;

pub(super) struct ChannelAttention {
    norm: LayerNorm2d,
    qkv: Conv2d,
    qkv_dwconv: DepthwiseConv3x3,
    project_out: Conv2d,
    /// (heads, 1, 1).
    temperature: Tensor,
    dim: usize,
    window: usize,
    layout: Layout,
}

impl ChannelAttention {
    /// `prefix` is the `Conv_PreNormResidual` (`….layer.5` or `….layer.11`).
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        window: usize,
        layout: Layout,
    ) -> Result<Self> {
        let f = format!("{prefix}.fn");
        Ok(Self {
            norm: LayerNorm2d::new(w, &format!("{prefix}.norm"), dim)?,
            qkv: conv(w, &format!("{f}.qkv"), dim, 3 * dim, 1, false)?,
            qkv_dwconv: DepthwiseConv3x3::new(w, &format!("{f}.qkv_dwconv"), 3 * dim, false)?,
            project_out: conv(w, &format!("{f}.project_out"), dim, dim, 1, false)?,
            temperature: w.get(&format!("{f}.temperature"), &[HEADS, 1, 1])?,
            dim,
            window,
            layout,
        })
    }

    /// x (B, C, H, W), H and W multiples of the window → x + attention(norm(x)).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims4()?;
        let qkv = self
            .qkv_dwconv
            .forward(&self.qkv.forward(&self.norm.forward(x)?)?)?;
        let group = |i: usize| -> Result<Tensor> {
            let t = qkv.narrow(1, i * self.dim, self.dim)?;
            to_channel_groups(&t, HEADS, self.window, self.layout)
        };
        let q = l2_normalize_last(&group(0)?)?;
        let k = l2_normalize_last(&group(1)?)?;
        let v = group(2)?;
        // (M, heads, d, d), each head scaled by its temperature; in f32 for half-precision
        // models (q̂ and k̂ come normalised in f32; the d×d scores are small).
        let temperature = self.temperature.to_dtype(q.dtype())?;
        let attn = q.matmul(&k.t()?)?.broadcast_mul(&temperature)?;
        let attn = softmax_last_dim(&attn)?.to_dtype(v.dtype())?;
        let out = attn.matmul(&v)?;
        let out = from_channel_groups(&out, dims, HEADS, self.window, self.layout)?;
        Ok(self.project_out.forward_add(&out, x)?)
    }
}
