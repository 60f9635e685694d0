//! The timestep / σ schedule of diffusers' two multistep solvers, `DPMSolverMultistepScheduler`
//! (`scheduling_dpmsolver_multistep.py`) and `UniPCMultistepScheduler`
//! (`scheduling_unipc_multistep.py`), whose `set_timesteps` are one algorithm with a few
//! differences, all kept here behind [`MultistepSolver`]:
//!
//! | | DPM-Solver | UniPC |
//! |---|---|---|
//! | last usable timestep | `num_train_timesteps` minus the timesteps whose λ is below `lambda_min_clipped` | `num_train_timesteps` |
//! | Karras timesteps | rounded, except truncated (int64 cast) for `squaredcos_cap_v2` | always rounded |
//! | `sigma_min` final σ with Karras | the first training σ | the last Karras σ |
//!
//! Both space `num_inference_steps + 1` points and drop the last for linspace / leading
//! spacing, so their timesteps differ from DDIM's and Euler's; both keep integer timesteps and
//! floor `alphas_cumprod[-1]` at 2⁻²⁴ under `rescale_betas_zero_snr`.
//!
//! The step maths needs α_t, σ_t and λ_t = log α_t − log σ_t of every σ; the references compute
//! them on 0-d f32 tensors (`_sigma_to_alpha_sigma_t`), and so does [`SigmaPoint`].

use crate::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};
use crate::error::{Result, SchedulerError};
use crate::noise_schedule::NoiseSchedule;
use crate::numpy_compat::{interp, linspace, round};
use crate::sigmas::{karras, log_f32, sigma_to_t};
use crate::timesteps::{check_step_count, trailing};

/// Whose `set_timesteps` to follow where DPM-Solver's and UniPC's differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MultistepSolver {
    /// `DPMSolverMultistepScheduler`: honours `lambda_min_clipped`.
    DpmSolver,
    /// `UniPCMultistepScheduler`.
    UniPc,
}

/// What `final_sigmas_type` appends after the inference sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalSigma {
    /// σ = 0: the last step lands on the clean-sample estimate.
    Zero,
    /// The smallest σ of the schedule (which one depends on the solver, see the module docs).
    SigmaMin,
}

impl FinalSigma {
    /// Reads `final_sigmas_type` (default `zero`, as in both references).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => Ok(Self::Zero),
            "sigma_min" => Ok(Self::SigmaMin),
            other => Err(SchedulerError::config(
                "final_sigmas_type",
                format!("`{other}` is not one of zero, sigma_min"),
            )),
        }
    }
}

/// α_t, σ_t and the half log-SNR λ_t of one noise level, as the references' f32 scalars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SigmaPoint {
    pub alpha: f32,
    pub sigma: f32,
    pub lambda: f32,
}

impl SigmaPoint {
    /// `alpha_t = 1 / sqrt(σ² + 1)`, `sigma_t = σ · alpha_t`, `λ = log alpha_t − log sigma_t`,
    /// each rounded to f32 like the 0-d tensor ops. σ = 0 gives λ = +∞, as in the references.
    pub fn from_sigma(sigma: f32) -> Self {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha;
        Self {
            alpha,
            sigma: sigma_t,
            lambda: ln_f32(alpha) - ln_f32(sigma_t),
        }
    }
}

/// The f32 natural log, correctly rounded. torch's scalar `log` agrees with this far more
/// often than glibc's `logf` does (measured: 6 vs 40 differences in 5000 random inputs).
pub(crate) fn ln_f32(x: f32) -> f32 {
    (x as f64).ln() as f32
}

/// The f32 `expm1`, correctly rounded (torch's scalar `expm1` matches it as above).
pub(crate) fn expm1_f32(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// The timesteps and sigmas of a multistep solver set to a number of inference steps.
#[derive(Debug, Clone)]
pub(crate) struct MultistepSchedule {
    /// Integer timesteps, in the order the model is called at.
    pub timesteps: Vec<f64>,
    /// The inference sigmas plus the final one, as the reference's f32 tensor.
    pub sigmas: Vec<f32>,
}

impl MultistepSchedule {
    /// diffusers' `set_timesteps(num_inference_steps)` of `solver`, for the σ options this
    /// crate supports (plain and Karras sigmas); the others are refused by name.
    pub fn new(
        config: &SchedulerConfig,
        num_inference_steps: usize,
        solver: MultistepSolver,
    ) -> Result<Self> {
        reject_unsupported_sigmas(config, solver)?;
        let final_sigma = FinalSigma::from_config(config)?;
        let training = training_schedule(config)?;
        let train = training.len();
        check_step_count(num_inference_steps, train)?;
        let table = training.train_sigmas();

        let (timesteps, mut sigmas) = if config.use_karras_sigmas.unwrap_or(false) {
            let rounding = match solver {
                MultistepSolver::DpmSolver
                    if config.beta_schedule == Some(BetaSchedule::SquaredcosCapV2) =>
                {
                    KarrasRounding::Truncate
                }
                _ => KarrasRounding::Round,
            };
            karras_timesteps(
                &table,
                num_inference_steps,
                config.sigma_min,
                config.sigma_max,
                rounding,
            )
        } else {
            let last_timestep = match solver {
                MultistepSolver::UniPc => train,
                MultistepSolver::DpmSolver => {
                    clipped_last_timestep(&training, config.lambda_min_clipped)
                }
            };
            let timesteps = spaced_timesteps(
                config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
                num_inference_steps,
                train,
                last_timestep,
                config.steps_offset.unwrap_or(0),
            );
            let sigmas = sigmas_at(&table, &timesteps);
            (timesteps, sigmas)
        };

        let last = match final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin
                if solver == MultistepSolver::UniPc
                    && config.use_karras_sigmas.unwrap_or(false) =>
            {
                sigmas[sigmas.len() - 1]
            }
            FinalSigma::SigmaMin => table[0] as f64,
        };
        sigmas.push(last);
        let sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        check_distinct_noise_levels(&sigmas[..timesteps.len()])?;
        Ok(Self {
            timesteps: timesteps.into_iter().map(|t| t as f64).collect(),
            sigmas,
        })
    }

    /// The sigmas widened to f64 (what [`crate::Scheduler::sigmas`] returns).
    pub fn sigmas_f64(&self) -> Vec<f64> {
        self.sigmas.iter().map(|&s| s as f64).collect()
    }

    /// α, σ and λ of every entry of [`MultistepSchedule::sigmas`].
    pub fn points(&self) -> Vec<SigmaPoint> {
        self.sigmas
            .iter()
            .map(|&s| SigmaPoint::from_sigma(s))
            .collect()
    }
}

/// Refuses the σ-schedule options neither port implements (and, for DPM-Solver,
/// `use_lu_lambdas`, which UniPC does not have).
pub(crate) fn reject_unsupported_sigmas(
    config: &SchedulerConfig,
    solver: MultistepSolver,
) -> Result<()> {
    let mut flags = vec![
        ("use_exponential_sigmas", config.use_exponential_sigmas),
        ("use_beta_sigmas", config.use_beta_sigmas),
        ("use_flow_sigmas", config.use_flow_sigmas),
        ("use_dynamic_shifting", config.use_dynamic_shifting),
    ];
    if solver == MultistepSolver::DpmSolver {
        flags.push(("use_lu_lambdas", config.use_lu_lambdas));
    }
    for (field, value) in flags {
        if value.unwrap_or(false) {
            return Err(SchedulerError::config(
                field,
                "is not supported by this solver in diffsr; set it to false",
            ));
        }
    }
    Ok(())
}

/// The training schedule of both solvers: [`NoiseSchedule::from_config`], with the last ᾱ
/// floored at 2⁻²⁴ under `rescale_betas_zero_snr` so that its σ and λ stay finite.
pub(crate) fn training_schedule(config: &SchedulerConfig) -> Result<NoiseSchedule> {
    let mut schedule = NoiseSchedule::from_config(config)?;
    if config.rescale_betas_zero_snr.unwrap_or(false) {
        *schedule.alphas_cumprod.last_mut().expect("non-empty") = 2f32.powi(-24);
    }
    Ok(schedule)
}

/// DPM-Solver's `last_timestep`: `num_train_timesteps` minus the number of training
/// timesteps whose f32 λ lies below `lambda_min_clipped` (a `searchsorted` on the flipped λ
/// table). The default, −∞, clips nothing.
pub(crate) fn clipped_last_timestep(
    training: &NoiseSchedule,
    lambda_min_clipped: Option<f64>,
) -> usize {
    let bound = lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
    let clipped = training
        .alphas_cumprod
        .iter()
        .filter(|&&a| {
            let lambda = ln_f32(a.sqrt()) - ln_f32((1.0 - a).sqrt());
            (lambda as f64) < bound
        })
        .count();
    training.len() - clipped
}

/// The integer timesteps of each spacing, as the multistep references lay them out
/// (descending; `i64` because trailing spacing can reach −1, see below):
///
/// - linspace: `round(linspace(0, last − 1, n + 1))`, reversed, last dropped;
/// - leading: `arange(n + 1) · (last // (n + 1))`, reversed, last dropped, plus `steps_offset`;
/// - trailing: `round(arange(last, 0, −train / n)) − 1`.
///
/// `last` is the last usable timestep (`num_train_timesteps` unless DPM-Solver clips λ).
/// numpy's float `arange` sometimes yields one element too many for trailing spacing (e.g. 61
/// of 1000 steps), ending at timestep −1: the references run that extra step, σ clamped to the
/// first training σ, and so does this crate.
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_inference_steps: usize,
    num_train_timesteps: usize,
    last_timestep: usize,
    steps_offset: usize,
) -> Vec<i64> {
    let n = num_inference_steps;
    match spacing {
        TimestepSpacing::Linspace => {
            // Reversed, then the last entry (timestep 0) dropped.
            linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .skip(1)
                .rev()
                .map(|t| round(t) as i64)
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(last_timestep, n, num_train_timesteps)
            .into_iter()
            .map(|t| t as i64)
            .collect(),
    }
}

/// How Karras σ's inverted to fractional timesteps become the reference's int64 timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KarrasRounding {
    /// `.round()` (half to even) before the cast.
    Round,
    /// The bare int64 cast (DPM-Solver with `squaredcos_cap_v2`).
    Truncate,
}

/// Karras sigmas between `sigma_min` and `sigma_max` (config values, else the ends of the
/// training σ `table`) and their integer timesteps. Timesteps may repeat at many steps; the
/// references keep the repeats, and so does this.
pub(crate) fn karras_timesteps(
    table: &[f32],
    num_inference_steps: usize,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    rounding: KarrasRounding,
) -> (Vec<i64>, Vec<f64>) {
    let sigma_min = sigma_min.unwrap_or(table[0] as f64);
    let sigma_max = sigma_max.unwrap_or(table[table.len() - 1] as f64);
    let sigmas = karras(sigma_min, sigma_max, num_inference_steps);
    let log_sigmas = log_f32(table);
    let timesteps = sigmas
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &log_sigmas);
            match rounding {
                KarrasRounding::Round => round(t) as i64,
                KarrasRounding::Truncate => t as i64,
            }
        })
        .collect();
    (timesteps, sigmas)
}

/// `np.interp(timesteps, arange(train), table)`: the training σ at each integer timestep,
/// clamped to the table's ends outside it.
pub(crate) fn sigmas_at(table: &[f32], timesteps: &[i64]) -> Vec<f64> {
    let positions: Vec<f64> = (0..table.len()).map(|i| i as f64).collect();
    let values: Vec<f64> = table.iter().map(|&s| s as f64).collect();
    timesteps
        .iter()
        .map(|&t| interp(t as f64, &positions, &values))
        .collect()
}

/// The multistep updates divide by λ differences, so the σ's the model is called at must all
/// differ (they repeat only when the step count nears the training length, where the
/// references produce NaN).
fn check_distinct_noise_levels(sigmas: &[f32]) -> Result<()> {
    if let Some(i) = sigmas.windows(2).position(|w| w[0] == w[1]) {
        return Err(SchedulerError::argument(
            "num_inference_steps",
            format!(
                "{} steps repeat the noise level σ = {} (steps {i} and {}); the multistep \
                 update would divide by zero. Use fewer steps",
                sigmas.len(),
                sigmas[i],
                i + 1
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_spaces_one_more_point_than_steps() {
        // diffusers 0.42.1, UniPC / DPM-Solver, leading, steps_offset 1, 4 steps.
        let t = spaced_timesteps(TimestepSpacing::Leading, 4, 1000, 1000, 1);
        assert_eq!(t, vec![801, 601, 401, 201]);
    }

    #[test]
    fn trailing_can_overshoot_to_minus_one() {
        let t = spaced_timesteps(TimestepSpacing::Trailing, 61, 1000, 1000, 0);
        assert_eq!(t.len(), 62);
        assert_eq!(t[61], -1);
        let table = [0.5f32, 1.0, 2.0];
        assert_eq!(sigmas_at(&table, &[-1, 1, 5]), vec![0.5, 1.0, 2.0]);
    }

    #[test]
    fn zero_sigma_has_infinite_lambda() {
        let p = SigmaPoint::from_sigma(0.0);
        assert_eq!((p.alpha, p.sigma), (1.0, 0.0));
        assert_eq!(p.lambda, f32::INFINITY);
    }

    fn cosine(extra: &str) -> SchedulerConfig {
        SchedulerConfig::from_json_str(&format!(
            r#"{{"beta_schedule": "squaredcos_cap_v2", {extra}}}"#
        ))
        .unwrap()
    }

    // Lists printed by diffusers 0.42.1's DPMSolverMultistepScheduler.set_timesteps.

    #[test]
    fn dpm_solver_clips_lambda() {
        let training = training_schedule(&SchedulerConfig::default()).unwrap();
        assert_eq!(clipped_last_timestep(&training, None), 1000);
        for (spacing, expected) in [
            (
                "linspace",
                [995., 896., 796., 696., 597., 498., 398., 298., 199., 100.],
            ),
            (
                "leading",
                [900., 810., 720., 630., 540., 450., 360., 270., 180., 90.],
            ),
            (
                "trailing",
                [995., 895., 795., 695., 595., 495., 395., 295., 195., 95.],
            ),
        ] {
            let config = cosine(&format!(
                r#""lambda_min_clipped": -5.1, "timestep_spacing": "{spacing}""#
            ));
            let s = MultistepSchedule::new(&config, 10, MultistepSolver::DpmSolver).unwrap();
            assert_eq!(s.timesteps, expected, "{spacing}");
        }
        // UniPC has no λ clipping.
        let config = cosine(r#""lambda_min_clipped": -5.1"#);
        let s = MultistepSchedule::new(&config, 10, MultistepSolver::UniPc).unwrap();
        assert_eq!(s.timesteps[..2], [999., 899.]);
    }

    #[test]
    fn dpm_solver_truncates_cosine_karras_timesteps() {
        let config = cosine(r#""use_karras_sigmas": true, "final_sigmas_type": "sigma_min""#);
        let s = MultistepSchedule::new(&config, 8, MultistepSolver::DpmSolver).unwrap();
        assert_eq!(s.timesteps, [998., 998., 998., 998., 994., 965., 508., 0.]);
        assert_eq!(s.sigmas.len(), 9);
        assert!((s.sigmas[8] - 0.006427109).abs() < 1e-8);
        assert!((s.sigmas[0] / 20291.303 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn karras_sigma_min_final_differs_between_solvers() {
        let config = SchedulerConfig::from_json_str(
            r#"{"use_karras_sigmas": true, "final_sigmas_type": "sigma_min", "sigma_min": 0.1}"#,
        )
        .unwrap();
        let unipc = MultistepSchedule::new(&config, 5, MultistepSolver::UniPc).unwrap();
        assert_eq!(unipc.sigmas[5], 0.1);
        let dpm = MultistepSchedule::new(&config, 5, MultistepSolver::DpmSolver).unwrap();
        let table = training_schedule(&config).unwrap().train_sigmas();
        assert_eq!(dpm.sigmas[5], table[0]);
    }

    #[test]
    fn unsupported_sigma_options_are_named() {
        let config = SchedulerConfig {
            use_lu_lambdas: Some(true),
            ..Default::default()
        };
        let err = MultistepSchedule::new(&config, 10, MultistepSolver::DpmSolver)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use_lu_lambdas"), "{err}");
        assert!(MultistepSchedule::new(&config, 10, MultistepSolver::UniPc).is_ok());
    }
}
