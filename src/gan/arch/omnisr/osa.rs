//! OmniSR's OSA block (spandrel 0.4.2 `architectures/OmniSR/__arch/OSA.py`, `OSA_Block`): an
//! MBConv, then twice — once over contiguous windows, once over the sparse grid — a window
//! self-attention, a gated feed-forward, a channel attention and another gated feed-forward.
//! The `nn.Sequential` indices (`layer.0` … `layer.12`, the `Rearrange`s taking 1, 3, 7 and 9)
//! are the state-dict names.

use candle_core::{Tensor, D};
use candle_nn::Module;

use super::attention::WindowAttention;
use super::channel_attention::ChannelAttention;
use super::ops::{conv, wide, DepthwiseConv3x3, LayerNorm2d};
use super::partition::Layout;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::geglu::gelu_erf;
use crate::models::layers::linear::Linear;

/// `MBConv(dim, dim, expansion_rate=1, shrinkage_rate=0.25)` with its residual: 1×1 conv,
/// GELU, depthwise 3×3, GELU, squeeze-excitation, 1×1 conv, + x.
struct MbConv {
    expand: Conv2d,
    depthwise: DepthwiseConv3x3,
    /// Squeeze-excitation: mean over the pixels, Linear(dim, dim/4), SiLU, Linear back,
    /// sigmoid, scaling each channel.
    squeeze: Linear,
    excite: Linear,
    project: Conv2d,
}

impl MbConv {
    fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        let gate = |i: usize, out: usize, inp: usize| -> Result<Linear> {
            let weight = w.get(&format!("{prefix}.fn.4.gate.{i}.weight"), &[out, inp])?;
            Ok(Linear::new(weight, None))
        };
        Ok(Self {
            expand: conv(w, &format!("{prefix}.fn.0"), dim, dim, 1, true)?,
            depthwise: DepthwiseConv3x3::new(w, &format!("{prefix}.fn.2"), dim, true)?,
            squeeze: gate(1, dim / 4, dim)?,
            excite: gate(3, dim, dim / 4)?,
            project: conv(w, &format!("{prefix}.fn.5"), dim, dim, 1, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = gelu_erf(&self.expand.forward(x)?)?;
        let h = gelu_erf(&self.depthwise.forward(&h)?)?;
        let (b, c, _, _) = h.dims4()?;
        // The mean over every pixel in f32 at least (a half-precision sum would overflow).
        let pooled = h
            .to_dtype(wide(h.dtype()))?
            .mean(D::Minus1)?
            .mean(D::Minus1)?
            .to_dtype(h.dtype())?;
        let gate = candle_nn::ops::silu(&self.squeeze.forward(&pooled)?)?;
        let gate = candle_nn::ops::sigmoid(&self.excite.forward(&gate)?)?;
        let h = h.broadcast_mul(&gate.reshape((b, c, 1, 1))?)?;
        Ok(self.project.forward_add(&h, x)?)
    }
}

/// `Conv_PreNormResidual(LayerNorm2d, Gated_Conv_FeedForward(mult=1, bias=False))`:
/// x + project_out(GELU(a) · b), [a | b] = dwconv(project_in(norm(x))).
struct GatedFeedForward {
    norm: LayerNorm2d,
    project_in: Conv2d,
    dwconv: DepthwiseConv3x3,
    project_out: Conv2d,
    dim: usize,
}

impl GatedFeedForward {
    fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        let f = format!("{prefix}.fn");
        Ok(Self {
            norm: LayerNorm2d::new(w, &format!("{prefix}.norm"), dim)?,
            project_in: conv(w, &format!("{f}.project_in"), dim, 2 * dim, 1, false)?,
            dwconv: DepthwiseConv3x3::new(w, &format!("{f}.dwconv"), 2 * dim, false)?,
            project_out: conv(w, &format!("{f}.project_out"), dim, dim, 1, false)?,
            dim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .dwconv
            .forward(&self.project_in.forward(&self.norm.forward(x)?)?)?;
        let gated = gelu_erf(&h.narrow(1, 0, self.dim)?)?.mul(&h.narrow(1, self.dim, self.dim)?)?;
        Ok(self.project_out.forward_add(&gated, x)?)
    }
}

/// One OSA block.
pub(super) struct OsaBlock {
    mbconv: MbConv,
    block_attention: WindowAttention,
    grid_attention: WindowAttention,
    channel_attention: ChannelAttention,
    channel_grid_attention: ChannelAttention,
    /// The gated feed-forwards at indices 4, 6, 10 and 12.
    feed_forwards: [GatedFeedForward; 4],
}

impl OsaBlock {
    /// `prefix` is the block's `….layer`.
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        window: usize,
        pe: bool,
    ) -> Result<Self> {
        let ff = |i: usize| GatedFeedForward::new(w, &format!("{prefix}.{i}"), dim);
        let attention = |i: usize, layout| {
            WindowAttention::new(w, &format!("{prefix}.{i}"), dim, window, pe, layout)
        };
        let channel = |i: usize, layout| {
            ChannelAttention::new(w, &format!("{prefix}.{i}"), dim, window, layout)
        };
        Ok(Self {
            mbconv: MbConv::new(w, &format!("{prefix}.0"), dim)?,
            block_attention: attention(2, Layout::Block)?,
            grid_attention: attention(8, Layout::Grid)?,
            channel_attention: channel(5, Layout::Block)?,
            channel_grid_attention: channel(11, Layout::Grid)?,
            feed_forwards: [ff(4)?, ff(6)?, ff(10)?, ff(12)?],
        })
    }

    /// x (B, C, H, W), sides multiples of the window.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [ff4, ff6, ff10, ff12] = &self.feed_forwards;
        let x = self.mbconv.forward(x)?;
        let x = self.block_attention.forward(&x)?;
        let x = ff4.forward(&x)?;
        let x = self.channel_attention.forward(&x)?;
        let x = ff6.forward(&x)?;
        let x = self.grid_attention.forward(&x)?;
        let x = ff10.forward(&x)?;
        let x = self.channel_grid_attention.forward(&x)?;
        ff12.forward(&x)
    }
}
