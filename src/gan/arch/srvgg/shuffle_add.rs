//! The compact GAN's output stage, `pixel_shuffle(last, r) + interpolate(x, scale=r,
//! mode='nearest')` (Real-ESRGAN's `srvgg_arch.py`), as one pass on the CPU in f32: the
//! three tensor ops (a permuting copy, an upsampling copy, an add) each move the whole
//! r²-times-larger output through memory.

use candle_core::{DType, Device, Tensor};

use crate::models::layers::cpu_slice::f32_slice;
use crate::Result;

/// out[b, c, r·y + i, r·x + j] = last[b, r²·c + r·i + j, y, x] + x[b, c, y, x], for `last`
/// (B, C·r², H, W) and `x` (B, C, H, W).
pub fn pixel_shuffle_add_nearest(last: &Tensor, x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, cl, h, w) = last.dims4()?;
    let (bx, c, hx, wx) = x.dims4()?;
    let fast = last.device().is_cpu()
        && last.dtype() == DType::F32
        && x.dtype() == DType::F32
        && (bx, hx, wx) == (b, h, w)
        && cl == c * r * r
        && r > 0;
    if !fast {
        let out = candle_nn::ops::pixel_shuffle(last, r)?;
        let base = x.upsample_nearest2d(hx * r, wx * r)?;
        return Ok((out + base)?);
    }
    let (last, x) = (last.contiguous()?, x.contiguous()?);
    let (ow, plane) = (w * r, h * w);
    let mut out = vec![0f32; b * c * plane * r * r];
    {
        let (ls, ll) = last.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (lv, xv) = (f32_slice(&ls, ll)?, f32_slice(&xs, xl)?);
        // One output row (b, c, r·y + i) per chunk: its r sub-pixel planes j interleave.
        for (row_idx, row) in out.chunks_exact_mut(ow).enumerate() {
            let (bc, oy) = (row_idx / (h * r), row_idx % (h * r));
            let (y, i) = (oy / r, oy % r);
            let base = &xv[bc * plane + y * w..bc * plane + (y + 1) * w];
            for j in 0..r {
                let sub = (bc * r * r + r * i + j) * plane + y * w;
                let src = &lv[sub..sub + w];
                for (xx, (&s, &v)) in src.iter().zip(base).enumerate() {
                    row[r * xx + j] = s + v;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, c, h * r, w * r), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_shuffle_upsample_add() -> Result<()> {
        let dev = Device::Cpu;
        for (b, c, h, w, r) in [(1, 3, 5, 7, 4), (2, 1, 3, 2, 2), (1, 4, 1, 1, 3)] {
            let last = Tensor::randn(0f32, 1.0, (b, c * r * r, h, w), &dev)?;
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
            let want =
                (candle_nn::ops::pixel_shuffle(&last, r)? + x.upsample_nearest2d(h * r, w * r)?)?;
            let got = pixel_shuffle_add_nearest(&last, &x, r)?;
            assert_eq!(got.dims(), want.dims());
            let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(d, 0.0, "{b} {c} {h} {w} {r}");
            // f64 takes the tensor ops.
            let got = pixel_shuffle_add_nearest(
                &last.to_dtype(DType::F64)?,
                &x.to_dtype(DType::F64)?,
                r,
            )?;
            assert_eq!(got.dims(), want.dims());
        }
        Ok(())
    }
}
