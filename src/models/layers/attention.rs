//! diffusers' `Attention` module with the `AttnProcessor2_0` forward
//! (models/attention_processor.py), for the two ways the upscaler uses it:
//! - the UNet transformer blocks' self- / cross-attention over token sequences
//!   (`to_q`/`to_k`/`to_v` without bias, `to_out.0` with bias, several heads);
//! - the VAE mid-block's spatial self-attention (`group_norm` first, biased projections, one
//!   head, residual connection, `rescale_output_factor`).
//!
//! The product itself goes through [`super::sdpa::scaled_dot_product_attention`], so every
//! attention in both models is memory-bounded by the same budget logic.

use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::group_norm::GroupNorm;
use super::group_norm_stats::GroupNormMode;
use super::linear::{self, Linear};
use super::sdpa::{scaled_dot_product_attention, DEFAULT_MAX_SCORE_BYTES};
use crate::profile::{self, Stage};
use crate::{Error, Result};

/// Construction options of [`Attention`], named as diffusers' `Attention.__init__` names them.
#[derive(Debug, Clone)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// Width of the key / value input; `None` for self-attention.
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias of `to_q`, `to_k`, `to_v`.
    pub bias: bool,
    /// Bias of `to_out.0`.
    pub out_bias: bool,
    /// Scores in f32 whatever the weights' dtype.
    pub upcast_attention: bool,
    /// `group_norm` applied to the input first: (groups, eps).
    pub norm_num_groups: Option<(usize, f64)>,
    pub residual_connection: bool,
    pub rescale_output_factor: f64,
}

impl AttentionConfig {
    /// The transformer-block flavour: no q/k/v bias, biased output, no norm, no residual.
    pub fn transformer(
        query_dim: usize,
        cross_attention_dim: Option<usize>,
        heads: usize,
        upcast_attention: bool,
    ) -> Self {
        Self {
            query_dim,
            cross_attention_dim,
            heads,
            dim_head: query_dim / heads.max(1),
            bias: false,
            out_bias: true,
            upcast_attention,
            norm_num_groups: None,
            residual_connection: false,
            rescale_output_factor: 1.0,
        }
    }
}

/// Multi-head attention with diffusers' parameter names.
#[derive(Debug, Clone)]
pub struct Attention {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
    scale: f64,
    upcast: bool,
    residual_connection: bool,
    rescale_output_factor: f64,
    max_score_bytes: usize,
}

fn linear(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    Ok(if bias {
        linear::linear(input, output, vb)?
    } else {
        linear::linear_no_bias(input, output, vb)?
    })
}

/// `to_k` / `to_v`: under cross-attention they only ever see the text embeddings (batch ×
/// 77 rows), so they keep their weight as stored for the few-rows kernel.
fn kv_linear(cfg: &AttentionConfig, inner: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(match cfg.cross_attention_dim {
        Some(kv_dim) => linear::linear_few_rows(kv_dim, inner, cfg.bias, vb)?,
        None => linear(cfg.query_dim, inner, cfg.bias, vb)?,
    })
}

impl Attention {
    pub fn new(cfg: &AttentionConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.heads == 0 || cfg.dim_head == 0 {
            return Err(Error::unsupported(
                "attention_head_dim",
                format!(
                    "gives {} heads of width {} for {} channels",
                    cfg.heads, cfg.dim_head, cfg.query_dim
                ),
            ));
        }
        let inner = cfg.heads * cfg.dim_head;
        let group_norm = match cfg.norm_num_groups {
            Some((groups, eps)) => Some(GroupNorm::new(
                groups,
                cfg.query_dim,
                eps,
                vb.pp("group_norm"),
            )?),
            None => None,
        };
        Ok(Self {
            group_norm,
            to_q: linear(cfg.query_dim, inner, cfg.bias, vb.pp("to_q"))?,
            to_k: kv_linear(cfg, inner, vb.pp("to_k"))?,
            to_v: kv_linear(cfg, inner, vb.pp("to_v"))?,
            to_out: linear(inner, cfg.query_dim, cfg.out_bias, vb.pp("to_out").pp("0"))?,
            heads: cfg.heads,
            dim_head: cfg.dim_head,
            scale: 1.0 / (cfg.dim_head as f64).sqrt(),
            upcast: cfg.upcast_attention,
            residual_connection: cfg.residual_connection,
            rescale_output_factor: cfg.rescale_output_factor,
            max_score_bytes: DEFAULT_MAX_SCORE_BYTES,
        })
    }

    /// Largest score matrix, in bytes, that one forward may materialise.
    pub fn set_max_score_bytes(&mut self, max_score_bytes: usize) {
        self.max_score_bytes = max_score_bytes.max(1);
    }

    /// Token form: x (B, L, query_dim), context (B, Lk, cross_dim) or `None` for
    /// self-attention -> (B, L, query_dim). Expects contiguous inputs.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.forward_impl(x, context, None)
    }

    /// [`Self::forward`] + `residual` (B, L, query_dim), the add fused into `to_out`.
    pub fn forward_add(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.forward_impl(x, context, Some(residual))
    }

    fn forward_impl(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let (b, lq, _) = q.dims3()?;
        let attention = profile::scope(Stage::Attention);
        let q = self.split_heads(q)?;
        let k = self.split_heads(k)?;
        let v = self.split_heads(v)?;
        let out = scaled_dot_product_attention(
            &q,
            &k,
            &v,
            self.scale,
            self.upcast,
            self.max_score_bytes,
        )?;
        let out = self.merge_heads(out, b, lq)?;
        drop(attention);
        Ok(match residual {
            Some(r) => self.to_out.forward_add(&out, r)?,
            None => self.to_out.forward(&out)?,
        })
    }

    /// Spatial form used by the VAE mid block: x (B, C, H, W) -> (B, C, H, W), with the group
    /// norm (its statistics as `mode` says), residual connection and output rescaling of
    /// diffusers' processor.
    pub fn forward_spatial(&self, x: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = match &self.group_norm {
            Some(norm) => norm.forward_with_stats(x, false, mode)?,
            None => x.clone(),
        };
        // (B, C, HW) -> (B, HW, C): the projections and batched matmuls want row-major tokens.
        let tokens = normed
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        drop(normed);
        let out = self.forward(&tokens, None)?.transpose(1, 2)?;
        let out = if self.residual_connection {
            // Adding to the channel-major residual materialises (B, C, HW) directly.
            x.reshape((b, c, h * w))?.add(&out)?
        } else {
            out.contiguous()?
        };
        let out = out.reshape((b, c, h, w))?;
        if self.rescale_output_factor != 1.0 {
            Ok((out / self.rescale_output_factor)?)
        } else {
            Ok(out)
        }
    }

    /// (B, L, H·D) -> (B·H, L, D).
    fn split_heads(&self, t: Tensor) -> Result<Tensor> {
        if self.heads == 1 {
            return Ok(t);
        }
        let (b, l, _) = t.dims3()?;
        Ok(t.reshape((b, l, self.heads, self.dim_head))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * self.heads, l, self.dim_head))?)
    }

    /// (B·H, L, D) -> (B, L, H·D).
    fn merge_heads(&self, t: Tensor, b: usize, l: usize) -> Result<Tensor> {
        if self.heads == 1 {
            return Ok(t);
        }
        Ok(t.reshape((b, self.heads, l, self.dim_head))?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * self.dim_head))?)
    }
}
