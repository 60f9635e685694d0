//! `text_encoder/config.json`: transformers' `CLIPTextConfig` (configuration_clip.py), with its
//! field names and defaults. Unknown keys (architectures, dtype, projection_dim, …) are ignored.

use std::path::Path;

use serde::Deserialize;

use crate::models::config_ranges::{
    epsilon, in_file, size, MAX_CHANNELS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB,
};
use crate::{Error, Result};

/// The text tower's hyper-parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub projection_dim: Option<usize>,
    /// Token ids only matter for the pooled output, which the pipeline does not use; the x4
    /// upscaler carries OpenCLIP's (0 and 2). `eos_token_id` may also be a list.
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<serde_json::Value>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: Some(512),
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407.into()),
        }
    }
}

/// The MLP activations transformers names in `hidden_act` that this model supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// `gelu_new`: the tanh approximation.
    GeluNew,
}

impl ClipTextConfig {
    /// Reads and checks a `config.json`; a refused value is an [`Error::Config`] naming the
    /// file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = crate::model_dir::read_json(path)?;
        config.validate().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// Refuses what the model cannot run, and sizes out of their sane range (positive and
    /// bounded, so no table is sized by an absurd value).
    pub fn validate(&self) -> Result<()> {
        self.activation()?;
        let bounded = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_CHANNELS),
            (
                "intermediate_size",
                self.intermediate_size,
                4 * MAX_CHANNELS,
            ),
            (
                "num_attention_heads",
                self.num_attention_heads,
                MAX_CHANNELS,
            ),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ];
        for (field, value, max) in bounded {
            size(field, value, max)?;
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::unsupported(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        epsilon("layer_norm_eps", self.layer_norm_eps)?;
        Ok(())
    }

    /// The activation `hidden_act` names.
    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu_new" => Ok(Activation::GeluNew),
            other => Err(Error::unsupported(
                "hidden_act",
                format!("{other:?} is not one of \"gelu\", \"quick_gelu\", \"gelu_new\""),
            )),
        }
    }

    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
