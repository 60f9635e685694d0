//! The small PyTorch modules DAT is built from, read from the weights under the reference's
//! names (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`): `nn.LayerNorm`, `nn.Linear`,
//! `nn.Conv2d`, and `nn.BatchNorm2d` in eval mode, folded into the convolution before it.

use candle_core::{DType, Tensor};
use candle_nn::Conv2dConfig;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;
use crate::models::layers::layer_norm::layer_norm;
use crate::models::layers::linear::Linear;

/// torch's default `eps` of `nn.LayerNorm` and `nn.BatchNorm2d`.
const EPS: f64 = 1e-5;

/// `nn.LayerNorm(dim)` over the last dimension.
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
        Ok(layer_norm(x, &self.weight, &self.bias, EPS as f32)?)
    }
}

/// `nn.Linear(inp, out)` under `prefix`, biased when `bias`.
pub(super) fn linear(
    w: &Weights,
    prefix: &str,
    inp: usize,
    out: usize,
    bias: bool,
) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[out, inp])?;
    let bias = bias
        .then(|| w.get(&format!("{prefix}.bias"), &[out]))
        .transpose()?;
    Ok(Linear::new(weight, bias))
}

/// `nn.Conv2d(inp, out, k, 1, k / 2)` with bias under `prefix` (k = 1 or 3).
pub(super) fn conv(w: &Weights, prefix: &str, inp: usize, out: usize, k: usize) -> Result<Conv2d> {
    if k == 3 {
        return w.conv3x3(prefix, inp, out);
    }
    let weight = w.get(&format!("{prefix}.weight"), &[out, inp, k, k])?;
    let bias = w.get(&format!("{prefix}.bias"), &[out])?;
    let config = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    Ok(Conv2d::new(weight, Some(bias), config))
}

/// A convolution's weight (out, …) and bias (out) with the eval-mode `nn.BatchNorm2d(out)`
/// under `bn` folded in: w·s and (b − mean)·s + β, s = γ / √(var + eps), computed in f32 and
/// returned in the model's dtype.
pub(super) fn fold_batch_norm(
    w: &Weights,
    weight: &Tensor,
    bias: &Tensor,
    bn: &str,
) -> Result<(Tensor, Tensor)> {
    let out = bias.dims1()?;
    let get = |name: &str| -> Result<Tensor> {
        Ok(w.get(&format!("{bn}.{name}"), &[out])?
            .to_dtype(DType::F32)?)
    };
    let (gamma, beta) = (get("weight")?, get("bias")?);
    let (mean, var) = (get("running_mean")?, get("running_var")?);
    let scale = (gamma / (var + EPS)?.sqrt()?)?;
    let mut per_out = vec![1usize; weight.rank()];
    per_out[0] = out;
    let folded_w = weight
        .to_dtype(DType::F32)?
        .broadcast_mul(&scale.reshape(per_out)?)?;
    let folded_b = ((bias.to_dtype(DType::F32)? - mean)? * &scale)?.add(&beta)?;
    Ok((folded_w.to_dtype(w.dtype)?, folded_b.to_dtype(w.dtype)?))
}

/// A 1×1 convolution followed by an eval-mode batch norm, as the per-token linear layer it
/// is on channels-last maps: `conv` (out, inp, 1, 1) and `bn` folded into (out, inp).
pub(super) fn pointwise_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    inp: usize,
    out: usize,
) -> Result<Linear> {
    let weight = w.get(&format!("{conv}.weight"), &[out, inp, 1, 1])?;
    let bias = w.get(&format!("{conv}.bias"), &[out])?;
    let (weight, bias) = fold_batch_norm(w, &weight, &bias, bn)?;
    Ok(Linear::new(weight.reshape((out, inp))?, Some(bias)))
}

/// A 1×1 convolution as a per-token linear layer: `conv` (out, inp, 1, 1) as (out, inp).
pub(super) fn pointwise(w: &Weights, conv: &str, inp: usize, out: usize) -> Result<Linear> {
    let weight = w.get(&format!("{conv}.weight"), &[out, inp, 1, 1])?;
    let bias = w.get(&format!("{conv}.bias"), &[out])?;
    Ok(Linear::new(weight.reshape((out, inp))?, Some(bias)))
}
