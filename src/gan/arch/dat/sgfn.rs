//! DAT's spatial-gate feed-forward network (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`,
//! `SGFN` and `SpatialGate`): fc1 and GELU to the hidden width, whose second half, layer-normed
//! and passed through a depthwise 3×3 conv over the map, gates the first half; fc2 back.

use candle_core::Tensor;

use super::dwconv::DepthwiseConv3x3;
use super::modules::{linear, Norm};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

pub(super) struct Sgfn {
    fc1: Linear,
    norm: Norm,
    conv: DepthwiseConv3x3,
    fc2: Linear,
    half: usize,
}

impl Sgfn {
    /// The SGFN under `prefix` (`layers.i.blocks.j.ffn`): `c` channels, `hidden` wide.
    pub(super) fn new(w: &Weights, prefix: &str, c: usize, hidden: usize) -> Result<Self> {
        let half = hidden / 2;
        let conv_w = w.get(&format!("{prefix}.sg.conv.weight"), &[half, 1, 3, 3])?;
        let conv_b = w.get(&format!("{prefix}.sg.conv.bias"), &[half])?;
        Ok(Self {
            fc1: linear(w, &format!("{prefix}.fc1"), c, hidden, true)?,
            norm: Norm::new(w, &format!("{prefix}.sg.norm"), half)?,
            conv: DepthwiseConv3x3::new(&conv_w, &conv_b, &conv_b)?,
            fc2: linear(w, &format!("{prefix}.fc2"), half, c, true)?,
            half,
        })
    }

    /// residual + SGFN(xn) for xn (B, L, C), an h × w map.
    pub(super) fn forward(
        &self,
        xn: &Tensor,
        residual: &Tensor,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        let (b, l, _) = xn.dims3()?;
        let hidden = self.fc1.forward_gelu_erf(xn)?;
        let gate = self
            .norm
            .forward(&hidden.narrow(2, self.half, self.half)?)?;
        let gate = self
            .conv
            .forward(&gate.reshape((b, h, w, self.half))?)?
            .reshape((b, l, self.half))?;
        let gated = (hidden.narrow(2, 0, self.half)? * gate)?;
        Ok(self.fc2.forward_add(&gated, residual)?)
    }
}
