//! The training noise schedule: betas, alphas and their cumulative product.
//!
//! Follows the `__init__` of diffusers' schedulers (`scheduling_ddim.py` and siblings) down to
//! the float types: betas are f32 (`torch.linspace(..., dtype=float32)`), `alphas = 1 - betas`
//! in f32, and `torch.cumprod` on the CPU accumulates in f64 and stores f32. Keeping the same
//! roundings keeps every solver within float error of the reference over 1000 timesteps.

use candle_core::Tensor;

use crate::config::{BetaSchedule, SchedulerConfig};
use crate::error::{Result, SchedulerError};

/// Betas and cumulative alphas of the training schedule, as the f32 values diffusers holds.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the schedule from the training constants of `config` (diffusers' defaults:
    /// 1000 timesteps, linear 1e-4..0.02).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        // Configs built in code never went through the parser's check.
        config.validate()?;
        let betas = if let Some(trained) = &config.trained_betas {
            if trained.is_empty() {
                return Err(SchedulerError::config("trained_betas", "must not be empty"));
            }
            if let Some(n) = config.num_train_timesteps {
                if n != trained.len() {
                    return Err(SchedulerError::config(
                        "trained_betas",
                        format!(
                            "has {} values but num_train_timesteps is {n}",
                            trained.len()
                        ),
                    ));
                }
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            let n = config.num_train_timesteps.unwrap_or(1000);
            if n < 2 {
                return Err(SchedulerError::config(
                    "num_train_timesteps",
                    format!("must be at least 2, got {n}"),
                ));
            }
            let start = config.beta_start.unwrap_or(0.0001);
            let end = config.beta_end.unwrap_or(0.02);
            for (field, v) in [("beta_start", start), ("beta_end", end)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(SchedulerError::config(
                        field,
                        format!("must be in [0, 1), got {v}"),
                    ));
                }
            }
            match config.beta_schedule.unwrap_or(BetaSchedule::Linear) {
                BetaSchedule::Linear => torch_linspace_f32(start as f32, end as f32, n),
                BetaSchedule::ScaledLinear => {
                    torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect()
                }
                BetaSchedule::SquaredcosCapV2 => cosine_betas(n),
            }
        };
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(0.0..1.0).contains(*b))
        {
            return Err(SchedulerError::config(
                "trained_betas",
                format!("beta {i} is {b}, every beta must be in [0, 1)"),
            ));
        }
        let betas = if config.rescale_betas_zero_snr.unwrap_or(false) {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        let alphas_cumprod = cumprod_f32(betas.iter().map(|b| 1.0 - b));
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// Number of training timesteps.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Always false: a schedule has at least two timesteps.
    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// `alphas_cumprod[t]` widened to f64, the value diffusers' 0-d f32 tensor holds.
    pub fn alpha_prod(&self, t: usize) -> f64 {
        self.alphas_cumprod[t] as f64
    }

    /// The forward process `sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) ε` at training timestep `t`, with the
    /// coefficients rounded to f32 as the reference's `add_noise` computes them. This is also
    /// the x4 upscaler's noise augmentation of its low-resolution input.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, t: usize) -> Result<Tensor> {
        let alpha = *self.alphas_cumprod.get(t).ok_or_else(|| {
            SchedulerError::argument(
                "timestep",
                format!("{t} is not a training timestep in 0..{}", self.len()),
            )
        })?;
        crate::scheduler::lincomb(
            original,
            alpha.sqrt() as f64,
            noise,
            (1.0 - alpha).sqrt() as f64,
        )
    }

    /// Karras-style sigmas `sqrt((1 - ᾱ) / ᾱ)` per training timestep, computed in f32 as
    /// diffusers does on its f32 tensor.
    pub fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: the first half counts up from
/// `start`, the second half down from `end`, all in f32. torch's kernel is a serial loop
/// (`RangeFactoriesKernel.cpp`) compiled for AVX2 / AVX-512, where the compiler fuses
/// `start + step * i` into one fused multiply-add; without the single rounding a few hundred of
/// 1000 betas come out one ulp off.
pub(crate) fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `betas_for_alpha_bar` with the cosine transform (Nichol & Dhariwal), in f64 then f32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod` of an f32 tensor on the CPU: f64 accumulator, f32 outputs.
fn cumprod_f32(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .map(|v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in f32 like the reference.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let cumprod = cumprod_f32(betas.iter().map(|b| 1.0 - b));
    let sqrt: Vec<f32> = cumprod.iter().map(|a| a.sqrt()).collect();
    let first = sqrt[0];
    let last = sqrt[sqrt.len() - 1];
    let scale = first / (first - last);
    let bar: Vec<f32> = sqrt
        .iter()
        .map(|s| {
            let shifted = (s - last) * scale;
            shifted * shifted
        })
        .collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for w in bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_hits_both_ends() {
        let v = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(v[0], 0.0001);
        assert_eq!(v[999], 0.02);
        assert!(v.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let cfg = SchedulerConfig {
            rescale_betas_zero_snr: Some(true),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            ..Default::default()
        };
        let s = NoiseSchedule::from_config(&cfg).unwrap();
        assert_eq!(*s.alphas_cumprod.last().unwrap(), 0.0);
    }

    #[test]
    fn bad_constants_are_named() {
        let cfg = SchedulerConfig {
            beta_end: Some(1.5),
            ..Default::default()
        };
        let err = NoiseSchedule::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("beta_end"), "{err}");
    }
}
