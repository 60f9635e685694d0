//! DAT's spatial-window block attention (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`,
//! `Adaptive_Spatial_Attention`): half the channels attend in h×w windows, the other half in
//! w×h windows (each with half the heads); q, k, v are zero-padded after the projection to a
//! multiple of the longer window side, and in the shifted blocks each half is rolled by half
//! its window before and back after; the concatenated output is combined with the conv branch
//! by the interaction module.

use candle_core::Tensor;
use candle_nn::Module;

use super::interaction::{Gating, Interaction};
use super::layout::pos_dim;
use super::mask::ShiftLabels;
use super::window::WindowAttention;
use super::DatParams;
use crate::error::Result;
use crate::gan::arch::Weights;

pub(super) struct SpatialAttention {
    common: Interaction,
    /// attns.0 (split_size[0] × split_size[1] windows) and attns.1 (transposed).
    orientations: [WindowAttention; 2],
    shifted: bool,
    /// The side q, k, v are padded to a multiple of.
    multiple: usize,
    channels: usize,
}

impl SpatialAttention {
    /// Block `b_idx` of group `rg_idx`, under `a` (`layers.i.blocks.j.attn`).
    pub(super) fn new(
        w: &Weights,
        a: &str,
        p: &DatParams,
        (rg_idx, b_idx): (usize, usize),
    ) -> Result<Self> {
        let c = p.embed_dim;
        let heads = p.num_heads.get(rg_idx).copied().unwrap_or(2) / 2;
        // Spatial_Attention(dim // 2, num_heads // 2): head_dim = (C/2) // (heads/2).
        let head_dim = (c / 2) / heads.max(1);
        let scale = (head_dim as f64).powf(-0.5);
        let [s0, s1] = p.split_size;
        let pd = pos_dim(c);
        Ok(Self {
            common: Interaction::new(
                w,
                a,
                (c, p.qkv_bias),
                Some(scale),
                Gating::ChannelMapFromConv,
            )?,
            orientations: [
                WindowAttention::new(w, &format!("{a}.attns.0"), (s0, s1), heads, pd)?,
                WindowAttention::new(w, &format!("{a}.attns.1"), (s1, s0), heads, pd)?,
            ],
            shifted: DatParams::shifted(rg_idx, b_idx),
            multiple: p.window_multiple(),
            channels: c,
        })
    }

    /// residual + the attention of xn (B, L, C), an h × w map.
    pub(super) fn forward(
        &self,
        xn: &Tensor,
        residual: &Tensor,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        let (b, l, c) = xn.dims3()?;
        let half = c / 2;
        let qkv = self.common.qkv.forward(xn)?;
        let conv = self
            .common
            .conv_branch(&qkv.narrow(2, 2 * c, c)?.reshape((b, h, w, c))?)?
            .reshape((b, l, c))?;
        let (hp, wp) = (
            h.next_multiple_of(self.multiple),
            w.next_multiple_of(self.multiple),
        );
        // (B, H, W, 3, 2, C/2): q, k, v of both orientations; zero tokens fill the padding,
        // as the reference pads after the projection.
        let mut qkv = qkv.reshape((b, h, w, 3, 2, half))?;
        if hp != h {
            qkv = qkv.pad_with_zeros(1, 0, hp - h)?;
        }
        if wp != w {
            qkv = qkv.pad_with_zeros(2, 0, wp - w)?;
        }
        let mut outputs = Vec::with_capacity(2);
        for (k, attn) in self.orientations.iter().enumerate() {
            let out = if self.shifted {
                let (win_h, win_w) = attn.window();
                let shift = (win_h / 2, win_w / 2);
                let labels = ShiftLabels::new((hp, wp), (win_h, win_w), shift);
                let rolled = roll2(&qkv.narrow(4, k, 1)?, -(shift.0 as i32), -(shift.1 as i32))?;
                let out = attn.forward(&rolled, 0, Some(&labels))?;
                roll2(&out, shift.0 as i32, shift.1 as i32)?
            } else {
                attn.forward(&qkv, k, None)?
            };
            outputs.push(out.narrow(1, 0, h)?.narrow(2, 0, w)?);
        }
        let attention = Tensor::cat(&outputs, 3)?.reshape((b, l, self.channels))?;
        self.common.combine(&attention, &conv, residual)
    }
}

/// `torch.roll(x, shifts=(dy, dx), dims=(1, 2))`.
fn roll2(x: &Tensor, dy: i32, dx: i32) -> Result<Tensor> {
    Ok(x.roll(dy, 1)?.roll(dx, 2)?)
}
