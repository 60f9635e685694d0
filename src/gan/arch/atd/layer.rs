//! ATD's transformer layer and group (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py`
//! `ATDTransformerLayer`, `BasicBlock`, `ATDB`): from norm1(x) one qkv projection feeds the
//! (shifted) window attention and the category attention, the dictionary attention reads
//! norm1(x) and the dictionary; x + windows + dictionary + categories, then + ConvFFN(norm2),
//! then the dictionary update. A group runs its layers with its own dictionary (odd layers
//! shifted by half a window), then its residual conv plus the group's input.

use candle_core::Tensor;
use candle_nn::Module;

use super::category::CategoryAttention;
use super::detect::layer_prefix;
use super::dictionary::{linear_opt, DictionaryAttention, DictionaryUpdate};
use super::ffn::ConvFfn;
use super::AtdParams;
use crate::error::Result;
use crate::gan::arch::swin::layers::{linear, to_image, to_tokens, LayerNorm};
use crate::gan::arch::swin::{table_bias, LogitScale, ResiConv, WindowAttention};
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;

struct AtdLayer {
    norm1: LayerNorm,
    wqkv: Linear,
    attn_win: WindowAttention,
    win_proj: Linear,
    attn_atd: DictionaryAttention,
    attn_aca: CategoryAttention,
    norm2: LayerNorm,
    convffn: ConvFfn,
    /// None in a group's last layer.
    update: Option<DictionaryUpdate>,
    shift: usize,
}

impl AtdLayer {
    fn new(
        w: &Weights,
        p: &AtdParams,
        heads: usize,
        i: usize,
        j: usize,
        last: bool,
    ) -> Result<Self> {
        let prefix = layer_prefix(i, j);
        let c = p.embed_dim;
        let ws = p.window_size;
        let span = 2 * ws - 1;
        let table = w.get(
            &format!("{prefix}.attn_win.relative_position_bias_table"),
            &[span * span, heads],
        )?;
        let scale = ((c / heads.max(1)) as f64).powf(-0.5);
        Ok(Self {
            norm1: LayerNorm::new(w, &format!("{prefix}.norm1"), c)?,
            wqkv: linear_opt(w, &format!("{prefix}.wqkv"), c, 3 * c, p.qkv_bias)?,
            attn_win: WindowAttention::new(
                heads,
                ws,
                table_bias(&table, ws)?,
                LogitScale::Scaled(scale),
            )?,
            win_proj: linear(w, &format!("{prefix}.attn_win.proj"), c, c)?,
            attn_atd: DictionaryAttention::new(
                w,
                &format!("{prefix}.attn_atd"),
                c,
                p.num_tokens,
                p.reducted_dim,
                p.qkv_bias,
            )?,
            attn_aca: CategoryAttention::new(
                w,
                &format!("{prefix}.attn_aca"),
                c,
                heads,
                p.category_size,
                p.qkv_bias,
            )?,
            norm2: LayerNorm::new(w, &format!("{prefix}.norm2"), c)?,
            convffn: ConvFfn::new(
                w,
                &format!("{prefix}.convffn"),
                c,
                p.mlp_hidden,
                p.convffn_kernel_size,
            )?,
            update: if last {
                None
            } else {
                Some(DictionaryUpdate::new(w, &prefix, p.num_tokens)?)
            },
            shift: if j % 2 == 1 { ws / 2 } else { 0 },
        })
    }

    /// x (B, h·w, C), td (B, m, C) → (x, td).
    fn forward(&self, x: &Tensor, td: &Tensor, h: usize, w: usize) -> Result<(Tensor, Tensor)> {
        let xn = self.norm1.forward(x)?;
        let qkv = self.wqkv.forward(&xn)?;
        let (x_atd, sim) = self.attn_atd.forward(&xn, td)?;
        let x_aca = self.attn_aca.forward(&qkv, &sim)?;
        let windows = self.attn_win.attend(&qkv, h, w, self.shift)?;
        let x = self.win_proj.forward_add(&windows, x)?;
        let x = ((x + x_atd)? + x_aca)?;
        let x = self
            .convffn
            .forward_add(&self.norm2.forward(&x)?, &x, h, w)?;
        let td = match &self.update {
            Some(update) => update.forward(td, &sim, &x)?,
            None => td.clone(),
        };
        Ok((x, td))
    }
}

/// A residual group (ATDB).
pub(super) struct AtdGroup {
    /// The token dictionary (m, C).
    td: Tensor,
    layers: Vec<AtdLayer>,
    conv: ResiConv,
}

impl AtdGroup {
    pub(super) fn new(w: &Weights, p: &AtdParams, i: usize) -> Result<Self> {
        let (depth, heads) = match (p.depths.get(i), p.num_heads.get(i)) {
            (Some(&d), Some(&h)) => (d, h),
            _ => {
                return Err(candle_core::Error::Msg(format!("ATD has no group {i}")).into());
            }
        };
        let layers = (0..depth)
            .map(|j| AtdLayer::new(w, p, heads, i, j, j + 1 == depth))
            .collect::<Result<_>>()?;
        Ok(Self {
            td: w.get(
                &format!("layers.{i}.residual_group.td"),
                &[p.num_tokens, p.embed_dim],
            )?,
            layers,
            conv: ResiConv::new(
                w,
                &format!("layers.{i}.conv"),
                p.resi_connection,
                p.embed_dim,
            )?,
        })
    }

    /// x (B, h·w, C) tokens → conv(layers(x)) + x, the same shape.
    pub(super) fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let b = x.dim(0)?;
        let (m, c) = self.td.dims2()?;
        let mut td = self
            .td
            .unsqueeze(0)?
            .broadcast_as((b, m, c))?
            .contiguous()?;
        let mut y = x.clone();
        for layer in &self.layers {
            (y, td) = layer.forward(&y, &td, h, w)?;
        }
        let out = self
            .conv
            .forward_add(&to_image(&y, h, w)?, &to_image(x, h, w)?)?;
        to_tokens(&out)
    }
}
