//! Ancestral Euler sampling in σ-space (k-diffusion's `sample_euler_ancestral`), equal to
//! diffusers' `EulerAncestralDiscreteScheduler` (`scheduling_euler_ancestral_discrete.py`).
//! diffusers leaves `prediction_type` "sample" unimplemented; here it uses x₀ = model output,
//! the same definition every other solver uses.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig};
use crate::error::Result;
use crate::euler::{x0_from_sigma, SigmaSchedule};
use crate::kind::SchedulerKind;
use crate::scheduler::{check_same_shape, check_step_index, required_noise, Scheduler, StepOutput};

/// Euler ancestral: an Euler step to σ_down, then fresh noise of size σ_up.
#[derive(Debug, Clone)]
pub struct EulerAncestral {
    sigmas: SigmaSchedule,
    prediction: PredictionType,
}

impl EulerAncestral {
    /// Builds Euler ancestral from `config` (defaults: linspace spacing).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        // The reference class takes none of the σ-shaping options, so `from_config` drops
        // them: its σ are always interpolated on the training table and end at zero.
        let config = SchedulerConfig {
            use_karras_sigmas: None,
            use_exponential_sigmas: None,
            use_beta_sigmas: None,
            use_flow_sigmas: None,
            sigma_min: None,
            sigma_max: None,
            interpolation_type: None,
            timestep_type: None,
            final_sigmas_type: None,
            ..config.clone()
        };
        Ok(Self {
            sigmas: SigmaSchedule::new(&config, num_inference_steps)?,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
        })
    }
}

impl Scheduler for EulerAncestral {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn timesteps(&self) -> &[f64] {
        &self.sigmas.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.sigmas.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        self.sigmas.scale_model_input(sample, step_index)
    }

    /// The reference draws noise at every step, the last one included.
    fn needs_noise(&self, step_index: usize) -> bool {
        step_index < self.sigmas.timesteps.len()
    }

    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_index(step_index, self.sigmas.timesteps.len())?;
        check_same_shape(model_output, sample)?;
        let noise = required_noise(true, noise, sample)?.expect("required");
        let sigma = self.sigmas.sigmas[step_index];
        let x0 = x0_from_sigma(self.prediction, model_output, sample, sigma)?;
        // σ_up and σ_down in f32, as the reference computes them on 0-d f32 tensors.
        let from = sigma as f32;
        let to = self.sigmas.sigmas[step_index + 1] as f32;
        let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
        let derivative = (sample - &x0)?.affine(1.0 / sigma, 0.0)?;
        let dt = (sigma_down - from) as f64;
        let prev = (sample + derivative.affine(dt, 0.0)?)?;
        let prev = (prev + noise.affine(sigma_up as f64, 0.0)?)?;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.sigmas.add_noise(original, noise, timestep)
    }
}
