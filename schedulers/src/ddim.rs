//! DDIM (Song et al. 2020), equal to diffusers' `DDIMScheduler` (`scheduling_ddim.py`),
//! including η > 0, `clip_sample`, `set_alpha_to_one` and every timestep spacing. The x4
//! upscaler's own solver.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise_schedule::NoiseSchedule;
use crate::prediction::x0_and_eps;
use crate::scheduler::{
    check_same_shape, check_step_index, lincomb, required_noise, Scheduler, StepOutput,
};
use crate::timesteps::{check_step_count, integer_timesteps};

/// Denoising diffusion implicit models.
#[derive(Debug, Clone)]
pub struct Ddim {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    /// ᾱ used past the first training step: 1 with `set_alpha_to_one`, else ᾱ₀.
    final_alpha_prod: f32,
    clip_sample: Option<f64>,
    /// The reference steps back by `num_train_timesteps / num_inference_steps` whatever the
    /// spacing, so this is kept rather than read off the next timestep.
    step_ratio: i64,
    eta: f64,
}

impl Ddim {
    /// Builds DDIM from `config` (defaults: leading spacing, `clip_sample` and
    /// `set_alpha_to_one` on, as diffusers' class) for `num_inference_steps` steps.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        reject_thresholding(config)?;
        let schedule = NoiseSchedule::from_config(config)?;
        let train = schedule.len();
        check_step_count(num_inference_steps, train)?;
        let timesteps = integer_timesteps(
            config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            num_inference_steps,
            train,
            config.steps_offset.unwrap_or(0),
        );
        check_timesteps_in_range(&timesteps, train)?;
        let final_alpha_prod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Ok(Self {
            timesteps,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            final_alpha_prod,
            clip_sample: clip_range(config)?,
            step_ratio: (train / num_inference_steps) as i64,
            eta: 0.0,
            schedule,
        })
    }

    /// Sets η (diffusers' `step(eta=...)`): 0 is deterministic, 1 adds as much fresh noise as
    /// DDPM. diffusers documents η in [0, 1]; beyond 1 the variance term exceeds the remaining
    /// noise and the step is meaningless, so it is refused.
    pub fn with_eta(mut self, eta: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(SchedulerError::argument(
                "eta",
                // 1e300 as 1e300, not 301 digits.
                if eta.abs() >= 1e9 {
                    format!("is {eta:e}; expected a number from 0 to 1 (DDIM's η)")
                } else {
                    format!("is {eta}; expected a number from 0 to 1 (DDIM's η)")
                },
            ));
        }
        self.eta = eta;
        Ok(self)
    }

    fn alpha_prod_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.schedule.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_prod
        }
    }
}

impl Scheduler for Ddim {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, _step_index: usize) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_index(step_index, self.timesteps.len())?;
        check_same_shape(model_output, sample)?;
        let noise = required_noise(self.needs_noise(step_index), noise, sample)?;
        let t = self.timesteps[step_index] as i64;
        let prev_t = t - self.step_ratio;
        let alpha_prod = self.alpha_prod_at(t);
        let alpha_prod_prev = self.alpha_prod_at(prev_t);
        let beta_prod = 1.0 - alpha_prod;
        if beta_prod <= 0.0 {
            return Err(SchedulerError::argument(
                "step_index",
                format!("timestep {t} has no noise in the training schedule (beta_start is 0)"),
            ));
        }
        let (mut x0, eps) = x0_and_eps(self.prediction, model_output, sample, alpha_prod)?;
        if let Some(range) = self.clip_sample {
            // ε stays the model's (diffusers' `use_clipped_model_output` is off in its
            // pipelines), only x₀ is clipped.
            x0 = x0.clamp(-range, range)?;
        }
        // f32 throughout, like the reference's 0-d tensors.
        let variance = (1.0 - alpha_prod_prev) / beta_prod * (1.0 - alpha_prod / alpha_prod_prev);
        let std_dev = self.eta as f32 * variance.sqrt();
        let direction = (1.0 - alpha_prod_prev - std_dev * std_dev).sqrt();
        let prev = lincomb(&x0, alpha_prod_prev.sqrt() as f64, &eps, direction as f64)?;
        let prev = match noise {
            Some(noise) => (prev + noise.affine(std_dev as f64, 0.0)?)?,
            None => prev,
        };
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let t = train_index(timestep, self.schedule.len())?;
        self.schedule.add_noise(original, noise, t)
    }
}

/// `clip_sample_range` when `clip_sample` is on (diffusers' default for DDIM and DDPM).
pub(crate) fn clip_range(config: &SchedulerConfig) -> Result<Option<f64>> {
    if !config.clip_sample.unwrap_or(true) {
        return Ok(None);
    }
    let range = config.clip_sample_range.unwrap_or(1.0);
    if !(range.is_finite() && range > 0.0) {
        return Err(SchedulerError::config(
            "clip_sample_range",
            format!("must be a positive number, got {range}"),
        ));
    }
    Ok(Some(range))
}

/// Dynamic thresholding is for pixel-space models (Imagen); latent upscaling never uses it.
pub(crate) fn reject_thresholding(config: &SchedulerConfig) -> Result<()> {
    if config.thresholding.unwrap_or(false) {
        return Err(SchedulerError::config(
            "thresholding",
            "dynamic thresholding is not supported by diffsr; set it to false",
        ));
    }
    Ok(())
}

/// Checks that every timestep indexes the training schedule: a large `steps_offset` can push
/// leading timesteps past its end, and trailing spacing gives a timestep −1 for some step
/// counts (the reference would then silently index ᾱ from the end).
pub(crate) fn check_timesteps_in_range(timesteps: &[f64], train: usize) -> Result<()> {
    match timesteps.iter().find(|&&t| t < 0.0 || t >= train as f64) {
        Some(t) if *t < 0.0 => Err(SchedulerError::config(
            "timestep_spacing",
            format!(
                "trailing spacing with {} steps yields timestep {t}; choose another step count",
                timesteps.len()
            ),
        )),
        Some(t) => Err(SchedulerError::config(
            "steps_offset",
            format!(
                "with {} steps, timestep {t} falls outside the {train} training timesteps; use \
                 fewer steps",
                timesteps.len()
            ),
        )),
        None => Ok(()),
    }
}

/// A training timestep given as a float, checked to be an integer in range.
pub(crate) fn train_index(timestep: f64, train: usize) -> Result<usize> {
    if timestep.fract() != 0.0 || timestep < 0.0 || timestep >= train as f64 {
        return Err(SchedulerError::argument(
            "timestep",
            format!("{timestep} is not a training timestep in 0..{train}"),
        ));
    }
    Ok(timestep as usize)
}
