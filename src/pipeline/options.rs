//! What a run of the upscaler is asked to do, with diffusers' defaults.

use candle_core::{DType, Device};
use diffsr_schedulers::SchedulerKind;

use crate::color_fix::ColorFix;
use crate::error::{Error, Result};
use crate::models::vae::VaeTiling;
use crate::scale_plan::TargetSize;

/// How the models are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// dtype of the UNet and the text encoder; the VAE always runs in f32 because it overflows
    /// in f16 (diffusers' `force_upcast`).
    pub dtype: DType,
    /// How large pictures are cut into tiles (when `max_memory` is `None`).
    pub tiling: TilingOptions,
    /// A memory budget in bytes from which each image's tiles are chosen (see
    /// [`crate::pipeline::plan_memory`]); `None` uses `tiling` as given.
    pub max_memory: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            tiling: TilingOptions::default(),
            max_memory: None,
        }
    }
}

/// Tiled denoising and decoding of latents larger than a tile. A latent that fits in one
/// tile runs untiled, exactly as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilingOptions {
    /// Latent tile edge for the UNet (default 128, the x4 model's trained size).
    pub latent_tile: usize,
    /// Overlap of neighbouring UNet tiles, in latent pixels.
    pub latent_overlap: usize,
    /// UNet tiles denoised together (each is doubled under guidance).
    pub unet_batch: usize,
    /// The VAE decode's tiles.
    pub vae: VaeTiling,
}

impl Default for TilingOptions {
    fn default() -> Self {
        Self {
            latent_tile: 128,
            latent_overlap: 32,
            unet_batch: 1,
            vae: VaeTiling::default(),
        }
    }
}

/// One upscale: the reference's `__call__` arguments.
#[derive(Debug, Clone)]
pub struct UpscaleOptions {
    pub prompt: String,
    /// diffusers' default is no negative prompt, which encodes as "".
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance is on when this is above 1.
    pub guidance_scale: f64,
    /// Noise added to the low-resolution image, 0..=max_noise_level (350 for the x4 model).
    pub noise_level: u32,
    /// DDIM's η; only `ddim` accepts a non-zero value.
    pub eta: f64,
    /// The solver; `None` uses the model's own `scheduler/scheduler_config.json` class.
    pub scheduler: Option<SchedulerKind>,
    /// Seed of the torch-compatible CPU generator, as `torch.Generator("cpu").manual_seed`.
    pub seed: u64,
    /// Output size as a factor of the input's; `None` is the model's own factor. Another
    /// factor is reached by a [`crate::scale_plan::PlannedUpscaler`] (one or two passes, then
    /// one Lanczos resample).
    pub scale: Option<f64>,
    /// An exact output size or long side instead of a factor (wins over `scale`).
    pub target: Option<TargetSize>,
    /// Colour correction of the result against the input.
    pub color_fix: ColorFix,
}

impl Default for UpscaleOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 75,
            guidance_scale: 9.0,
            noise_level: 20,
            eta: 0.0,
            scheduler: None,
            seed: 0,
            scale: None,
            target: None,
            color_fix: ColorFix::None,
        }
    }
}

impl UpscaleOptions {
    /// Checks the options that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::option("steps", "must be at least 1"));
        }
        if !self.guidance_scale.is_finite() {
            return Err(Error::option(
                "guidance_scale",
                format!("must be a finite number, got {}", self.guidance_scale),
            ));
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(Error::option(
                "eta",
                format!("must be a finite number >= 0, got {}", self.eta),
            ));
        }
        match self.target {
            Some(TargetSize::Exact { width, height }) if width == 0 || height == 0 => {
                return Err(Error::option("target", "the size must be at least 1x1"));
            }
            Some(TargetSize::LongSide(0)) => {
                return Err(Error::option("long_side", "must be at least 1"));
            }
            _ => {}
        }
        if let Some(scale) = self.scale {
            if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SCALE) {
                return Err(Error::option(
                    "scale",
                    format!("must be a number above 0 and at most {MAX_SCALE}, got {scale}"),
                ));
            }
        }
        Ok(())
    }
}

/// The largest output factor accepted.
pub const MAX_SCALE: f64 = 16.0;

/// Reported after every denoising step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// Steps done so far (1-based after the step).
    pub step: usize,
    pub total: usize,
    /// The timestep just denoised.
    pub timestep: f64,
}
