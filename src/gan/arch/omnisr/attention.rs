//! OmniSR's window self-attention inside its pre-norm residual (spandrel 0.4.2
//! `architectures/OmniSR/__arch/OSA.py`: `PreNormResidual(LayerNorm, Attention)` between the
//! `Rearrange`s of `OSA_Block`): tokens of each w×w window (contiguous blocks, or the sparse
//! grid), layer norm, one qkv projection, 4 heads of softmax(q kᵀ / √d + relative position
//! bias) v, the output projection and the residual. All windows and heads run as one batched
//! matmul; the bias table is gathered into (heads, w², w²) once at load.

use candle_core::{DType, Tensor};
use candle_nn::Module;

use super::config::HEADS;
use super::ops::TokenLayerNorm;
use super::partition::{from_windows, to_windows, Layout};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::linear::Linear;
use crate::models::layers::softmax::softmax_last_dim;

pub(super) struct WindowAttention {
    norm: TokenLayerNorm,
    to_qkv: Linear,
    to_out: Linear,
    /// (heads, w², w²): `rel_pos_bias(rel_pos_indices)` rearranged `i j h -> h i j`.
    bias: Option<Tensor>,
    dim: usize,
    window: usize,
    layout: Layout,
}

impl WindowAttention {
    /// `prefix` is the `PreNormResidual` (`….layer.2` or `….layer.8`).
    pub(super) fn new(
        w: &Weights,
        prefix: &str,
        dim: usize,
        window: usize,
        pe: bool,
        layout: Layout,
    ) -> Result<Self> {
        let linear = |name: &str, out: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.get(&format!("{prefix}.fn.{name}"), &[out, dim])?,
                None,
            ))
        };
        let bias = if pe {
            let rows = (2 * window - 1) * (2 * window - 1);
            let table = w.get(&format!("{prefix}.fn.rel_pos_bias.weight"), &[rows, HEADS])?;
            Some(gather_bias(&table, window)?)
        } else {
            None
        };
        Ok(Self {
            norm: TokenLayerNorm::new(w, &format!("{prefix}.norm"), dim)?,
            to_qkv: linear("to_qkv.weight", 3 * dim)?,
            to_out: linear("to_out.0.weight", dim)?,
            bias,
            dim,
            window,
            layout,
        })
    }

    /// x (B, C, H, W), H and W multiples of the window → x + attention(norm(x)), NCHW.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims4()?;
        let tokens = to_windows(x, self.window, self.layout)?;
        let (n, l, c) = tokens.dims3()?;
        let qkv = self.to_qkv.forward(&self.norm.forward(&tokens)?)?;
        let d = c / HEADS;
        // "b n (h d) -> b h n d" for each of q, k, v.
        let heads = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * self.dim, self.dim)?
                .reshape((n, l, HEADS, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (heads(0)? * (d as f64).powf(-0.5))?;
        let (k, v) = (heads(1)?, heads(2)?);
        let mut sim = q.matmul(&k.t()?)?;
        if let Some(bias) = &self.bias {
            sim = sim.broadcast_add(bias)?;
        }
        let out = softmax_last_dim(&sim)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((n, l, c))?;
        let out = self.to_out.forward_add(&out, &tokens)?;
        from_windows(&out, dims, self.window, self.layout)
    }
}

/// The bias of query token i against key token j, for each head: tokens are numbered
/// row-major in the window, and the table row of offset (dy, dx) is
/// (dy + w − 1)·(2w − 1) + (dx + w − 1).
fn gather_bias(table: &Tensor, w: usize) -> Result<Tensor> {
    let n = w * w;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let (yi, xi, yj, xj) = (i / w, i % w, j / w, j % w);
            let dy = yi + w - 1 - yj;
            let dx = xi + w - 1 - xj;
            index.push((dy * (2 * w - 1) + dx) as u32);
        }
    }
    let index = Tensor::from_vec(index, n * n, table.device())?;
    // (w⁴, heads) → (heads, w², w²)
    let gathered = table.index_select(&index, 0)?.to_dtype(DType::F32)?;
    Ok(gathered
        .t()?
        .reshape((HEADS, n, n))?
        .to_dtype(table.dtype())?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn the_bias_of_a_token_against_itself_is_the_centre_row() -> Result<()> {
        let w = 3;
        let rows = (2 * w - 1) * (2 * w - 1);
        let table =
            Tensor::arange(0f32, (rows * HEADS) as f32, &Device::Cpu)?.reshape((rows, HEADS))?;
        let bias = gather_bias(&table, w)?;
        assert_eq!(bias.dims(), [HEADS, 9, 9]);
        // Offset (0, 0) is row (w − 1)(2w − 1) + (w − 1) = 12; head 1 reads column 1.
        let centre = 12 * HEADS + 1;
        assert_eq!(
            bias.get(1)?.get(4)?.get(4)?.to_scalar::<f32>()?,
            centre as f32
        );
        // Query (0, 0) against key (2, 2): offset (−2, −2), row 0.
        assert_eq!(bias.get(0)?.get(0)?.get(8)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
