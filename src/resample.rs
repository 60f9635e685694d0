//! Resampling whole images to an exact size with a Lanczos-3 filter (the `image` crate's
//! separable resize in f32), for output scales other than a model's own.

use image::imageops::FilterType;
use image::{ImageBuffer, Rgb};

use crate::error::{Error, Result};
use crate::image_io::RgbF32;

/// Resizes an image to `width` × `height`, clamped to [0, 1].
pub fn resize_rgb(image: &RgbF32, width: usize, height: usize) -> Result<RgbF32> {
    if width == 0 || height == 0 {
        return Err(Error::option(
            "size",
            "the target size must be at least 1x1",
        ));
    }
    let (w, h) = image.size();
    let buffer: ImageBuffer<Rgb<f32>, &[f32]> =
        ImageBuffer::from_raw(w as u32, h as u32, image.data.as_slice())
            .ok_or_else(|| Error::option("image", format!("{w}x{h} does not match its data")))?;
    let resized =
        image::imageops::resize(&buffer, width as u32, height as u32, FilterType::Lanczos3);
    let mut data = resized.into_raw();
    for v in &mut data {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(RgbF32 {
        data,
        width,
        height,
    })
}
