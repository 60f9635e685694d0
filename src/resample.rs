//! Resampling whole images to an exact size with a Lanczos-3 filter (the `image` crate's
//! separable resize in f32), for output scales other than a model's own.

use candle_core::{DType, Tensor};
use image::imageops::FilterType;
use image::{ImageBuffer, Rgb};

use crate::error::{Error, Result};

/// Resizes a (1, 3, h, w) image to (1, 3, height, width), clamped to [0, 1], on the image's
/// device (the resampling itself runs on the CPU).
pub fn resize_rgb_tensor(image: &Tensor, width: usize, height: usize) -> Result<Tensor> {
    let (n, c, h, w) = image.dims4()?;
    if n != 1 || c != 3 {
        return Err(Error::option(
            "image",
            format!(
                "expected one RGB image (1, 3, h, w), got {:?}",
                image.dims()
            ),
        ));
    }
    if width == 0 || height == 0 {
        return Err(Error::option(
            "size",
            "the target size must be at least 1x1",
        ));
    }
    let data = image
        .get(0)?
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let buffer: ImageBuffer<Rgb<f32>, Vec<f32>> =
        ImageBuffer::from_raw(w as u32, h as u32, data)
            .ok_or_else(|| Error::option("image", format!("{w}x{h} does not match its data")))?;
    let resized =
        image::imageops::resize(&buffer, width as u32, height as u32, FilterType::Lanczos3);
    let out = Tensor::from_vec(
        resized.into_raw(),
        (height, width, 3),
        &candle_core::Device::Cpu,
    )?
    .permute((2, 0, 1))?
    .unsqueeze(0)?
    .clamp(0f32, 1f32)?
    .to_device(image.device())?;
    Ok(out)
}
