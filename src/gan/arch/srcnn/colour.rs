//! The colour conversions of the common SRCNN port (yjn870/SRCNN-pytorch `utils.py`:
//! `convert_rgb_to_ycbcr`, `convert_ycbcr_to_rgb`; ITU-R BT.601 with studio-swing Y in
//! 16–235, written for 0–255 values), rescaled to diffsr's 0–1 values: every channel in and out
//! divided by 255. Each conversion is an affine map of the channels, run as a 1×1 convolution.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::models::layers::conv::Conv2d;

/// RGB → YCbCr: rows Y, Cb, Cr of the port's coefficients (/256), offsets 16, 128, 128 (/255).
const RGB_TO_YCBCR: [[f64; 3]; 3] = [
    [64.738, 129.057, 25.064],
    [-37.945, -74.494, 112.439],
    [112.439, -94.154, -18.285],
];
const YCBCR_OFFSET: [f64; 3] = [16.0, 128.0, 128.0];

/// YCbCr → RGB: the port's coefficients (/256) and offsets (/255).
const YCBCR_TO_RGB: [[f64; 3]; 3] = [
    [298.082, 0.0, 408.583],
    [298.082, -100.291, -208.120],
    [298.082, 516.412, 0.0],
];
const RGB_OFFSET: [f64; 3] = [-222.921, 135.576, -276.836];

fn affine(m: &[[f64; 3]; 3], offset: &[f64; 3], dtype: DType, device: &Device) -> Result<Conv2d> {
    let weight: Vec<f32> = m.iter().flatten().map(|&v| (v / 256.0) as f32).collect();
    let bias: Vec<f32> = offset.iter().map(|&v| (v / 255.0) as f32).collect();
    let weight = Tensor::from_vec(weight, (3, 3, 1, 1), device)?.to_dtype(dtype)?;
    let bias = Tensor::from_vec(bias, 3, device)?.to_dtype(dtype)?;
    Ok(Conv2d::new(weight, Some(bias), Default::default()))
}

/// (B, 3, H, W) RGB → YCbCr, both in 0–1.
pub(super) fn rgb_to_ycbcr(dtype: DType, device: &Device) -> Result<Conv2d> {
    affine(&RGB_TO_YCBCR, &YCBCR_OFFSET, dtype, device)
}

/// (B, 3, H, W) YCbCr → RGB, both in 0–1.
pub(super) fn ycbcr_to_rgb(dtype: DType, device: &Device) -> Result<Conv2d> {
    affine(&YCBCR_TO_RGB, &RGB_OFFSET, dtype, device)
}

#[cfg(test)]
mod tests {
    use candle_nn::Module;

    use super::*;

    #[test]
    fn white_is_y_234_and_the_round_trip_is_nearly_identity() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[1f32, 0.2, 0.5, 0.0, 0.9, 0.3], &dev)?.reshape((1, 3, 1, 2))?;
        let ycc = rgb_to_ycbcr(DType::F32, &dev)?.forward(&x)?;
        let white = Tensor::ones((1, 3, 1, 1), DType::F32, &dev)?;
        let y = rgb_to_ycbcr(DType::F32, &dev)?
            .forward(&white)?
            .flatten_all()?;
        let y = y.to_vec1::<f32>()?;
        // The port's coefficients sum to 218.859 / 256: white lands at 234, not BT.601's 235.
        assert!((y[0] * 255.0 - 234.0).abs() < 0.01, "{y:?}");
        let back = ycbcr_to_rgb(DType::F32, &dev)?.forward(&ycc)?;
        let d = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        // The port's two matrices are inverses to about 3 digits.
        assert!(d < 5e-3, "{d}");
        Ok(())
    }
}
