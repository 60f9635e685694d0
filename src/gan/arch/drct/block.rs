//! DRCT's Swin block (spandrel 0.4.2 `architectures/DRCT/__arch/drct_arch.py`
//! `SwinTransformerBlock`): SwinIR's pre-norm block, x + proj(W-MSA(norm1(x))), then plus
//! mlp(norm2(·)), with the qkv bias optional (`qkv_bias`). Built from the shared Swin pieces
//! (window attention, table bias, LayerNorm, MLP); the shared `SwinBlock` always reads a qkv
//! bias, hence this one.

use candle_core::Tensor;
use candle_nn::Module;

use crate::error::Result;
use crate::gan::arch::swin::layers::{linear, LayerNorm, Mlp};
use crate::gan::arch::swin::{table_bias, BlockDims, LogitScale, WindowAttention};
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

/// A pre-norm Swin block of width `dims.dim`.
pub(super) struct DrctBlock {
    norm1: LayerNorm,
    qkv: Linear,
    attn: WindowAttention,
    proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    shift: usize,
}

impl DrctBlock {
    pub(super) fn new(w: &Weights, prefix: &str, d: &BlockDims, qkv_bias: bool) -> Result<Self> {
        let span = 2 * d.window - 1;
        let table = w.get(
            &format!("{prefix}.attn.relative_position_bias_table"),
            &[span * span, d.heads],
        )?;
        // head_dim ** -0.5 with head_dim = dim // heads, as the reference.
        let scale = ((d.dim / d.heads.max(1)) as f64).powf(-0.5);
        let qkv = if qkv_bias {
            linear(w, &format!("{prefix}.attn.qkv"), d.dim, 3 * d.dim)?
        } else {
            Linear::new(
                w.get(&format!("{prefix}.attn.qkv.weight"), &[3 * d.dim, d.dim])?,
                None,
            )
        };
        Ok(Self {
            norm1: LayerNorm::new(w, &format!("{prefix}.norm1"), d.dim)?,
            qkv,
            attn: WindowAttention::new(
                d.heads,
                d.window,
                table_bias(&table, d.window)?,
                LogitScale::Scaled(scale),
            )?,
            proj: linear(w, &format!("{prefix}.attn.proj"), d.dim, d.dim)?,
            norm2: LayerNorm::new(w, &format!("{prefix}.norm2"), d.dim)?,
            mlp: Mlp::new(w, &format!("{prefix}.mlp"), d.dim, d.hidden)?,
            shift: d.shift,
        })
    }

    /// x (B, H·W, C) tokens of a `height` × `width` map → the same shape.
    pub(super) fn forward(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.norm1.forward(x)?)?;
        let attended = self.attn.attend(&qkv, height, width, self.shift)?;
        let x = self.proj.forward_add(&attended, x)?;
        self.mlp.forward_add(&self.norm2.forward(&x)?, &x)
    }
}
