//! ATD's `ConvFFN` (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py`): fc1, GELU, plus
//! GELU(depthwise conv) of that, fc2; the layer's residual add fused into fc2.

use candle_core::Tensor;

use super::dwconv::DepthwiseConv;
use crate::error::Result;
use crate::gan::arch::swin::layers::linear;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

#[derive(Debug, Clone)]
pub(super) struct ConvFfn {
    fc1: Linear,
    dwconv: DepthwiseConv,
    fc2: Linear,
}

impl ConvFfn {
    /// `prefix.fc1` (hidden, dim), `prefix.dwconv.depthwise_conv.0` (hidden, 1, k, k),
    /// `prefix.fc2` (dim, hidden).
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        hidden: usize,
        kernel: usize,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear(w, &format!("{prefix}.fc1"), dim, hidden)?,
            dwconv: DepthwiseConv::new(
                w,
                &format!("{prefix}.dwconv.depthwise_conv.0"),
                hidden,
                kernel,
            )?,
            fc2: linear(w, &format!("{prefix}.fc2"), hidden, dim)?,
        })
    }

    /// `residual + ffn(x)`, x (B, h·w, C) tokens.
    pub(super) fn forward_add(
        &self,
        x: &Tensor,
        residual: &Tensor,
        h: usize,
        w: usize,
    ) -> Result<Tensor> {
        let hidden = self.fc1.forward_gelu_erf(x)?;
        let local = self.dwconv.forward(&hidden, h, w)?.gelu_erf()?;
        Ok(self.fc2.forward_add(&(hidden + local)?, residual)?)
    }
}
