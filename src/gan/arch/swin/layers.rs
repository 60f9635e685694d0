//! The small layers around Swin's window attention (spandrel 0.4.2
//! `architectures/SwinIR/__arch/SwinIR.py`: `nn.LayerNorm`, `Mlp`, `PatchEmbed` /
//! `PatchUnEmbed`), read from a state dict through [`Weights`], and the image mean the
//! networks subtract.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2dConfig, Module};

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::linear::Linear;

/// The DIV2K RGB mean SwinIR subtracts from 3-channel inputs (others: none).
const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];

/// The image mean of a network with `channels` input channels, (1, C, 1, 1) (RGB) or a zero
/// (1, 1, 1, 1).
pub fn image_mean(channels: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mean = if channels == 3 {
        Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), device)?
    } else {
        Tensor::zeros((1, 1, 1, 1), DType::F32, device)?
    };
    Ok(mean.to_dtype(dtype)?)
}

/// `nn.LayerNorm(dim)` over the last axis (eps 1e-5).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// `prefix.weight`, `prefix.bias`, both (dim).
    pub fn new(w: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            bias: w.get(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, &self.weight, &self.bias, 1e-5)?)
    }
}

/// `nn.Linear(input, output)` with its bias: `prefix.weight` (output, input), `prefix.bias`.
pub fn linear(w: &Weights, prefix: &str, input: usize, output: usize) -> Result<Linear> {
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[output, input])?,
        Some(w.get(&format!("{prefix}.bias"), &[output])?),
    ))
}

/// A 1×1 convolution with bias, `prefix.weight` (c_out, c_in, 1, 1), `prefix.bias`.
pub fn conv1x1(w: &Weights, prefix: &str, c_in: usize, c_out: usize) -> Result<Conv2d> {
    let weight = w.get(&format!("{prefix}.weight"), &[c_out, c_in, 1, 1])?;
    let bias = w.get(&format!("{prefix}.bias"), &[c_out])?;
    Ok(Conv2d::new(weight, Some(bias), Conv2dConfig::default()))
}

/// The transformer MLP: fc1, exact (erf) GELU, fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// `prefix.fc1` (hidden, dim) and `prefix.fc2` (dim, hidden).
    pub fn new(w: &Weights, prefix: &str, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: linear(w, &format!("{prefix}.fc1"), dim, hidden)?,
            fc2: linear(w, &format!("{prefix}.fc2"), hidden, dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.fc1.forward_gelu_erf(x)?)?)
    }

    /// `residual + mlp(x)`, the add fused into fc2 where the CPU path allows.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self
            .fc2
            .forward_add(&self.fc1.forward_gelu_erf(x)?, residual)?)
    }
}

/// `PatchEmbed` without its norm: (B, C, H, W) → (B, H·W, C) tokens in image order.
pub fn to_tokens(x: &Tensor) -> Result<Tensor> {
    Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?)
}

/// `PatchUnEmbed`: (B, H·W, C) tokens → (B, C, H, W).
pub fn to_image(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    Ok(x.transpose(1, 2)?
        .contiguous()?
        .reshape((b, c, height, width))?)
}
