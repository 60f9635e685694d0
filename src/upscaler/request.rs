//! What an upscale is asked to do, the same for every engine: the image, the output size, an
//! optional colour correction, the memory budget, the primary engine's per-call settings, and a
//! progress callback that can cancel.

use std::ops::ControlFlow;

use super::{EngineSettings, OutputSize};
use crate::color_fix::ColorFix;
use crate::error::Result;
use crate::image_io::Rgb8;

/// Reported after every unit of work: a denoising step, or a GAN tile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// Units done so far (1-based after the unit).
    pub step: usize,
    pub total: usize,
    /// The timestep just denoised (0 for a GAN tile).
    pub timestep: f64,
}

/// The progress callback: runs after each unit of work; `Break` cancels the run with
/// [`crate::Error::Cancelled`] at that boundary.
pub type OnStep<'a> = &'a mut dyn FnMut(StepProgress) -> ControlFlow<()>;

/// What to make of an image, apart from the image and the callback: plain data, so a batch
/// plans one per job before any model loads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpscaleParams {
    /// The output size; [`OutputSize::native`] is the model's own factor.
    pub size: OutputSize,
    /// Colour correction of the result against the input.
    pub color_fix: ColorFix,
    /// A working-memory budget in bytes for this call, from which tiles are chosen; `None`:
    /// the engine's own (given when it was built).
    pub max_memory: Option<u64>,
    /// Settings for the primary engine in place of those it was built with; `None`: its own.
    pub settings: Option<EngineSettings>,
    /// Whether the result may go out in rows ([`super::Upscaler::upscale_rows`]) instead of
    /// being held whole.
    pub stream: Streaming,
}

/// Whether a result may be streamed: handed on in rows as they are finished, so the whole
/// output is never held (an output larger than the memory budget). Only one engine pass at
/// the model's own factor with no colour fix can stream; the GAN engine streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Streaming {
    /// The result is held whole, as [`super::Upscaler::upscale`] returns it.
    #[default]
    Off,
    /// The caller takes rows: stream when the whole result does not fit the budget.
    WhenNeeded,
    /// Always stream where the run can (tests; a caller that wants the least memory).
    Always,
}

/// Receives a streamed result's rows, top to bottom: each `width × 3` interleaved RGB values
/// in [0, 1].
pub type OnRow<'a> = &'a mut dyn FnMut(&[f32]) -> Result<()>;

impl UpscaleParams {
    /// Checks what does not depend on the model or the input.
    pub fn validate(&self) -> Result<()> {
        if let Some(EngineSettings::Diffusion(d)) = &self.settings {
            d.validate()?;
        }
        self.size.validate()
    }

    /// Whether the engine's own output is the answer: the model's factor, no colour fix.
    pub fn is_single_pass(&self) -> bool {
        self.size.is_native() && self.color_fix == ColorFix::None
    }
}

/// One upscale request.
pub struct UpscaleRequest<'a> {
    pub image: &'a Rgb8,
    pub params: &'a UpscaleParams,
    pub on_step: OnStep<'a>,
}

impl<'a> UpscaleRequest<'a> {
    pub fn new(image: &'a Rgb8, params: &'a UpscaleParams, on_step: OnStep<'a>) -> Self {
        Self {
            image,
            params,
            on_step,
        }
    }
}
