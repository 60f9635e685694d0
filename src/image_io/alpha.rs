//! The alpha channel's own path: the pipeline upscales RGB only, so alpha is resampled to the
//! output size with Lanczos3 and re-attached.

use image::imageops::{resize, FilterType};
use image::{ImageBuffer, Luma};

use crate::error::{Error, Result};

/// Resamples a `width` × `height` alpha plane (values in [0, 1]) to `out_width` × `out_height`
/// with Lanczos3, clamped to [0, 1].
pub fn resize_alpha(
    alpha: &[f32],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
) -> Result<Vec<f32>> {
    let plane =
        ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(width as u32, height as u32, alpha.to_vec())
            .ok_or_else(|| {
            Error::option(
                "alpha",
                format!(
                    "{} values do not make a {width}x{height} plane",
                    alpha.len()
                ),
            )
        })?;
    let resized = resize(
        &plane,
        out_width as u32,
        out_height as u32,
        FilterType::Lanczos3,
    );
    Ok(resized
        .into_raw()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect())
}
