//! The timestep embedding of diffusers' models/embeddings.py: `get_timestep_embedding`
//! (`Timesteps`) and `TimestepEmbedding` (linear_1 → SiLU → linear_2 [→ post_act]).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::models::layers::linear::{linear, Linear};

use crate::Result;

/// Sinusoidal embedding of one timestep, repeated for `batch` rows: (batch, dim) in `dtype`.
///
/// Computed in f32 the way torch computes it: frequencies exp(-ln(10000)·i / (dim/2 - shift)),
/// arguments t·freq, then [sin, cos] (or [cos, sin] with `flip_sin_to_cos`), zero-padded to an
/// odd `dim`.
pub fn timestep_embedding(
    timestep: f64,
    batch: usize,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_max_period = -(10000f64.ln() as f32);
    let denom = half as f32 - freq_shift as f32;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * (log_max_period * i as f32 / denom).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut row: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    row.resize(dim, 0.0);
    let row = Tensor::from_vec(row, (1, dim), device)?;
    Ok(row.repeat((batch, 1))?.to_dtype(dtype)?)
}

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2, then SiLU again with `timestep_post_act`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    post_act: bool,
}

impl TimestepEmbedding {
    pub fn new(input: usize, dim: usize, post_act: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: linear(input, dim, vb.pp("linear_1"))?,
            linear_2: linear(dim, dim, vb.pp("linear_2"))?,
            post_act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)?;
        Ok(if self.post_act { h.silu()? } else { h })
    }
}
