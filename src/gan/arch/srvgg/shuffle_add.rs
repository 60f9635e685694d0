//! The compact GAN's output stage, `pixel_shuffle(last, r) + interpolate(x, scale=r,
//! mode='nearest')` (Real-ESRGAN's `srvgg_arch.py`): one pass on the CPU in f32
//! ([`diffsr_kernels::pixel_shuffle`]), candle's three ops elsewhere.

use candle_core::Tensor;
use diffsr_kernels::pixel_shuffle::{self, ShuffleShape};

use crate::models::layers::cpu_dispatch::on_cpu_f32;
use crate::Result;

/// out[b, c, r·y + i, r·x + j] = last[b, r²·c + r·i + j, y, x] + x[b, c, y, x], for `last`
/// (B, C·r², H, W) and `x` (B, C, H, W).
pub fn pixel_shuffle_add_nearest(last: &Tensor, x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, cl, h, w) = last.dims4()?;
    let (bx, c, hx, wx) = x.dims4()?;
    if (bx, hx, wx) == (b, h, w) && cl == c * r * r && r > 0 {
        let shape = ShuffleShape {
            batch: b,
            channels: c,
            height: h,
            width: w,
            r,
        };
        let fused = on_cpu_f32([last, x], [], (b, c, h * r, w * r), |[last, x], []| {
            pixel_shuffle::pixel_shuffle_add_nearest(last, x, &shape)
        })?;
        if let Some(out) = fused {
            return Ok(out);
        }
    }
    let out = candle_nn::ops::pixel_shuffle(last, r)?;
    let base = x.upsample_nearest2d(hx * r, wx * r)?;
    Ok((out + base)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
