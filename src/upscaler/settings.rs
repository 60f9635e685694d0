//! Each engine family's own settings, typed. An engine is built with its settings; a request
//! may carry other settings for its primary engine ([`EngineSettings`]), which is how a batch
//! gives every image its own prompt and seed. The GAN family has no per-call settings: its
//! tile, pre-padding and denoise strength are given when it is built
//! ([`crate::gan::GanOptions`], [`crate::gan::GanModel::interpolate`]).

use diffsr_schedulers::SchedulerKind;

use super::Engine;
use crate::error::{Error, Result};

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
    /// Checks the settings that do not depend on the model.
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
