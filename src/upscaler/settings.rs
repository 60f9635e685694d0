//! Each engine family's own settings, typed. An engine is built with its settings; a request
//! may carry other settings for its primary engine ([`EngineSettings`]), which is how a batch
//! gives every image its own prompt and seed. The GAN family has no per-call settings: its
//! tile, pre-padding and denoise strength are given when it is built
//! ([`crate::gan::GanOptions`], [`crate::gan::GanModel::interpolate`]).

use diffsr_schedulers::SchedulerKind;

use super::Engine;
use crate::error::{Error, Result};

/// The most denoising steps accepted: the x4 upscaler's `num_train_timesteps` (every solver
/// refuses more steps than training timesteps; a model with fewer is checked once loaded).
pub const MAX_STEPS: usize = 1000;

/// The largest classifier-free guidance scale accepted (diffusers' x4 default is 9; far
/// beyond this the guided prediction saturates and the result is noise).
pub const MAX_GUIDANCE: f64 = 100.0;

/// A latent-diffusion upscale: the reference's `__call__` arguments (diffusers'
/// `StableDiffusionUpscalePipeline`), with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionSettings {
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
}

impl Default for DiffusionSettings {
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
        }
    }
}

impl DiffusionSettings {
    /// Checks the settings that do not depend on the model: `steps` in 1..=[`MAX_STEPS`],
    /// `guidance_scale` finite and at most [`MAX_GUIDANCE`], `eta` in 0..=1 (diffusers
    /// documents DDIM's η in [0, 1]). The model's own limits (`max_noise_level`, its
    /// solver's step count) are checked once it is loaded (`Upscaler::check_params`).
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(Error::option(
                "steps",
                format!("is {}; expected 1..={MAX_STEPS}", self.steps),
            ));
        }
        if !(self.guidance_scale.is_finite() && self.guidance_scale <= MAX_GUIDANCE) {
            return Err(Error::option(
                "guidance_scale",
                format!(
                    "is {}; expected a finite number up to {MAX_GUIDANCE} (1 or less turns \
                     guidance off)",
                    super::size::show(self.guidance_scale)
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::option(
                "eta",
                format!(
                    "is {}; expected a number from 0 to 1 (DDIM's η)",
                    super::size::show(self.eta)
                ),
            ));
        }
        Ok(())
    }

    /// Whether classifier-free guidance runs (the UNet sees twice the batch).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// Per-call settings for a request's primary engine, one variant per engine family that has
/// any. An engine given another family's settings refuses the request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineSettings {
    Diffusion(DiffusionSettings),
}

impl EngineSettings {
    /// The engine family these settings are for.
    pub fn engine(&self) -> Engine {
        match self {
            Self::Diffusion(_) => Engine::Diffusion,
        }
    }

    /// The error of `engine` given settings of another family.
    pub(crate) fn mismatch(&self, engine: Engine) -> Error {
        Error::option(
            "settings",
            format!(
                "{} settings were given to the {} engine",
                self.engine().name(),
                engine.name()
            ),
        )
    }
}
