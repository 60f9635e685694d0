//! The one interface both engines implement, so the CLI and batch runs treat the diffusion
//! upscaler and the GAN path alike: an 8-bit RGB image in, a float image out, progress after
//! each unit of work (a denoising step, or a tile), cancellable between units.

use std::ops::ControlFlow;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::pipeline::{StepProgress, UpscaleOptions};
use crate::resample::resize_rgb_tensor;

/// Which engine produced an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Stable Diffusion's x4 latent-diffusion upscaler.
    Diffusion,
    /// A Real-ESRGAN-family network.
    Gan,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Diffusion => "diffusion",
            Self::Gan => "gan",
        }
    }
}

pub trait Upscaler {
    fn engine(&self) -> Engine;

    /// The model's own factor between input and output size.
    fn scale(&self) -> usize;

    /// A one-line description of the loaded model, for logs.
    fn describe(&self) -> String;

    /// Upscales an 8-bit RGB image (row-major, 3 bytes a pixel) by the model's own factor.
    /// Returns (1, 3, H, W) in [0, 1]. `on_step` runs after each unit of work; `Break`
    /// cancels with [`Error::Cancelled`].
    fn upscale_rgb8(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        options: &UpscaleOptions,
        on_step: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<Tensor>;
}

/// The output size for an input of `width` × `height` at `scale` (rounded to whole pixels).
pub fn output_size(width: usize, height: usize, scale: f64) -> Result<(usize, usize)> {
    let w = (width as f64 * scale).round();
    let h = (height as f64 * scale).round();
    if !(w >= 1.0 && h >= 1.0) {
        return Err(Error::option(
            "scale",
            format!("{scale} turns {width}x{height} into an empty image"),
        ));
    }
    Ok((w as usize, h as usize))
}

/// Upscales with `upscaler`, then, when `options.scale` asks for another factor than the
/// model's, resamples the result to exactly `round(size × scale)` with a Lanczos-3 filter
/// (one high-quality resample of the whole image, not a mosaic of tiles).
pub fn upscale_to_scale(
    upscaler: &dyn Upscaler,
    rgb: &[u8],
    width: usize,
    height: usize,
    options: &UpscaleOptions,
    on_step: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
) -> Result<Tensor> {
    let result = upscaler.upscale_rgb8(rgb, width, height, options, on_step)?;
    let Some(scale) = options.scale else {
        return Ok(result);
    };
    let (tw, th) = output_size(width, height, scale)?;
    let (_, _, h, w) = result.dims4()?;
    if (w, h) == (tw, th) {
        return Ok(result);
    }
    resize_rgb_tensor(&result, tw, th)
}
