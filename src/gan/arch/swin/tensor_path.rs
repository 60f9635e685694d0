//! Window attention in candle's tensor ops, step for step as the reference
//! (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`: `torch.roll`, `window_partition`,
//! `WindowAttention.forward`, `window_reverse`, `torch.roll` back), for the devices and dtypes
//! the CPU kernel does not take (CUDA, Metal, f16 / bf16, f64).

use candle_core::{Tensor, D};
use diffsr_kernels::window_attention::WindowShape;

use super::geometry::shift_mask;
use crate::error::Result;

/// The logit scale in tensor form.
pub(super) enum Scale<'a> {
    Scaled(f64),
    /// (1, heads, 1, 1) per-head scales of cosine attention.
    Cosine(&'a Tensor),
}

/// `torch.roll(x, shifts=(-s, -s), dims=(1, 2))` for `up` (the shift into windows), `+s` for
/// not `up` (back), on (B, H, W, C).
fn roll(x: &Tensor, s: usize, up: bool) -> Result<Tensor> {
    let mut x = x.clone();
    for dim in [1, 2] {
        let len = x.dim(dim)?;
        // Rolling by −s puts element s first; by +s, element len − s.
        let first = if up { s } else { len - s };
        x = Tensor::cat(
            &[x.narrow(dim, first, len - first)?, x.narrow(dim, 0, first)?],
            dim,
        )?;
    }
    Ok(x)
}

/// The reference's window attention for `qkv` (B, H·W, 3C) in image order → (B, H·W, C).
pub(super) fn attend(
    qkv: &Tensor,
    s: &WindowShape,
    scale: Scale<'_>,
    bias: &Tensor,
) -> Result<Tensor> {
    let &WindowShape {
        batch: b,
        height: h,
        width: w,
        heads,
        head_dim: d,
        window: ws,
        shift,
    } = s;
    let (c, n) = (s.channels(), s.tokens());
    let (down, across) = (h / ws, w / ws);
    let windows = down * across;
    let mut x = qkv.reshape((b, h, w, 3 * c))?;
    if shift > 0 {
        x = roll(&x, shift, true)?;
    }
    // window_partition, then (3, B·nW, heads, n, d).
    let x = x
        .reshape((b, down, ws, across, ws, 3 * c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * windows, n, 3, heads, d))?
        .permute((2, 0, 3, 1, 4))?;
    let part = |i: usize| -> Result<Tensor> { Ok(x.get(i)?.contiguous()?) };
    let (mut q, mut k, v) = (part(0)?, part(1)?, part(2)?);
    let scores = match scale {
        Scale::Scaled(f) => (q.matmul(&k.t()?)? * f)?,
        Scale::Cosine(per_head) => {
            // F.normalize: x / max(‖x‖, 1e-12).
            let normalise = |t: &Tensor| -> Result<Tensor> {
                let norm = t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
                Ok(t.broadcast_div(&norm)?)
            };
            q = normalise(&q)?;
            k = normalise(&k)?;
            q.matmul(&k.t()?)?.broadcast_mul(per_head)?
        }
    };
    let mut scores = scores.broadcast_add(&bias.unsqueeze(0)?)?;
    if shift > 0 {
        let mask = shift_mask(h, w, ws, shift);
        let mask =
            Tensor::from_vec(mask, (1, windows, 1, n, n), qkv.device())?.to_dtype(qkv.dtype())?;
        scores = scores
            .reshape((b, windows, heads, n, n))?
            .broadcast_add(&mask)?
            .reshape((b * windows, heads, n, n))?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
    // (B·nW, heads, n, d) → (B·nW, n, C) → window_reverse → (B, H, W, C).
    let out = probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, down, across, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, h, w, c))?;
    let out = if shift > 0 {
        roll(&out, shift, false)?
    } else {
        out
    };
    Ok(out.reshape((b, h * w, c))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn roll_is_torch_roll() -> Result<()> {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 4, 4, 1))?;
        let up = roll(&x, 1, true)?.flatten_all()?.to_vec1::<f32>()?;
        // torch.roll(x, (-1, -1), (1, 2)): out[i][j] = x[(i + 1) % 4][(j + 1) % 4].
        assert_eq!(&up[..5], [5.0, 6.0, 7.0, 4.0, 9.0]);
        let back = roll(&roll(&x, 1, true)?, 1, false)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        let f16 = roll(&x.to_dtype(DType::F16)?, 2, true)?;
        assert_eq!(f16.dims(), x.dims());
        Ok(())
    }
}
