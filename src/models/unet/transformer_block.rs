//! `BasicTransformerBlock` and its GEGLU `FeedForward` (diffusers models/attention.py,
//! models/activations.py), in the `layer_norm` flavour Stable Diffusion UNets use.
//!
//! With `only_cross_attention`, `attn1` takes its keys and values from the text embedding
//! instead of from the image tokens (the x4 upscaler does this at every level but the lowest).

use candle_core::Tensor;
use candle_nn::{LayerNorm, Module, VarBuilder};

use crate::models::layers::geglu::geglu;
use crate::models::layers::linear::{linear, Linear};
use crate::models::layers::{Attention, AttentionConfig};
use crate::profile::{self, Stage};
use crate::Result;

/// Construction options of one block.
#[derive(Debug, Clone)]
pub struct TransformerBlockConfig {
    pub dim: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

/// LayerNorm eps of the blocks (`norm_eps` of `Transformer2DModel`, never set by the UNet).
const LAYER_NORM_EPS: f64 = 1e-5;

/// GEGLU feed-forward: `net.0.proj` (dim → 2·4·dim), value · gelu(gate), `net.2` (4·dim → dim).
#[derive(Debug, Clone)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    /// FeedForward(x) + residual, the add fused into the output projection.
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let projected = self.proj.forward(x)?;
        // torch's F.gelu default is the exact (erf) form, which `geglu` computes.
        let gated = profile::time(Stage::Activation, || geglu(&projected))?;
        Ok(self.out.forward_add(&gated, residual)?)
    }
}

#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(cfg: &TransformerBlockConfig, vb: VarBuilder) -> Result<Self> {
        let attn1_kv = cfg.only_cross_attention.then_some(cfg.cross_attention_dim);
        let attn1 =
            AttentionConfig::transformer(cfg.dim, attn1_kv, cfg.heads, cfg.upcast_attention);
        let attn2 = AttentionConfig::transformer(
            cfg.dim,
            Some(cfg.cross_attention_dim),
            cfg.heads,
            cfg.upcast_attention,
        );
        Ok(Self {
            norm1: candle_nn::layer_norm(cfg.dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn1: Attention::new(&attn1, vb.pp("attn1"))?,
            norm2: candle_nn::layer_norm(cfg.dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            attn2: Attention::new(&attn2, vb.pp("attn2"))?,
            norm3: candle_nn::layer_norm(cfg.dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
            ff: FeedForward::new(cfg.dim, vb.pp("ff"))?,
            only_cross_attention: cfg.only_cross_attention,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        self.attn1.set_max_score_bytes(bytes);
        self.attn2.set_max_score_bytes(bytes);
    }

    /// x (B, L, dim), context (B, 77, cross_dim) -> (B, L, dim).
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let attn1_context = self.only_cross_attention.then_some(context);
        let norm = |n: &LayerNorm, x: &Tensor| profile::time(Stage::LayerNorm, || n.forward(x));
        // Each residual add is fused into the output projection before it.
        let x = self
            .attn1
            .forward_add(&norm(&self.norm1, x)?, attn1_context, x)?;
        let x = self
            .attn2
            .forward_add(&norm(&self.norm2, &x)?, Some(context), &x)?;
        self.ff.forward_add(&norm(&self.norm3, &x)?, &x)
    }
}
