//! Swin2SR's transformer block (Swin V2, spandrel 0.4.2
//! `architectures/Swin2SR/__arch/Swin2SR.py` `SwinTransformerBlock` and `WindowAttention`):
//! post-norm, x + norm1(proj(W-MSA(x))), then x + norm2(mlp(x)); cosine attention with a
//! learned per-head logit scale (clamped at ln 100); the relative-position bias made by a small
//! MLP (`cpb_mlp`: 2 → 512, ReLU, 512 → heads) from log-spaced relative coordinates,
//! 16 · sigmoid of it. The bias depends on the weights only, so it is made once at load.

use candle_core::{DType, Device, Tensor};
use candle_nn::Module;

use crate::error::Result;
use crate::gan::arch::swin::geometry::relative_position_index;
use crate::gan::arch::swin::layers::{LayerNorm, Mlp};
use crate::gan::arch::swin::{BlockDims, LogitScale, WindowAttention};
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

/// The hidden width of `cpb_mlp`, fixed by the reference.
pub const CPB_HIDDEN: usize = 512;

/// The reference's `relative_coords_table` ((2w − 1)², 2), rows in the order of
/// [`relative_position_index`]: Δy and Δx scaled to ±8 at the window's edge, then
/// sign · log2(|·| + 1) / log2(8). In f32 as the reference makes the buffer (a model cast to
/// f64 keeps those values).
pub fn relative_coords_table(window: usize) -> Vec<f64> {
    let span = 2 * window - 1;
    let edge = (window.max(2) - 1) as f32;
    let log_space = |d: f32| {
        let v = d / edge * 8.0;
        (v.signum() * (v.abs() + 1.0).log2() / 3.0) as f64
    };
    let mut table = Vec::with_capacity(span * span * 2);
    for i in 0..span {
        for j in 0..span {
            table.push(log_space(i as f32 - (window as f32 - 1.0)));
            table.push(log_space(j as f32 - (window as f32 - 1.0)));
        }
    }
    table
}

/// 16 · sigmoid(cpb_mlp(coords))[index] as (heads, n, n), computed in f64 on the CPU from the
/// MLP's weights, then cast to `dtype` on `device`.
fn cpb_bias(w: &Weights, prefix: &str, heads: usize, window: usize) -> Result<Tensor> {
    let host =
        |t: Tensor| -> Result<Tensor> { Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?) };
    let w1 = host(w.get(&format!("{prefix}.cpb_mlp.0.weight"), &[CPB_HIDDEN, 2])?)?;
    let b1 = host(w.get(&format!("{prefix}.cpb_mlp.0.bias"), &[CPB_HIDDEN])?)?;
    let w2 = host(w.get(&format!("{prefix}.cpb_mlp.2.weight"), &[heads, CPB_HIDDEN])?)?;
    let span = 2 * window - 1;
    // The checkpoint's own table where it has one (a half-precision file holds it rounded,
    // and the reference uses what it loads), else the reference's computation.
    let stored = format!("{prefix}.relative_coords_table");
    let coords = if w.has(&stored) {
        host(w.get(&stored, &[1, span, span, 2])?)?.reshape((span * span, 2))?
    } else {
        Tensor::from_vec(
            relative_coords_table(window),
            (span * span, 2),
            &Device::Cpu,
        )?
    };
    let hidden = coords.matmul(&w1.t()?)?.broadcast_add(&b1)?.relu()?;
    let table = hidden.matmul(&w2.t()?)?; // (positions, heads)
    let n = window * window;
    let index = Tensor::from_vec(relative_position_index(window), n * n, &Device::Cpu)?;
    let bias = table
        .index_select(&index, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?;
    let bias = (candle_nn::ops::sigmoid(&bias)? * 16.0)?;
    Ok(bias.to_dtype(w.dtype)?.to_device(w.device)?.contiguous()?)
}

/// exp(min(logit_scale, ln 100)) per head, from `logit_scale` (heads, 1, 1).
fn logit_scales(w: &Weights, prefix: &str, heads: usize) -> Result<Vec<f32>> {
    let t = w.get(&format!("{prefix}.logit_scale"), &[heads, 1, 1])?;
    let values: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    // The reference clamps at `torch.log(torch.tensor(1.0 / 0.01))`, an f32 value, whatever
    // the model's dtype.
    let max = (100f32).ln() as f64;
    Ok(values.iter().map(|&v| v.min(max).exp() as f32).collect())
}

/// A Swin V2 block.
#[derive(Debug, Clone)]
pub struct Swin2Block {
    qkv: Linear,
    attn: WindowAttention,
    proj: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    mlp: Mlp,
    shift: usize,
}

impl Swin2Block {
    pub fn new(w: &Weights, prefix: &str, d: &BlockDims, qkv_bias: bool) -> Result<Self> {
        let c = d.dim;
        let attn_prefix = format!("{prefix}.attn");
        let weight = w.get(&format!("{attn_prefix}.qkv.weight"), &[3 * c, c])?;
        // The reference's qkv bias: cat(q_bias, zeros, v_bias).
        let bias = if qkv_bias {
            let q = w.get(&format!("{attn_prefix}.q_bias"), &[c])?;
            let v = w.get(&format!("{attn_prefix}.v_bias"), &[c])?;
            Some(Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?)
        } else {
            None
        };
        let scales = logit_scales(w, &attn_prefix, d.heads)?;
        Ok(Self {
            qkv: Linear::new(weight, bias),
            attn: WindowAttention::new(
                d.heads,
                d.window,
                cpb_bias(w, &attn_prefix, d.heads, d.window)?,
                LogitScale::Cosine(scales),
            )?,
            proj: crate::gan::arch::swin::layers::linear(w, &format!("{attn_prefix}.proj"), c, c)?,
            norm1: LayerNorm::new(w, &format!("{prefix}.norm1"), c)?,
            norm2: LayerNorm::new(w, &format!("{prefix}.norm2"), c)?,
            mlp: Mlp::new(w, &format!("{prefix}.mlp"), c, d.hidden)?,
            shift: d.shift,
        })
    }

    /// x (B, H·W, C) tokens of an `height` × `width` map → the same shape.
    pub fn forward(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let attended = self.attn.attend(&qkv, height, width, self.shift)?;
        let x = (x + self.norm1.forward(&self.proj.forward(&attended)?)?)?;
        Ok((&x + self.norm2.forward(&self.mlp.forward(&x)?)?)?)
    }
}

/// The tensors a Swin V2 block reads, `(name, shape)`.
pub fn swin2_block_tensors(
    prefix: &str,
    d: &BlockDims,
    qkv_bias: bool,
) -> Vec<(String, Vec<usize>)> {
    let (c, hid, h) = (d.dim, d.hidden, d.heads);
    let mut t = vec![
        ("attn.logit_scale", vec![h, 1, 1]),
        ("attn.cpb_mlp.0.weight", vec![CPB_HIDDEN, 2]),
        ("attn.cpb_mlp.0.bias", vec![CPB_HIDDEN]),
        ("attn.cpb_mlp.2.weight", vec![h, CPB_HIDDEN]),
        ("attn.qkv.weight", vec![3 * c, c]),
        ("attn.proj.weight", vec![c, c]),
        ("attn.proj.bias", vec![c]),
        ("norm1.weight", vec![c]),
        ("norm1.bias", vec![c]),
        ("norm2.weight", vec![c]),
        ("norm2.bias", vec![c]),
        ("mlp.fc1.weight", vec![hid, c]),
        ("mlp.fc1.bias", vec![hid]),
        ("mlp.fc2.weight", vec![c, hid]),
        ("mlp.fc2.bias", vec![c]),
    ];
    if qkv_bias {
        t.push(("attn.q_bias", vec![c]));
        t.push(("attn.v_bias", vec![c]));
    }
    t.into_iter()
        .map(|(k, s)| (format!("{prefix}.{k}"), s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coords_table_is_log_spaced() {
        // Window 8: Δ = 7 maps to 8 → log2(9) / 3; Δ = 0 to 0; the table is odd in Δ.
        let t = relative_coords_table(8);
        assert_eq!(t.len(), 15 * 15 * 2);
        let at = |i: usize, j: usize, k: usize| t[(i * 15 + j) * 2 + k];
        assert!((at(14, 7, 0) - 9f64.log2() / 3.0).abs() < 1e-6);
        assert_eq!(at(7, 7, 0), 0.0);
        assert_eq!(at(7, 7, 1), 0.0);
        assert!((at(0, 3, 0) + at(14, 3, 0)).abs() < 1e-7);
        assert!((at(3, 0, 1) + at(3, 14, 1)).abs() < 1e-7);
    }
}
