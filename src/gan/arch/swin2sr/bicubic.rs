//! torch's `F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False)` (aten
//! `upsample_bicubic2d`), which Swin2SR's `pixelshuffle_aux` tail applies to its input:
//! per output pixel the source position (o + 0.5) · in/out − 0.5 (not clamped), four taps
//! around its floor with Keys' cubic (A = −0.75), indices clamped into the image. Separable:
//! columns, then rows, as tensor ops (any device and dtype).

use candle_core::Tensor;

use crate::error::Result;

/// Keys' cubic convolution weights of the four taps at floor − 1 … floor + 2 for fraction `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resamples axis `dim` of `x` from its length to `out`.
fn resample_axis(x: &Tensor, dim: usize, out: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let scale = len as f64 / out as f64;
    let last = (len as i64 - 1).max(0);
    let mut taps: [Vec<u32>; 4] = std::array::from_fn(|_| Vec::with_capacity(out));
    let mut weights: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(out));
    for o in 0..out {
        let src = (o as f64 + 0.5) * scale - 0.5;
        let floor = src.floor();
        let w = cubic_weights(src - floor);
        for k in 0..4 {
            taps[k].push((floor as i64 - 1 + k as i64).clamp(0, last) as u32);
            weights[k].push(w[k]);
        }
    }
    let mut shape = vec![1usize; x.rank()];
    shape[dim] = out;
    let mut acc: Option<Tensor> = None;
    for (t, w) in taps.into_iter().zip(weights) {
        let index = Tensor::from_vec(t, out, x.device())?;
        let weight = Tensor::from_vec(w, shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
        let term = x.index_select(&index, dim)?.broadcast_mul(&weight)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("no taps".into()).into())
}

/// x (B, C, H, W) → (B, C, out_h, out_w).
pub fn resize_bicubic(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    resample_axis(&resample_axis(x, 3, out_w)?, 2, out_h)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn weights_sum_to_one_and_constants_stay() -> Result<()> {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f64 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        let x = Tensor::full(0.3f64, (1, 2, 5, 7), &Device::Cpu)?;
        let y = resize_bicubic(&x, 9, 20)?;
        assert_eq!(y.dims(), [1, 2, 9, 20]);
        let d = (y - 0.3)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12);
        // torch: F.interpolate(arange(4.).view(1,1,1,4), size=(1,8), mode="bicubic")
        // in float64, rounded.
        let x = Tensor::arange(0f64, 4.0, &Device::Cpu)?.reshape((1, 1, 1, 4))?;
        let y: Vec<f64> = resize_bicubic(&x, 1, 8)?.flatten_all()?.to_vec1()?;
        let want = [
            -0.1055, 0.1914, 0.6680, 1.2969, 1.7031, 2.3320, 2.8086, 3.1055,
        ];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{y:?}");
        }
        assert_eq!(
            resize_bicubic(&x.to_dtype(DType::F32)?, 2, 3)?.dims(),
            [1, 1, 2, 3]
        );
        Ok(())
    }
}
