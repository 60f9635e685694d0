//! Writing an upscaler result for the input it came from: the alpha channel resampled and
//! re-attached, the input's ICC profile and bit depth kept, the generation parameters in PNG
//! text chunks. Shared by `diffsr upscale` and the batch runner so both write the same file.

use std::path::Path;

use super::{
    resize_alpha, save_image, GenerationInfo, LoadedImage, OutputFormat, RgbF32, SaveOptions,
};
use crate::error::Result;

/// What [`save_result`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenImage {
    pub width: usize,
    pub height: usize,
    /// The input had an alpha channel the output format cannot hold (JPEG), so it was dropped;
    /// the caller decides how to tell the user.
    pub alpha_dropped: bool,
}

/// Writes an engine's result `rgb` for `input` to `output`, atomically (temporary file, then
/// rename). `format` `None` picks it from the extension.
pub fn save_result(
    output: &Path,
    input: &LoadedImage,
    rgb: &RgbF32,
    format: Option<OutputFormat>,
    quality: u8,
    metadata: GenerationInfo,
) -> Result<WrittenImage> {
    let (w, h) = input.size();
    let alpha = match &input.alpha {
        Some(a) => Some(resize_alpha(a, w, h, rgb.width, rgb.height)?),
        None => None,
    };
    let format = match format {
        Some(f) => f,
        None => OutputFormat::from_path(output)?,
    };
    let options = SaveOptions {
        format: Some(format),
        quality,
        bit_depth: input.bit_depth,
        icc_profile: input.icc_profile.clone(),
        metadata: Some(metadata),
    };
    save_image(output, rgb, alpha.as_deref(), &options)?;
    Ok(WrittenImage {
        width: rgb.width,
        height: rgb.height,
        alpha_dropped: alpha.is_some() && !format.has_alpha(),
    })
}
