//! The text encoder: transformers' `CLIPTextModel` (modeling_clip.py), here OpenCLIP ViT-H's text
//! tower as the x4 upscaler ships it. Token plus position embeddings, pre-norm transformer layers
//! with causal self-attention, then the final layer norm; `last_hidden_state` is what
//! `StableDiffusionUpscalePipeline` feeds the UNet as prompt embeddings.
//!
//! The module tree mirrors transformers', so hub tensor names load unchanged, both the hub's
//! `text_model.`-prefixed ones and the unprefixed ones transformers 5 writes. Weights stay in the
//! `VarBuilder`'s dtype; layer norms and attention run in f32 so that f16 / bf16 cannot overflow
//! in the variance or the softmax.

mod config;

pub use config::{Activation, ClipTextConfig};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::models::layers::attention_cpu::causal_self_attention;
use crate::models::layers::geglu::gelu_erf;
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::linear::{linear_few_rows, Linear};
use crate::profile::{self, Stage};

use crate::{Error, Result};

/// `nn.LayerNorm`, computed in f32.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(DType::F32)?,
            bias: vb.get(size, "bias")?.to_dtype(DType::F32)?,
            eps: eps as f32,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _scope = profile::scope(Stage::LayerNorm);
        let x32 = xs.to_dtype(DType::F32)?.contiguous()?;
        let ys = layer_norm(&x32, &self.weight, &self.bias, self.eps)?;
        Ok(ys.to_dtype(xs.dtype())?)
    }
}

/// `CLIPAttention`: multi-head self-attention with a causal mask.
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.hidden_size;
        Ok(Self {
            q_proj: linear_few_rows(c, c, true, vb.pp("q_proj"))?,
            k_proj: linear_few_rows(c, c, true, vb.pp("k_proj"))?,
            v_proj: linear_few_rows(c, c, true, vb.pp("v_proj"))?,
            out_proj: linear_few_rows(c, c, true, vb.pp("out_proj"))?,
            heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    /// `xs`: (batch, tokens, hidden); `mask`: (tokens, tokens) f32, 0 or -inf (causal); the
    /// result plus `residual`.
    fn forward_add(&self, xs: &Tensor, mask: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let scale = (self.head_dim as f64).powf(-0.5);
        let (q, k, v) = (
            self.q_proj.forward(xs)?,
            self.k_proj.forward(xs)?,
            self.v_proj.forward(xs)?,
        );
        let attention = profile::scope(Stage::Attention);
        // The causal mask is `mask`'s: key j visible to query i iff j ≤ i.
        let out = causal_self_attention(&q, &k, &v, self.heads, scale, mask)?;
        drop(attention);
        Ok(self.out_proj.forward_add(&out, residual)?)
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP, each with a residual.
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (c, eps) = (config.hidden_size, config.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::new(c, eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(config, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(c, eps, vb.pp("layer_norm2"))?,
            fc1: linear_few_rows(c, config.intermediate_size, true, vb.pp("mlp.fc1"))?,
            fc2: linear_few_rows(config.intermediate_size, c, true, vb.pp("mlp.fc2"))?,
            activation: config.activation()?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        // Both residual adds are fused into the projection before them.
        let xs = self
            .self_attn
            .forward_add(&self.layer_norm1.forward(xs)?, mask, xs)?;
        let normed = self.layer_norm2.forward(&xs)?;
        let h = match self.activation {
            // GELU in fc1's output pass.
            Activation::Gelu => self.fc1.forward_gelu_erf(&normed)?,
            other => activate(other, &self.fc1.forward(&normed)?)?,
        };
        Ok(self.fc2.forward_add(&h, &xs)?)
    }
}

fn activate(activation: Activation, xs: &Tensor) -> Result<Tensor> {
    let _scope = profile::scope(Stage::Activation);
    Ok(match activation {
        Activation::Gelu => gelu_erf(xs)?,
        Activation::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
        // candle's `gelu` is the tanh approximation, which is what `gelu_new` computes.
        Activation::GeluNew => xs.gelu()?,
    })
}

/// transformers' `CLIPTextModel`, returning `last_hidden_state`.
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    vocab_size: usize,
}

impl ClipTextModel {
    /// `vb` is rooted at the safetensors root; tensors may be named `text_model.encoder…` (the
    /// hub's files) or `encoder…` (as transformers 5 saves them).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let c = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(config.vocab_size, c, emb.pp("token_embedding"))?;
        let position_embedding = emb.get(
            (config.max_position_embeddings, c),
            "position_embedding.weight",
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::new(config, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::new(c, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            vocab_size: config.vocab_size,
        })
    }

    /// `input_ids`: (batch, tokens) u32 or i64 ids, tokens ≤ `max_position_embeddings`.
    /// Returns `last_hidden_state`, (batch, tokens, hidden) in the weights' dtype.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_, t) = input_ids.dims2().map_err(|_| {
            Error::option(
                "input_ids",
                format!("expected (batch, tokens), got {:?}", input_ids.shape()),
            )
        })?;
        let max_positions = self.position_embedding.dim(0)?;
        if t == 0 || t > max_positions {
            return Err(Error::option(
                "input_ids",
                format!("{t} tokens, expected 1..={max_positions}"),
            ));
        }
        let ids = self.checked_ids(input_ids)?;
        let positions = self.position_embedding.narrow(0, 0, t)?;
        let mut xs = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&positions)?;
        let mask = causal_mask(t, input_ids.device())?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask)?;
        }
        self.final_layer_norm.forward(&xs)
    }

    /// The ids as u32, refusing any outside the vocabulary (candle would fail less clearly).
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let range_err = |lo: i64, hi: i64| {
            Error::option(
                "input_ids",
                format!(
                    "ids range over {lo}..={hi}, outside the vocabulary of {}",
                    self.vocab_size
                ),
            )
        };
        match input_ids.dtype() {
            DType::U32 | DType::I64 | DType::U8 => {
                let as_i64 = input_ids.to_dtype(DType::I64)?;
                let lo = as_i64.min_all()?.to_scalar::<i64>()?;
                let hi = as_i64.max_all()?.to_scalar::<i64>()?;
                if lo < 0 || hi >= self.vocab_size as i64 {
                    return Err(range_err(lo, hi));
                }
                Ok(input_ids.to_dtype(DType::U32)?)
            }
            other => Err(Error::option(
                "input_ids",
                format!("dtype {other:?} is not an integer id type"),
            )),
        }
    }
}

/// (t, t): 0 where a token may attend (itself and earlier ones), the lowest finite f32 after,
/// as transformers' `torch.finfo(dtype).min` mask: finite, because candle compiles its Metal
/// kernels with fast math, which assumes no infinities. Its exp underflows to exactly 0 all
/// the same (every row sees at least itself).
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (t, t), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal() {
        let m = causal_mask(3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][0], 0.0);
        assert_eq!(m[0][1], f32::MIN);
        assert_eq!(m[2][1], 0.0);
    }
}
