//! Euler's method on the probability-flow ODE in σ-space (Karras et al. 2022, algorithm 2 with
//! no churn), equal to diffusers' `EulerDiscreteScheduler` (`scheduling_euler_discrete.py`),
//! with optional Karras sigmas and `final_sigmas_type`.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::noise_schedule::NoiseSchedule;
use crate::numpy_compat::interp;
use crate::scheduler::{
    check_same_shape, check_step_index, index_for_timestep, lincomb, Scheduler, StepOutput,
};
use crate::sigmas::{karras, log_f32, sigma_to_t};
use crate::timesteps::{check_step_count, float_timesteps};

/// The σ schedule shared by the Euler family: timesteps, their sigmas plus a final sigma, and
/// what the reference derives from them.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    /// f32-exact values, one more than `timesteps`.
    pub sigmas: Vec<f64>,
    pub init_noise_sigma: f64,
}

impl SigmaSchedule {
    /// diffusers' Euler `set_timesteps`: spaced timesteps, σ interpolated on the training
    /// table, optionally re-spaced à la Karras, then the final σ.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        reject_unsupported(config)?;
        let mut schedule = NoiseSchedule::from_config(config)?;
        if config.rescale_betas_zero_snr.unwrap_or(false) {
            // σ would be infinite at ᾱ = 0; the reference floors the last ᾱ at 2⁻²⁴.
            *schedule.alphas_cumprod.last_mut().expect("non-empty") = 2f32.powi(-24);
        }
        let train = schedule.len();
        check_step_count(num_inference_steps, train)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let mut timesteps = float_timesteps(
            spacing,
            num_inference_steps,
            train,
            config.steps_offset.unwrap_or(0),
        );
        let table = schedule.train_sigmas();
        let table64: Vec<f64> = table.iter().map(|&s| s as f64).collect();
        let positions: Vec<f64> = (0..train).map(|i| i as f64).collect();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(t, &positions, &table64))
            .collect();
        if config.use_karras_sigmas.unwrap_or(false) {
            let sigma_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras(sigma_min, sigma_max, num_inference_steps);
            let log_sigmas = log_f32(&table);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32 as f64)
                .collect();
        }
        let last = match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => 0.0,
            "sigma_min" => table[0] as f64,
            other => {
                return Err(SchedulerError::config(
                    "final_sigmas_type",
                    format!("`{other}` is not one of zero, sigma_min"),
                ))
            }
        };
        sigmas.push(last);
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        let max_sigma = sigmas.iter().copied().fold(0.0f64, f64::max) as f32;
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        } as f64;
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// `sample / sqrt(σ² + 1)`, the denominator computed in f32 as the reference does.
    pub fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps.len())?;
        let sigma = self.sigmas[step_index] as f32;
        let denom = (sigma * sigma + 1.0).sqrt() as f64;
        Ok(sample.affine(1.0 / denom, 0.0)?)
    }

    /// `original + noise * σ(timestep)`.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = index_for_timestep(&self.timesteps, timestep)?;
        lincomb(original, 1.0, noise, self.sigmas[index])
    }
}

/// The x₀ estimate of the Euler family at noise level `sigma`.
pub(crate) fn x0_from_sigma(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => (sample - model_output.affine(sigma, 0.0)?)?,
        PredictionType::Sample => model_output.clone(),
        PredictionType::VPrediction => {
            let s = sigma as f32;
            let c_out = (-s / (s * s + 1.0).sqrt()) as f64;
            let c_skip = 1.0 / (s * s + 1.0) as f64;
            lincomb(model_output, c_out, sample, c_skip)?
        }
    })
}

fn reject_unsupported(config: &SchedulerConfig) -> Result<()> {
    let flags = [
        ("use_exponential_sigmas", config.use_exponential_sigmas),
        ("use_beta_sigmas", config.use_beta_sigmas),
        ("use_flow_sigmas", config.use_flow_sigmas),
    ];
    for (field, value) in flags {
        if value.unwrap_or(false) {
            return Err(SchedulerError::config(
                field,
                "is not supported by this solver in diffsr; set it to false",
            ));
        }
    }
    if let Some(kind) = config.interpolation_type.as_deref() {
        if kind != "linear" {
            return Err(SchedulerError::config(
                "interpolation_type",
                format!("`{kind}` is not supported; expected linear"),
            ));
        }
    }
    if let Some(kind) = config.timestep_type.as_deref() {
        if kind != "discrete" {
            return Err(SchedulerError::config(
                "timestep_type",
                format!("`{kind}` is not supported; expected discrete"),
            ));
        }
    }
    Ok(())
}

/// Euler's method in σ-space.
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    sigmas: SigmaSchedule,
    prediction: PredictionType,
}

impl EulerDiscrete {
    /// Builds Euler from `config` (defaults: linspace spacing, zero final σ).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        Ok(Self {
            sigmas: SigmaSchedule::new(config, num_inference_steps)?,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
        })
    }
}

impl Scheduler for EulerDiscrete {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
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

    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_index(step_index, self.sigmas.timesteps.len())?;
        check_same_shape(model_output, sample)?;
        let sigma = self.sigmas.sigmas[step_index];
        let sigma_next = self.sigmas.sigmas[step_index + 1];
        let x0 = x0_from_sigma(self.prediction, model_output, sample, sigma)?;
        let derivative = (sample - &x0)?.affine(1.0 / sigma, 0.0)?;
        let dt = (sigma_next as f32 - sigma as f32) as f64;
        let prev = (sample + derivative.affine(dt, 0.0)?)?;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        self.sigmas.add_noise(original, noise, timestep)
    }
}
