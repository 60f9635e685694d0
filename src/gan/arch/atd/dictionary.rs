//! ATD's adaptive token dictionary (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py`):
//! - `ATD_CA`, the cross-attention of every token to the group's dictionary of m tokens:
//!   cos(wq x, wk td) times 1 + clamp(scale, 0, 1) · ln m per dictionary entry, softmax over
//!   the entries (the similarity `sim`, which the category attention reads too), then
//!   sim · wv td;
//! - the dictionary update at the end of every layer but a group's last (in
//!   `ATDTransformerLayer.forward`): softmax over the tokens of InstanceNorm1d(simᵀ), and
//!   td ← σ(sigma) td + (1 − σ(sigma)) · that · x.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::Module;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

/// `nn.Linear(input, output, bias=has_bias)`.
pub(super) fn linear_opt(
    w: &Weights,
    prefix: &str,
    input: usize,
    output: usize,
    has_bias: bool,
) -> Result<Linear> {
    let bias = if has_bias {
        Some(w.get(&format!("{prefix}.bias"), &[output])?)
    } else {
        None
    };
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[output, input])?,
        bias,
    ))
}

/// `F.normalize(x, dim=-1)`: x / max(‖x‖, 1e-12).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The dictionary cross-attention (`attn_atd`).
#[derive(Debug, Clone)]
pub(super) struct DictionaryAttention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    /// (m, 1): 1 + clamp(scale, 0, 1) · ln m, applied to the normalised keys (the same as to
    /// the score columns).
    key_scale: Tensor,
}

impl DictionaryAttention {
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        tokens: usize,
        reducted: usize,
        bias: bool,
    ) -> Result<Self> {
        let scale = w
            .get(&format!("{prefix}.scale"), &[tokens])?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f64>()?;
        let ln_m = (tokens as f64).ln();
        let factors: Vec<f64> = scale
            .iter()
            .map(|s| 1.0 + s.clamp(0.0, 1.0) * ln_m)
            .collect();
        let key_scale = Tensor::from_vec(factors, (tokens, 1), &Device::Cpu)?
            .to_dtype(w.dtype)?
            .to_device(w.device)?;
        Ok(Self {
            wq: linear_opt(w, &format!("{prefix}.wq"), dim, reducted, bias)?,
            wk: linear_opt(w, &format!("{prefix}.wk"), dim, reducted, bias)?,
            wv: linear_opt(w, &format!("{prefix}.wv"), dim, dim, bias)?,
            key_scale,
        })
    }

    /// x (B, N, C) normalised tokens, td (B, m, C) → (sim · v (B, N, C), sim (B, N, m)).
    pub(super) fn forward(&self, x: &Tensor, td: &Tensor) -> Result<(Tensor, Tensor)> {
        let q = l2_normalize(&self.wq.forward(x)?)?;
        let k = l2_normalize(&self.wk.forward(td)?)?.broadcast_mul(&self.key_scale)?;
        let v = self.wv.forward(td)?;
        let scores = q.matmul(&k.transpose(1, 2)?.contiguous()?)?;
        let sim = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = sim.matmul(&v)?;
        Ok((out, sim))
    }
}

/// The dictionary update (`norm3`, `sigma`) of a layer that is not its group's last.
#[derive(Debug, Clone)]
pub(super) struct DictionaryUpdate {
    /// InstanceNorm1d's affine weight and bias, (m, 1).
    weight: Tensor,
    bias: Tensor,
    /// σ(sigma) and 1 − σ(sigma), (m, 1).
    keep: Tensor,
    take: Tensor,
}

impl DictionaryUpdate {
    pub(super) fn new(w: &Weights, prefix: &str, tokens: usize) -> Result<Self> {
        let col = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((tokens, 1))?) };
        let keep = candle_nn::ops::sigmoid(&w.get(&format!("{prefix}.sigma"), &[tokens, 1])?)?;
        Ok(Self {
            weight: col(w.get(&format!("{prefix}.norm3.weight"), &[tokens])?)?,
            bias: col(w.get(&format!("{prefix}.norm3.bias"), &[tokens])?)?,
            take: keep.affine(-1.0, 1.0)?,
            keep,
        })
    }

    /// td (B, m, C), sim (B, N, m), x (B, N, C) the layer's output → the next td.
    pub(super) fn forward(&self, td: &Tensor, sim: &Tensor, x: &Tensor) -> Result<Tensor> {
        let s = sim.transpose(1, 2)?.contiguous()?;
        // InstanceNorm1d: per (batch, entry) over the tokens, biased variance, eps 1e-5.
        let centred = s.broadcast_sub(&s.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?;
        let mask = candle_nn::ops::softmax_last_dim(&normed)?;
        let pooled = mask.matmul(x)?;
        Ok((td.broadcast_mul(&self.keep)? + pooled.broadcast_mul(&self.take)?)?)
    }
}
