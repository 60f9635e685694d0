//! RGT's transformer block, the reference's `Block` (spandrel 0.4.2
//! `architectures/RGT/__arch/rgt.py`): x + attn(norm1(x)), then + MLP(norm2(·)), then the
//! "hybrid adaptive integration" `+ gamma · x` of the block's input. Even blocks attend in
//! rectangle windows ([`Lsa`]), odd ones by recursive generalization ([`RgSa`]). The MLP is
//! fc1 → GELU → a gate (the first half of the channels times a depthwise 3×3 conv of the
//! normed second half) → fc2.

use candle_core::Tensor;
use rayon::prelude::*;

use super::depthwise::{Depthwise, Epilogue};
use super::detect::is_shifted;
use super::lsa::Lsa;
use super::rgsa::RgSa;
use super::RgtParams;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::cpu_dispatch::on_cpu_f32;
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::linear::Linear;

/// nn.LayerNorm's default epsilon.
const EPS: f32 = 1e-5;

/// A layer norm's `weight` and `bias`.
pub(super) struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    pub(super) fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            bias: w.get(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, &self.weight, &self.bias, EPS)?)
    }
}

/// The MLP with its spatial gate (`mlp.fc1`, `mlp.sg.norm`, `mlp.sg.conv`, `mlp.fc2`).
struct Mlp {
    fc1: Linear,
    gate_norm: Norm,
    gate_conv: Depthwise,
    fc2: Linear,
    half: usize,
}

impl Mlp {
    fn new(w: &Weights, prefix: &str, dim: usize, hidden: usize) -> Result<Self> {
        let half = hidden / 2;
        let linear = |name: &str, o: usize, i: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.get(&format!("{prefix}.{name}.weight"), &[o, i])?,
                Some(w.get(&format!("{prefix}.{name}.bias"), &[o])?),
            ))
        };
        Ok(Self {
            fc1: linear("fc1", hidden, dim)?,
            gate_norm: Norm::new(w, &format!("{prefix}.sg.norm"), half)?,
            gate_conv: Depthwise::same3x3(w, &format!("{prefix}.sg.conv"), half)?,
            fc2: linear("fc2", dim, half)?,
            half,
        })
    }

    /// MLP(x) + residual for x (B, h·w, dim).
    fn forward_add(&self, x: &Tensor, hw: (usize, usize), residual: &Tensor) -> Result<Tensor> {
        let hidden = self.fc1.forward_gelu_erf(x)?;
        let normed = self
            .gate_norm
            .forward(&hidden.narrow(2, self.half, self.half)?)?;
        let gated = self
            .gate_conv
            .forward(&normed, 0, hw, Epilogue::Mul(&hidden, 0))?;
        drop((hidden, normed));
        Ok(self.fc2.forward_add(&gated, residual)?)
    }
}

enum Attention {
    Window(Lsa),
    Recursive(RgSa),
}

pub(super) struct Block {
    norm1: Norm,
    norm2: Norm,
    attn: Attention,
    mlp: Mlp,
    /// (dim), the layer scale of the input's skip.
    gamma: Tensor,
}

impl Block {
    /// Block `idx` of residual group `group`.
    pub(super) fn new(w: &Weights, p: &RgtParams, group: usize, idx: usize) -> Result<Self> {
        let prefix = format!("layers.{group}.blocks.{idx}");
        let dim = p.embed_dim;
        let heads = p.num_heads.get(group).copied().unwrap_or(2);
        let attn_prefix = format!("{prefix}.attn");
        let attn = if idx % 2 == 0 {
            Attention::Window(Lsa::new(
                w,
                &attn_prefix,
                dim,
                heads,
                p.split_size,
                p.qkv_bias,
                is_shifted(group, idx),
            )?)
        } else {
            Attention::Recursive(RgSa::new(
                w,
                &attn_prefix,
                dim,
                p.reduced_dim(),
                heads,
                p.c_ratio,
                p.qkv_bias,
            )?)
        };
        Ok(Self {
            norm1: Norm::new(w, &format!("{prefix}.norm1"), dim)?,
            norm2: Norm::new(w, &format!("{prefix}.norm2"), dim)?,
            attn,
            mlp: Mlp::new(w, &format!("{prefix}.mlp"), dim, p.mlp_hidden())?,
            gamma: w.get(&format!("{prefix}.gamma"), &[dim])?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
        let normed = self.norm1.forward(x)?;
        let x1 = match &self.attn {
            Attention::Window(a) => a.forward_add(&normed, hw, x)?,
            Attention::Recursive(a) => a.forward_add(&normed, hw, x)?,
        };
        drop(normed);
        // The layer-scaled skip joins the MLP's residual, so fc2 adds both at once.
        let skip = scaled_add(&x1, x, &self.gamma)?;
        let normed = self.norm2.forward(&x1)?;
        drop(x1);
        self.mlp.forward_add(&normed, hw, &skip)
    }
}

/// a + x · gamma (gamma per channel, the last axis), one pass on the CPU in f32.
fn scaled_add(a: &Tensor, x: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    let c = gamma.elem_count();
    if a.dims() == x.dims() && x.dims().last() == Some(&c) {
        let fast = on_cpu_f32([a, x, gamma], [], a.shape(), |[a, x, g], []| {
            let mut out = a.to_vec();
            out.par_chunks_mut(c.max(1) * 64)
                .zip(x.par_chunks(c.max(1) * 64))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                            *o += x * g;
                        }
                    }
                });
            out
        })?;
        if let Some(y) = fast {
            return Ok(y);
        }
    }
    Ok((a + x.broadcast_mul(gamma)?)?)
}
