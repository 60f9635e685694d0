//! Swin's pre-norm transformer block (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`
//! `SwinTransformerBlock` with its `WindowAttention`; DRCT's blocks are the same):
//! x + proj(W-MSA(norm1(x))), then + mlp(norm2(·)), the windows cyclically shifted by half a
//! window in the odd blocks. Keys under the block's prefix: `norm1`, `attn.qkv`, `attn.proj`,
//! `attn.relative_position_bias_table`, `norm2`, `mlp.fc1`, `mlp.fc2`.

use candle_core::Tensor;
use candle_nn::Module;

use super::attention::{LogitScale, WindowAttention};
use super::geometry::relative_position_index;
use super::layers::{linear, LayerNorm, Mlp};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

/// A block's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDims {
    /// Channels (embed_dim).
    pub dim: usize,
    pub heads: usize,
    pub window: usize,
    /// The cyclic shift (see [`super::geometry::block_shift`]).
    pub shift: usize,
    /// The MLP's hidden width.
    pub hidden: usize,
}

/// The relative-position bias (heads, n, n) of a learned table ((2w − 1)², heads), gathered by
/// [`relative_position_index`] as the reference does at every call.
pub fn table_bias(table: &Tensor, window: usize) -> Result<Tensor> {
    let n = window * window;
    let (_, heads) = table.dims2()?;
    let index = Tensor::from_vec(relative_position_index(window), n * n, table.device())?;
    Ok(table
        .index_select(&index, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?
        .contiguous()?)
}

/// A pre-norm Swin block.
#[derive(Debug, Clone)]
pub struct SwinBlock {
    norm1: LayerNorm,
    qkv: Linear,
    attn: WindowAttention,
    proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    shift: usize,
}

impl SwinBlock {
    pub fn new(w: &Weights, prefix: &str, d: &BlockDims) -> Result<Self> {
        let span = 2 * d.window - 1;
        let table = w.get(
            &format!("{prefix}.attn.relative_position_bias_table"),
            &[span * span, d.heads],
        )?;
        let head_dim = d.dim / d.heads.max(1);
        let scale = (head_dim as f64).powf(-0.5);
        Ok(Self {
            norm1: LayerNorm::new(w, &format!("{prefix}.norm1"), d.dim)?,
            qkv: linear(w, &format!("{prefix}.attn.qkv"), d.dim, 3 * d.dim)?,
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

    /// x (B, H·W, C) tokens of an `height` × `width` map → the same shape.
    pub fn forward(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.norm1.forward(x)?)?;
        let attended = self.attn.attend(&qkv, height, width, self.shift)?;
        let x = self.proj.forward_add(&attended, x)?;
        self.mlp.forward_add(&self.norm2.forward(&x)?, &x)
    }
}

/// The tensors a pre-norm block reads, `(name, shape)`, for detection's checks.
pub fn block_tensors(prefix: &str, d: &BlockDims) -> Vec<(String, Vec<usize>)> {
    let span = 2 * d.window - 1;
    let (c, hid) = (d.dim, d.hidden);
    [
        ("norm1.weight", vec![c]),
        ("norm1.bias", vec![c]),
        (
            "attn.relative_position_bias_table",
            vec![span * span, d.heads],
        ),
        ("attn.qkv.weight", vec![3 * c, c]),
        ("attn.qkv.bias", vec![3 * c]),
        ("attn.proj.weight", vec![c, c]),
        ("attn.proj.bias", vec![c]),
        ("norm2.weight", vec![c]),
        ("norm2.bias", vec![c]),
        ("mlp.fc1.weight", vec![hid, c]),
        ("mlp.fc1.bias", vec![hid]),
        ("mlp.fc2.weight", vec![c, hid]),
        ("mlp.fc2.bias", vec![c]),
    ]
    .into_iter()
    .map(|(k, s)| (format!("{prefix}.{k}"), s))
    .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn table_bias_gathers_by_relative_position() -> Result<()> {
        // Window 2, one head: table row r holds r.
        let table = Tensor::arange(0f32, 9.0, &Device::Cpu)?.reshape((9, 1))?;
        let bias = table_bias(&table, 2)?;
        assert_eq!(bias.dims(), [1, 4, 4]);
        let got: Vec<f32> = bias.flatten_all()?.to_vec1()?;
        let want: Vec<f32> = relative_position_index(2)
            .iter()
            .map(|&i| i as f32)
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            table_bias(&table.to_dtype(DType::F64)?, 2)?.dtype(),
            DType::F64
        );
        Ok(())
    }
}
