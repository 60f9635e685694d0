//! DDPM ancestral sampling (Ho et al. 2020), equal to diffusers' `DDPMScheduler`
//! (`scheduling_ddpm.py`). Besides sampling, its `add_noise` is the x4 upscaler's low-resolution
//! noise augmentation (`low_res_scheduler`).

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::ddim::{check_timesteps_in_range, clip_range, reject_thresholding, train_index};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise_schedule::NoiseSchedule;
use crate::prediction::x0_and_eps;
use crate::scheduler::{
    check_same_shape, check_step_index, lincomb, required_noise, Scheduler, StepOutput,
};
use crate::timesteps::{check_step_count, integer_timesteps};

/// The posterior variance choices of diffusers' DDPM that need no learned variance channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variance {
    Small,
    SmallLog,
    Large,
}

/// Denoising diffusion probabilistic models.
#[derive(Debug, Clone)]
pub struct Ddpm {
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    clip_sample: Option<f64>,
    variance: Variance,
}

impl Ddpm {
    /// Builds DDPM from `config` (defaults: leading spacing, `clip_sample` on, `fixed_small`).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        reject_thresholding(config)?;
        let variance = match config.variance_type.as_deref().unwrap_or("fixed_small") {
            "fixed_small" => Variance::Small,
            "fixed_small_log" => Variance::SmallLog,
            "fixed_large" => Variance::Large,
            other => {
                return Err(SchedulerError::config(
                    "variance_type",
                    format!(
                        "`{other}` is not supported; expected fixed_small, fixed_small_log or \
                         fixed_large (learned variances need a model that predicts them)"
                    ),
                ))
            }
        };
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
        Ok(Self {
            timesteps,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip_sample: clip_range(config)?,
            variance,
            schedule,
        })
    }

    /// The noise standard deviation added when stepping from `alpha_prod` to `alpha_prod_prev`.
    fn noise_std(&self, alpha_prod: f32, alpha_prod_prev: f32) -> f32 {
        let current_beta = 1.0 - alpha_prod / alpha_prod_prev;
        let variance = ((1.0 - alpha_prod_prev) / (1.0 - alpha_prod) * current_beta).max(1e-20);
        match self.variance {
            Variance::Small => variance.sqrt(),
            Variance::SmallLog => (0.5 * variance.ln()).exp(),
            Variance::Large => current_beta.sqrt(),
        }
    }
}

impl Scheduler for Ddpm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddpm
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The reference draws noise at every step but the one at training timestep 0.
    fn needs_noise(&self, step_index: usize) -> bool {
        self.timesteps.get(step_index).is_some_and(|&t| t > 0.0)
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
        let t = self.timesteps[step_index] as usize;
        // f32 throughout, like the reference's 0-d tensors.
        let alpha_prod = self.schedule.alphas_cumprod[t];
        let alpha_prod_prev = match self.timesteps.get(step_index + 1) {
            Some(&prev_t) => self.schedule.alphas_cumprod[prev_t as usize],
            None => 1.0,
        };
        let beta_prod = 1.0 - alpha_prod;
        if beta_prod <= 0.0 {
            return Err(SchedulerError::argument(
                "step_index",
                format!("timestep {t} has no noise in the training schedule (beta_start is 0)"),
            ));
        }
        let beta_prod_prev = 1.0 - alpha_prod_prev;
        let current_alpha = alpha_prod / alpha_prod_prev;
        let current_beta = 1.0 - current_alpha;

        let (mut x0, _) = x0_and_eps(self.prediction, model_output, sample, alpha_prod)?;
        if let Some(range) = self.clip_sample {
            x0 = x0.clamp(-range, range)?;
        }
        let x0_coeff = alpha_prod_prev.sqrt() * current_beta / beta_prod;
        let sample_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod;
        let prev = lincomb(&x0, x0_coeff as f64, sample, sample_coeff as f64)?;
        let prev = match noise {
            Some(noise) => {
                let std = self.noise_std(alpha_prod, alpha_prod_prev);
                (prev + noise.affine(std as f64, 0.0)?)?
            }
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
