//! Any output size from one upscaler pass or two: the plan that reaches a requested factor
//! (1× to 16×), exact size (`--target WxH`) or long side (`--long-side N`). A factor within
//! the model's own is one pass; beyond it (8× from a ×4 model) a second pass runs on the
//! first's result — a GAN (fast, faithful) or the diffusion model again on tiles (more
//! invented detail, much slower) — and one Lanczos resample of the last result lands on the
//! exact size. Optional colour correction against the input follows ([`crate::color_fix`]).

use std::ops::ControlFlow;
use std::str::FromStr;

use candle_core::Tensor;

use crate::color_fix::apply_color_fix;
use crate::error::{Error, Result};
use crate::pipeline::{rgb8_to_tensor, tensor_to_rgb8, StepProgress, UpscaleOptions};
use crate::resample::resize_rgb_tensor;
use crate::upscaler::{Engine, Upscaler};

/// An output size given other than as a factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSize {
    /// Exactly this size (the aspect ratio may change).
    Exact { width: usize, height: usize },
    /// The longer side becomes this; the other keeps the aspect ratio.
    LongSide(usize),
}

impl FromStr for TargetSize {
    type Err = Error;

    /// `WxH`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::option(
                "target",
                format!("`{s}`: expected WIDTHxHEIGHT, e.g. 3840x2160"),
            )
        };
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height) = (
            w.trim().parse::<usize>().map_err(|_| bad())?,
            h.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if width == 0 || height == 0 {
            return Err(bad());
        }
        Ok(Self::Exact { width, height })
    }
}

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

/// The output size of a `width` × `height` input under `options`, for a model of `native`
/// scale: `target`, else `scale`, else the model's own factor.
pub fn output_size(
    width: usize,
    height: usize,
    options: &UpscaleOptions,
    native: usize,
) -> Result<(usize, usize)> {
    let size = match options.target {
        Some(TargetSize::Exact { width, height }) => (width, height),
        Some(TargetSize::LongSide(n)) => {
            let s = n as f64 / width.max(height) as f64;
            (
                ((width as f64 * s).round() as usize).max(1),
                ((height as f64 * s).round() as usize).max(1),
            )
        }
        None => {
            let s = options.scale.unwrap_or(native as f64);
            let (w, h) = ((width as f64 * s).round(), (height as f64 * s).round());
            if !(w >= 1.0 && h >= 1.0) {
                return Err(Error::option(
                    "scale",
                    format!("{s} turns {width}x{height} into an empty image"),
                ));
            }
            (w as usize, h as usize)
        }
    };
    let factor = (size.0 as f64 / width as f64).max(size.1 as f64 / height as f64);
    if factor > crate::pipeline::MAX_SCALE {
        return Err(Error::option(
            "scale",
            format!(
                "{width}x{height} to {}x{} is {factor:.1}×; at most {}× is supported",
                size.0,
                size.1,
                crate::pipeline::MAX_SCALE
            ),
        ));
    }
    Ok(size)
}

/// One pass of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Primary,
    Gan,
    /// The primary (diffusion) model again, on the result resampled to a quarter of the
    /// target.
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
    pub fn stages(
        &self,
        width: usize,
        height: usize,
        target: (usize, usize),
    ) -> Result<Vec<Stage>> {
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
            ScalePlan::Auto | ScalePlan::Single => vec![Stage::Primary],
            ScalePlan::DiffusionGan => vec![Stage::Primary, Stage::Gan],
            ScalePlan::DiffusionTwice => vec![Stage::Primary, Stage::PrimaryAgain],
            ScalePlan::GanTwice => vec![Stage::Primary, Stage::PrimaryAgain],
        })
    }

    /// One line saying what happens to a `width` × `height` input.
    pub fn describe(
        &self,
        width: usize,
        height: usize,
        options: &UpscaleOptions,
    ) -> Result<String> {
        let target = output_size(width, height, options, self.primary.scale())?;
        let stages = self.stages(width, height, target)?;
        let names: Vec<String> = stages
            .iter()
            .map(|s| match s {
                Stage::Primary | Stage::PrimaryAgain => {
                    format!("{} x{}", self.primary.engine().name(), self.primary.scale())
                }
                Stage::Gan => format!("gan x{}", self.gan.map_or(4, |g| g.scale())),
            })
            .collect();
        let mut line = format!(
            "{width}x{height} -> {}x{}: {}, then an exact Lanczos resample{}",
            target.0,
            target.1,
            names.join(" -> "),
            match options.color_fix {
                crate::color_fix::ColorFix::None => String::new(),
                fix => format!(", colour fix {}", fix.name()),
            }
        );
        if let Some(note) = self.primary.memory_note(width, height, options)? {
            line.push_str(&format!("; first pass: {note}"));
        }
        if let Some(&Stage::PrimaryAgain) = stages.get(1) {
            let s = self.primary.scale();
            let (w2, h2) = (target.0.div_ceil(s), target.1.div_ceil(s));
            if let Some(note) = self.primary.memory_note(w2, h2, options)? {
                line.push_str(&format!("; second pass ({w2}x{h2}): {note}"));
            }
        }
        Ok(line)
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

    fn upscale_rgb8(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        options: &UpscaleOptions,
        on_step: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<Tensor> {
        let target = output_size(width, height, options, self.primary.scale())?;
        let stages = self.stages(width, height, target)?;
        let mut result = self
            .primary
            .upscale_rgb8(rgb, width, height, options, on_step)?;
        for stage in &stages[1..] {
            let upscaler = match stage {
                Stage::Gan => self.gan.ok_or_else(|| {
                    Error::option("plan", "no GAN model is loaded for the second pass")
                })?,
                _ => self.primary,
            };
            if *stage == Stage::PrimaryAgain && upscaler.engine() == Engine::Diffusion {
                // The second diffusion pass invents detail at the final scale: feed it the
                // first result at target / scale.
                let s = upscaler.scale();
                result = resize_rgb_tensor(&result, target.0.div_ceil(s), target.1.div_ceil(s))?;
            }
            let (data, w, h) = tensor_to_rgb8(&result)?;
            result = upscaler.upscale_rgb8(&data, w, h, options, on_step)?;
        }
        let (_, _, h, w) = result.dims4()?;
        if (w, h) != target {
            result = resize_rgb_tensor(&result, target.0, target.1)?;
        }
        if options.color_fix != crate::color_fix::ColorFix::None {
            let source = rgb8_to_tensor(rgb, width, height, result.device())?;
            result = apply_color_fix(&result, &source, options.color_fix)?;
        }
        Ok(result)
    }
}
