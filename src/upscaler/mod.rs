//! The one interface every engine implements, so the CLI, batch runs and library users treat
//! the diffusion upscaler and the GAN path alike: an 8-bit RGB image in
//! ([`crate::image_io::Rgb8`]), a float image out ([`RgbF32`]), progress after each unit of
//! work (a denoising step, or a tile), cancellable between units. Each engine keeps its own typed settings ([`DiffusionSettings`],
//! [`crate::gan::GanOptions`]); the request ([`UpscaleRequest`]) is engine-neutral.
//!
//! This module depends on no engine: engines, [`crate::scale_plan`] and [`crate::engine`]
//! depend on it.

mod request;
mod settings;
mod size;

use crate::error::Result;
use crate::image_io::RgbF32;

pub use request::{OnRow, OnStep, StepProgress, Streaming, UpscaleParams, UpscaleRequest};
pub use settings::{DiffusionSettings, EngineSettings};
pub use size::{OutputSize, TargetSize, MAX_SCALE};

/// Which engine family produced an image.
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

/// An upscaling engine. `Send + Sync`: an engine is shared by reference, and runs its work in
/// its own thread pool when it has one.
/// A run's planned memory ([`Upscaler::memory_estimate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMemory {
    /// The plan's estimated peak, weights included.
    pub peak_bytes: u64,
    /// The budget the plan was made to fit.
    pub budget_bytes: u64,
    /// Tiles and estimate in one line, as `diffsr upscale` prints it.
    pub description: String,
}

pub trait Upscaler: Send + Sync {
    fn engine(&self) -> Engine;

    /// The model's own factor between input and output size.
    fn scale(&self) -> usize;

    /// A one-line description of the loaded model, for logs.
    fn describe(&self) -> String;

    /// The device the engine runs on (where colour correction of its results runs too).
    fn device(&self) -> &candle_core::Device;

    /// What a `width` × `height` input will cost in memory under `params`: the plan's
    /// estimated peak, the budget it was planned in and a one-line description (tiles,
    /// estimate), checked against the budget: an error when it cannot fit. `None` when there is
    /// nothing to plan.
    fn memory_estimate(
        &self,
        _width: usize,
        _height: usize,
        _params: &UpscaleParams,
    ) -> Result<Option<PlannedMemory>> {
        Ok(None)
    }

    /// [`Self::memory_estimate`]'s description, for logs.
    fn memory_note(
        &self,
        width: usize,
        height: usize,
        params: &UpscaleParams,
    ) -> Result<Option<String>> {
        Ok(self
            .memory_estimate(width, height, params)?
            .map(|e| e.description))
    }

    /// Checks `params` against the loaded model, without an image: what would fail for every
    /// image (a noise level above the model's, a step count its solver refuses, a tile too
    /// small for the network's overlap). A batch runs this once per distinct set of
    /// parameters before its first image. The default checks what needs no model
    /// ([`UpscaleParams::validate`]).
    fn check_params(&self, params: &UpscaleParams) -> Result<()> {
        params.validate()
    }

    /// Upscales `request.image` to `request.params.size`.
    ///
    /// With the model's own factor and no colour fix ([`UpscaleParams::is_single_pass`]) this
    /// is one pass of the model, whose output is the model's factor times the input as the
    /// model takes it (the diffusion model floors the input to a multiple of its factor).
    /// Otherwise the engine alone runs a [`crate::scale_plan::PlannedUpscaler`]
    /// (`ScalePlan::Auto`, no second-pass GAN) and the size is exact. Progress and
    /// cancellation go through `request.on_step`.
    fn upscale(&self, request: UpscaleRequest<'_>) -> Result<RgbF32>;

    /// Whether [`Self::upscale_rows`] would stream the result of a `width` × `height` input
    /// under `params` (`params.stream` allows it and the run asks for it) rather than hold it;
    /// an error when the budget cannot hold the run either way. The default: never.
    fn streams_output(&self, width: usize, height: usize, params: &UpscaleParams) -> Result<bool> {
        let _ = (width, height, params);
        Ok(false)
    }

    /// [`Self::upscale`], handing the result to `on_row` row by row, top to bottom, instead of
    /// returning it; returns its width and height. An engine that streams
    /// ([`Self::streams_output`]) never holds the whole result; the default upscales, then
    /// hands on the rows of the result.
    fn upscale_rows(
        &self,
        request: UpscaleRequest<'_>,
        on_row: OnRow<'_>,
    ) -> Result<(usize, usize)> {
        let result = self.upscale(request)?;
        for row in result.data.chunks_exact(result.width * 3) {
            on_row(row)?;
        }
        Ok(result.size())
    }
}
