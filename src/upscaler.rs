//! The one interface both engines implement, so the CLI and batch runs treat the diffusion
//! upscaler and the GAN path alike: an 8-bit RGB image in, a float image out, progress after
//! each unit of work (a denoising step, or a tile), cancellable between units.

use std::ops::ControlFlow;

use candle_core::Tensor;

use crate::error::Result;
use crate::pipeline::{StepProgress, UpscaleOptions};

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

    /// What a `width` × `height` input will cost in memory (tiles, estimated peak), checked
    /// against the budget: an error when it cannot fit. `None` when there is nothing to say.
    fn memory_note(
        &self,
        _width: usize,
        _height: usize,
        _options: &UpscaleOptions,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    /// Upscales an 8-bit RGB image (row-major, 3 bytes a pixel) by the model's own factor.
    /// Returns (1, 3, H, W) in [0, 1]. `on_step` runs after each unit of work; `Break`
    /// cancels with [`crate::Error::Cancelled`].
    fn upscale_rgb8(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        options: &UpscaleOptions,
        on_step: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<Tensor>;
}
