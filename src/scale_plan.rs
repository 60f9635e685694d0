//! Any output size from one upscaler pass or two: the plan that reaches a requested factor
//! (1× to 16×), exact size (`--target WxH`) or long side (`--long-side N`). A factor within
//! the model's own is one pass; beyond it (8× from a ×4 model) a second pass runs on the
//! first's result — a GAN (fast, faithful) or the diffusion model again on tiles (more
//! invented detail, much slower) — and one Lanczos resample of the last result lands on the
//! exact size. Optional colour correction against the input follows ([`crate::color_fix`]).

use std::str::FromStr;

use crate::color_fix::{apply_color_fix, ColorFix};
use crate::error::{Error, Result};
use crate::image_io::RgbF32;
use crate::resample::resize_rgb;
pub use crate::upscaler::TargetSize;
use crate::upscaler::{
    Engine, OnRow, OutputSize, PlannedMemory, Streaming, UpscaleParams, UpscaleRequest, Upscaler,
};

/// How a factor beyond the model's own is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScalePlan {
    /// One pass when the factor is within the model's, else two: diffusion then the GAN,
    /// or the GAN twice.
    #[default]
    Auto,
    /// One pass, then a resample to the size (a blurrier 8×).
    Single,
    /// Diffusion, then the GAN on its result.
    DiffusionGan,
    /// Diffusion, its result resampled to a quarter of the target, then diffusion again (in
    /// tiles).
    DiffusionTwice,
    /// The GAN twice.
    GanTwice,
}

impl ScalePlan {
    pub const NAMES: [&'static str; 5] = [
        "auto",
        "single",
        "diffusion+gan",
        "diffusion+diffusion",
        "gan+gan",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Single => "single",
            Self::DiffusionGan => "diffusion+gan",
            Self::DiffusionTwice => "diffusion+diffusion",
            Self::GanTwice => "gan+gan",
        }
    }
}

impl FromStr for ScalePlan {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "single" => Self::Single,
            "diffusion+gan" => Self::DiffusionGan,
            "diffusion+diffusion" => Self::DiffusionTwice,
            "gan+gan" => Self::GanTwice,
            _ => {
                return Err(Error::option(
                    "plan",
                    format!("`{s}`: expected one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }
}

/// One pass of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Primary,
    Gan,
    /// The primary model again: on the first result (the GAN), or for diffusion on the result
    /// resampled to a quarter of the target.
    PrimaryAgain,
}

/// The primary upscaler (the engine chosen) with the GAN for second passes, running plans.
pub struct PlannedUpscaler<'a> {
    primary: &'a dyn Upscaler,
    gan: Option<&'a dyn Upscaler>,
    plan: ScalePlan,
}

impl<'a> PlannedUpscaler<'a> {
    /// `gan` is the second-pass GAN for a diffusion primary (for a GAN primary it is the
    /// primary itself).
    pub fn new(primary: &'a dyn Upscaler, gan: Option<&'a dyn Upscaler>, plan: ScalePlan) -> Self {
        Self { primary, gan, plan }
    }

    /// The passes that take a `width` × `height` input to `target`.
    pub fn passes(&self, width: usize, height: usize, target: (usize, usize)) -> Result<Vec<Pass>> {
        let native = self.primary.scale() as f64;
        let factor = (target.0 as f64 / width as f64).max(target.1 as f64 / height as f64);
        let diffusion = self.primary.engine() == Engine::Diffusion;
        let plan = match self.plan {
            ScalePlan::Auto if factor <= native + 1e-9 => ScalePlan::Single,
            ScalePlan::Auto if diffusion => ScalePlan::DiffusionGan,
            ScalePlan::Auto => ScalePlan::GanTwice,
            other => other,
        };
        let needs_diffusion = matches!(plan, ScalePlan::DiffusionGan | ScalePlan::DiffusionTwice);
        if needs_diffusion && !diffusion {
            return Err(Error::option(
                "plan",
                format!("{} needs the diffusion engine", plan.name()),
            ));
        }
        Ok(match plan {
            ScalePlan::Auto | ScalePlan::Single => vec![Pass::Primary],
            ScalePlan::DiffusionGan => vec![Pass::Primary, Pass::Gan],
            ScalePlan::DiffusionTwice => vec![Pass::Primary, Pass::PrimaryAgain],
            ScalePlan::GanTwice => vec![Pass::Primary, Pass::PrimaryAgain],
        })
    }

    /// One line saying what happens to a `width` × `height` input; an error when a pass
    /// cannot fit its memory budget.
    pub fn describe(&self, width: usize, height: usize, params: &UpscaleParams) -> Result<String> {
        let target = params.size.resolve(width, height, self.primary.scale())?;
        let passes = self.passes(width, height, target)?;
        let names: Vec<String> = passes
            .iter()
            .map(|s| match s {
                Pass::Primary | Pass::PrimaryAgain => {
                    format!("{} x{}", self.primary.engine().name(), self.primary.scale())
                }
                Pass::Gan => format!("gan x{}", self.gan.map_or(4, |g| g.scale())),
            })
            .collect();
        // The passes' own output: when it is the target, nothing is resampled.
        let reached = passes.iter().fold(1, |f, s| {
            f * match s {
                Pass::Primary | Pass::PrimaryAgain => self.primary.scale(),
                Pass::Gan => self.gan.map_or(4, |g| g.scale()),
            }
        });
        let resample = if (width * reached, height * reached) == target {
            ""
        } else {
            ", then an exact Lanczos resample"
        };
        let mut line = format!(
            "{width}x{height} -> {}x{}: {}{resample}{}",
            target.0,
            target.1,
            names.join(" -> "),
            match params.color_fix {
                ColorFix::None => String::new(),
                fix => format!(", colour fix {}", fix.name()),
            }
        );
        for (k, (w, h, note)) in self
            .memory_notes(width, height, params)?
            .into_iter()
            .enumerate()
        {
            match (k, note) {
                (_, None) => {}
                (0, Some(note)) => line.push_str(&format!("; first pass: {note}")),
                (_, Some(note)) => line.push_str(&format!("; second pass ({w}x{h}): {note}")),
            }
        }
        Ok(line)
    }

    /// Each pass's input size and its engine's memory note: the budget checked for every pass
    /// (the last one with the resample to the exact size and the colour fix that follow it).
    fn memory_notes(
        &self,
        width: usize,
        height: usize,
        params: &UpscaleParams,
    ) -> Result<Vec<(usize, usize, Option<String>)>> {
        let target = params.size.resolve(width, height, self.primary.scale())?;
        let passes = self.passes(width, height, target)?;
        let mut notes = Vec::with_capacity(passes.len());
        let (mut w, mut h) = (width, height);
        for (k, pass) in passes.iter().enumerate() {
            let upscaler = self.pass_upscaler(*pass)?;
            if *pass == Pass::PrimaryAgain && upscaler.engine() == Engine::Diffusion {
                let s = upscaler.scale();
                (w, h) = (target.0.div_ceil(s), target.1.div_ceil(s));
            }
            let last = k + 1 == passes.len();
            let s = upscaler.scale();
            let output = (w * s, h * s);
            let pass_params = UpscaleParams {
                size: if last && output != target {
                    OutputSize::target(TargetSize::Exact {
                        width: target.0,
                        height: target.1,
                    })
                } else {
                    OutputSize::native()
                },
                color_fix: if last {
                    params.color_fix
                } else {
                    ColorFix::None
                },
                settings: match pass {
                    Pass::Gan => None,
                    _ => params.settings.clone(),
                },
                // Only a plan of one pass hands its output on in rows.
                stream: if passes.len() == 1 {
                    params.stream
                } else {
                    Streaming::Off
                },
                ..params.clone()
            };
            notes.push((w, h, upscaler.memory_note(w, h, &pass_params)?));
            (w, h) = output;
        }
        Ok(notes)
    }

    /// The engine that runs `pass`.
    fn pass_upscaler(&self, pass: Pass) -> Result<&'a dyn Upscaler> {
        match pass {
            Pass::Gan => self
                .gan
                .ok_or_else(|| Error::option("plan", "no GAN model is loaded for the second pass")),
            _ => Ok(self.primary),
        }
    }
}

impl Upscaler for PlannedUpscaler<'_> {
    fn engine(&self) -> Engine {
        self.primary.engine()
    }

    fn scale(&self) -> usize {
        self.primary.scale()
    }

    fn describe(&self) -> String {
        format!("{} (plan {})", self.primary.describe(), self.plan.name())
    }

    fn device(&self) -> &candle_core::Device {
        self.primary.device()
    }

    fn memory_estimate(
        &self,
        width: usize,
        height: usize,
        params: &UpscaleParams,
    ) -> Result<Option<PlannedMemory>> {
        self.primary.memory_estimate(width, height, params)
    }

    /// The primary's checks, the second-pass GAN's (without the primary's settings), and a
    /// plan that needs the diffusion engine refused on the GAN engine.
    fn check_params(&self, params: &UpscaleParams) -> Result<()> {
        self.primary.check_params(params)?;
        if let Some(gan) = self.gan {
            let gan_pass = UpscaleParams {
                settings: None,
                ..params.clone()
            };
            gan.check_params(&gan_pass)?;
        }
        let needs_diffusion = matches!(
            self.plan,
            ScalePlan::DiffusionGan | ScalePlan::DiffusionTwice
        );
        if needs_diffusion && self.primary.engine() != Engine::Diffusion {
            return Err(Error::option(
                "plan",
                format!("{} needs the diffusion engine", self.plan.name()),
            ));
        }
        Ok(())
    }

    /// A plan of one pass streams as its engine does; two passes never do.
    fn streams_output(&self, width: usize, height: usize, params: &UpscaleParams) -> Result<bool> {
        let target = params.size.resolve(width, height, self.primary.scale())?;
        if self.passes(width, height, target)?.len() > 1 {
            return Ok(false);
        }
        self.primary.streams_output(width, height, params)
    }

    /// A plan of one pass at the model's factor, no colour fix, goes to the engine's rows;
    /// anything else is held, then handed on in rows.
    fn upscale_rows(
        &self,
        request: UpscaleRequest<'_>,
        on_row: OnRow<'_>,
    ) -> Result<(usize, usize)> {
        let (width, height) = request.image.size();
        let target = request
            .params
            .size
            .resolve(width, height, self.primary.scale())?;
        let one_pass = self.passes(width, height, target)?.len() == 1;
        if one_pass && request.params.is_single_pass() {
            return self.primary.upscale_rows(request, on_row);
        }
        let result = self.upscale(request)?;
        for row in result.data.chunks_exact(result.width * 3) {
            on_row(row)?;
        }
        Ok(result.size())
    }

    /// Always lands on the exact size (`params.size`, else the model's factor × the input).
    fn upscale(&self, request: UpscaleRequest<'_>) -> Result<RgbF32> {
        let UpscaleRequest {
            image,
            params,
            on_step,
        } = request;
        params.size.validate()?;
        let (width, height) = image.size();
        let target = params.size.resolve(width, height, self.primary.scale())?;
        let passes = self.passes(width, height, target)?;
        // Each pass is one engine run at its own factor; the size and colour fix are this
        // plan's. The primary's settings are for the primary only.
        let primary_pass = UpscaleParams {
            size: Default::default(),
            color_fix: ColorFix::None,
            ..params.clone()
        };
        let gan_pass = UpscaleParams {
            settings: None,
            ..primary_pass.clone()
        };
        // Every pass's budget is checked before the first runs.
        self.memory_notes(width, height, params)?;
        let mut result =
            self.primary
                .upscale(UpscaleRequest::new(image, &primary_pass, &mut *on_step))?;
        for pass in &passes[1..] {
            let upscaler = self.pass_upscaler(*pass)?;
            let pass_params = match pass {
                Pass::Gan => &gan_pass,
                _ => &primary_pass,
            };
            if *pass == Pass::PrimaryAgain && upscaler.engine() == Engine::Diffusion {
                // The second diffusion pass invents detail at the final scale: feed it the
                // first result at target / scale.
                let s = upscaler.scale();
                result = resize_rgb(&result, target.0.div_ceil(s), target.1.div_ceil(s))?;
            }
            let input = result.to_rgb8();
            // The f32 result is not held while the next pass runs.
            drop(result);
            result = upscaler.upscale(UpscaleRequest::new(&input, pass_params, &mut *on_step))?;
        }
        if result.size() != target {
            result = resize_rgb(&result, target.0, target.1)?;
        }
        if params.color_fix != ColorFix::None {
            let device = self.primary.device();
            let fixed = apply_color_fix(
                &result.to_tensor(device)?,
                &image.to_tensor(device)?,
                params.color_fix,
            )?;
            result = RgbF32::from_tensor(&fixed)?;
        }
        Ok(result)
    }
}
