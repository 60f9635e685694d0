//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models"), equal to diffusers' `DPMSolverMultistepScheduler`
//! (`scheduling_dpmsolver_multistep.py`, diffusers 0.42.1) for its data-prediction algorithms:
//! `dpmsolver++` (the ODE solver, "DPM++ 2M") and `sde-dpmsolver++` (its SDE variant, "DPM++ 2M
//! SDE"), orders 1 to 3, midpoint and Heun second-order updates, Karras sigmas, λ clipping and
//! every timestep spacing.
//!
//! The solver works in half-log-SNR λ = log α − log σ. The reference evaluates every scalar
//! coefficient on 0-d f32 tensors taken from its f32 σ table; the same f32 arithmetic is done
//! here, in the same order, and each tensor operation (scale, sum, division) is the one torch
//! performs, so that a step reproduces diffusers' bit for bit whenever the coefficients agree.
//! They agree up to torch's own `exp` / `log` / `sqrt` on 0-d tensors, which are not correctly
//! rounded and differ by an ulp from the correctly rounded values used here in about 1% of
//! arguments. Those ulps matter little for the ODE and for order 2, but the third-order SDE
//! update is ill-conditioned in f32 (its D₂ coefficient cancels `1 − e^{−2h} − 2h` for small h):
//! diffusers itself moves by ~7e-5 relative over 75 steps when its σ's move by one ulp, and so
//! does this port against it.

use candle_core::{DType, Tensor};

use crate::config::{PredictionType, SchedulerConfig};
use crate::ddim::reject_thresholding;
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::multistep_schedule::{
    clipped_last_timestep, reject_unsupported_sigmas, training_schedule, FinalSigma,
    MultistepSchedule, MultistepSolver, SigmaPoint,
};
use crate::scheduler::{
    check_in_order, check_same_shape, check_step_index, index_for_timestep, lincomb,
    required_noise, Scheduler, StepOutput,
};

/// How the second-order multistep update extrapolates the data prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// DPM-Solver++ multistep, deterministic (`dpmsolver++`) or stochastic (`sde-dpmsolver++`).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    /// The reference's f32 σ table: one per timestep plus the final σ.
    sigmas: Vec<f32>,
    /// `sigmas` widened to f64, for [`Scheduler::sigmas`].
    sigmas_f64: Vec<f64>,
    prediction: PredictionType,
    sde: bool,
    karras: bool,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// Data predictions (x₀) of the previous steps, oldest first; at most `solver_order - 1`.
    model_outputs: Vec<Tensor>,
    /// How many steps have run, saturating at `solver_order` (the reference's counter of the
    /// same name): the warm-up that limits the order of the first steps.
    lower_order_nums: usize,
    /// The step index the next `step` call must have; `None` before the first step of a run,
    /// which may start anywhere (diffusers' `begin_index`, as img2img-style loops do).
    next_step: Option<usize>,
}

impl DpmSolverMultistep {
    /// Builds the solver from `config` for `num_inference_steps` steps. Defaults are those of
    /// diffusers' class: dpmsolver++, order 2, midpoint, linspace spacing, `lower_order_final`,
    /// zero final σ, no λ clipping.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        reject_unsupported(config)?;
        let sde = match config.algorithm_type.as_deref().unwrap_or("dpmsolver++") {
            "dpmsolver++" => false,
            "sde-dpmsolver++" => true,
            other @ ("dpmsolver" | "sde-dpmsolver") => {
                return Err(SchedulerError::config(
                    "algorithm_type",
                    format!(
                        "`{other}` (noise prediction, deprecated in diffusers) is not supported; \
                         use dpmsolver++ or sde-dpmsolver++"
                    ),
                ))
            }
            other => {
                return Err(SchedulerError::config(
                    "algorithm_type",
                    format!("`{other}` is not supported; expected dpmsolver++ or sde-dpmsolver++"),
                ))
            }
        };
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::config(
                "solver_order",
                format!("must be 1, 2 or 3, got {solver_order}"),
            ));
        }
        let solver_type = match config.solver_type.as_deref().unwrap_or("midpoint") {
            "midpoint" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            // The reference rewrites UniPC's and DEIS's solver types to midpoint, so that a
            // config saved by those solvers loads.
            "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            other => {
                return Err(SchedulerError::config(
                    "solver_type",
                    format!("`{other}` is not supported; expected midpoint or heun"),
                ))
            }
        };
        let final_sigma = FinalSigma::from_config(config)?;
        let karras = config.use_karras_sigmas.unwrap_or(false);
        let schedule =
            MultistepSchedule::new(config, num_inference_steps, MultistepSolver::DpmSolver)?;
        Ok(Self {
            sigmas_f64: schedule.sigmas_f64(),
            timesteps: schedule.timesteps,
            sigmas: schedule.sigmas,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            sde,
            karras,
            solver_order,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigma_zero: final_sigma == FinalSigma::Zero,
            model_outputs: Vec::with_capacity(solver_order),
            lower_order_nums: 0,
            next_step: None,
        })
    }

    /// The multistep order `solver_order` (1 to 3): how many past data predictions an update
    /// combines once warmed up.
    pub fn solver_order(&self) -> usize {
        self.solver_order
    }

    /// The data prediction x₀ at `step_index` (the reference's `convert_model_output` for the
    /// `++` algorithms), in the tensors' dtype.
    fn data_prediction(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        step_index: usize,
    ) -> Result<Tensor> {
        let level = SigmaPoint::from_sigma(self.sigmas[step_index]);
        Ok(match self.prediction {
            PredictionType::Epsilon => {
                let residual = lincomb(sample, 1.0, model_output, -(level.sigma as f64))?;
                // A true division, as torch divides by the 0-d α tensor.
                div_scalar(&residual, level.alpha)?
            }
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => lincomb(
                sample,
                level.alpha as f64,
                model_output,
                -(level.sigma as f64),
            )?,
        })
    }

    /// The reference's `dpm_solver_first_order_update` (DDIM in λ for the ODE).
    fn first_order(
        &self,
        t: SigmaPoint,
        s0: SigmaPoint,
        sample: &Tensor,
        d0: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = t.lambda - s0.lambda;
        if self.sde {
            let decay = 1.0 - exp_f32(-2.0 * h);
            let x = lincomb(
                sample,
                f(t.sigma / s0.sigma * exp_f32(-h)),
                d0,
                f(t.alpha * decay),
            )?;
            add_noise_term(x, noise, t.sigma * decay.sqrt())
        } else {
            let em1 = exp_f32(-h) - 1.0;
            lincomb(sample, f(t.sigma / s0.sigma), d0, -f(t.alpha * em1))
        }
    }

    /// The reference's `multistep_dpm_solver_second_order_update`: `m0` is this step's data
    /// prediction, `m1` the previous one.
    #[allow(clippy::too_many_arguments)]
    fn second_order(
        &self,
        t: SigmaPoint,
        s0: SigmaPoint,
        s1: SigmaPoint,
        sample: &Tensor,
        m0: &Tensor,
        m1: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = t.lambda - s0.lambda;
        let h_0 = s0.lambda - s1.lambda;
        let r0 = h_0 / h;
        let d1 = (m0 - m1)?.affine(f(1.0 / r0), 0.0)?;
        if self.sde {
            let decay = 1.0 - exp_f32(-2.0 * h);
            let mut x = lincomb(
                sample,
                f(t.sigma / s0.sigma * exp_f32(-h)),
                m0,
                f(t.alpha * decay),
            )?;
            let c1 = match self.solver_type {
                SolverType::Midpoint => 0.5 * (t.alpha * decay),
                SolverType::Heun => t.alpha * (decay / (-2.0 * h) + 1.0),
            };
            x = add_scaled(x, &d1, c1)?;
            add_noise_term(x, noise, t.sigma * decay.sqrt())
        } else {
            let em1 = exp_f32(-h) - 1.0;
            let x = lincomb(sample, f(t.sigma / s0.sigma), m0, -f(t.alpha * em1))?;
            match self.solver_type {
                SolverType::Midpoint => sub_scaled(x, &d1, 0.5 * (t.alpha * em1)),
                SolverType::Heun => add_scaled(x, &d1, t.alpha * (em1 / h + 1.0)),
            }
        }
    }

    /// The reference's `multistep_dpm_solver_third_order_update`: `m0` is this step's data
    /// prediction, `m1` and `m2` the two before.
    #[allow(clippy::too_many_arguments)]
    fn third_order(
        &self,
        levels: [SigmaPoint; 4],
        sample: &Tensor,
        m0: &Tensor,
        m1: &Tensor,
        m2: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let [t, s0, s1, s2] = levels;
        let h = t.lambda - s0.lambda;
        let h_0 = s0.lambda - s1.lambda;
        let h_1 = s1.lambda - s2.lambda;
        let r0 = h_0 / h;
        let r1 = h_1 / h;
        let d1_0 = (m0 - m1)?.affine(f(1.0 / r0), 0.0)?;
        let d1_1 = (m1 - m2)?.affine(f(1.0 / r1), 0.0)?;
        let spread = (&d1_0 - &d1_1)?;
        let d1 = add_scaled(d1_0, &spread, r0 / (r0 + r1))?;
        let d2 = spread.affine(f(1.0 / (r0 + r1)), 0.0)?;
        if self.sde {
            let decay = 1.0 - exp_f32(-2.0 * h);
            let mut x = lincomb(
                sample,
                f(t.sigma / s0.sigma * exp_f32(-h)),
                m0,
                f(t.alpha * decay),
            )?;
            x = add_scaled(x, &d1, t.alpha * (decay / (-2.0 * h) + 1.0))?;
            let two_h = 2.0 * h;
            x = add_scaled(
                x,
                &d2,
                t.alpha * ((decay - 2.0 * h) / (two_h * two_h) - 0.5),
            )?;
            add_noise_term(x, noise, t.sigma * decay.sqrt())
        } else {
            let em1 = exp_f32(-h) - 1.0;
            let mut x = lincomb(sample, f(t.sigma / s0.sigma), m0, -f(t.alpha * em1))?;
            x = add_scaled(x, &d1, t.alpha * (em1 / h + 1.0))?;
            sub_scaled(x, &d2, t.alpha * ((em1 + h) / (h * h) - 0.5))
        }
    }
}

impl Scheduler for DpmSolverMultistep {
    fn kind(&self) -> SchedulerKind {
        if self.sde {
            SchedulerKind::DpmPp2mSde
        } else if self.karras {
            SchedulerKind::DpmPp2mKarras
        } else {
            SchedulerKind::DpmPp2m
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas_f64)
    }

    /// The SDE variant draws noise at every step, the last one included (where σ = 0 makes it
    /// vanish), so a caller's generator stays in step with the reference's.
    fn needs_noise(&self, step_index: usize) -> bool {
        self.sde && step_index < self.timesteps.len()
    }

    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let n = self.timesteps.len();
        check_step_index(step_index, n)?;
        check_in_order(self.next_step, step_index)?;
        check_same_shape(model_output, sample)?;
        let noise = required_noise(self.needs_noise(step_index), noise, sample)?;

        let x0 = self.data_prediction(model_output, sample, step_index)?;

        // The reference's order selection: warm up from first order, and drop the order at
        // the end of short runs (and always at a zero final σ, where λ is infinite).
        let short_run = self.lower_order_final && n < 15;
        let final_first_order =
            step_index + 1 == n && (self.euler_at_final || short_run || self.final_sigma_zero);
        let second_to_last = step_index + 2 == n && short_run;
        let order = if self.solver_order == 1 || self.lower_order_nums < 1 || final_first_order {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || second_to_last {
            2
        } else {
            3
        };

        // The reference upcasts the sample (and the noise) to f32 for the update and casts the
        // result back to the model output's dtype; half-precision tensors are upcast here too.
        let work = |x: &Tensor| -> Result<Tensor> {
            Ok(match x.dtype() {
                DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
                _ => x.clone(),
            })
        };
        let sample_w = work(sample)?;
        let noise_w = noise.map(work).transpose()?;
        let m0 = work(&x0)?;
        let level = |i: usize| SigmaPoint::from_sigma(self.sigmas[i]);
        let (t, s0) = (level(step_index + 1), level(step_index));
        let prev = match order {
            1 => self.first_order(t, s0, &sample_w, &m0, noise_w.as_ref())?,
            2 => {
                let m1 = work(&self.model_outputs[self.model_outputs.len() - 1])?;
                let s1 = level(step_index - 1);
                self.second_order(t, s0, s1, &sample_w, &m0, &m1, noise_w.as_ref())?
            }
            _ => {
                let k = self.model_outputs.len();
                let m1 = work(&self.model_outputs[k - 1])?;
                let m2 = work(&self.model_outputs[k - 2])?;
                let levels = [t, s0, level(step_index - 1), level(step_index - 2)];
                self.third_order(levels, &sample_w, &m0, &m1, &m2, noise_w.as_ref())?
            }
        };
        let prev = prev.to_dtype(model_output.dtype())?;

        // Only now that nothing can fail is the history advanced.
        if self.solver_order > 1 {
            if self.model_outputs.len() == self.solver_order - 1 {
                self.model_outputs.remove(0);
            }
            self.model_outputs.push(x0.clone());
        }
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        self.next_step = Some(step_index + 1);
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// `α·original + σ·noise` at the σ of `timestep` in this schedule (the reference's
    /// `add_noise`; a timestep that is not in the schedule is an error here rather than the
    /// reference's silent fallback to the last one).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = index_for_timestep(&self.timesteps, timestep)?;
        let level = SigmaPoint::from_sigma(self.sigmas[index]);
        lincomb(original, level.alpha as f64, noise, level.sigma as f64)
    }

    fn reset(&mut self) {
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.next_step = None;
    }
}

/// Rejects the options of the reference class that diffsr does not implement.
fn reject_unsupported(config: &SchedulerConfig) -> Result<()> {
    reject_thresholding(config)?;
    reject_unsupported_sigmas(config, MultistepSolver::DpmSolver)?;
    // Other variance types (DDPM's `fixed_small`, ...) have no effect on this solver, as in the
    // reference; the learned ones mean a model that also outputs a variance.
    if let Some(kind @ ("learned" | "learned_range")) = config.variance_type.as_deref() {
        return Err(SchedulerError::config(
            "variance_type",
            format!("`{kind}` (a model that predicts its variance) is not supported"),
        ));
    }
    if config.use_karras_sigmas.unwrap_or(false) {
        // Karras σ's ignore λ clipping; the configured ends must be real noise levels.
        for (field, value) in [
            ("sigma_min", config.sigma_min),
            ("sigma_max", config.sigma_max),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0) {
                    return Err(SchedulerError::config(
                        field,
                        format!("must be a positive number, got {v}"),
                    ));
                }
            }
        }
    } else if let Some(bound) = config.lambda_min_clipped {
        if bound.is_nan() {
            return Err(SchedulerError::config(
                "lambda_min_clipped",
                "must be a number or -inf, got NaN",
            ));
        }
        if clipped_last_timestep(&training_schedule(config)?, Some(bound)) == 0 {
            return Err(SchedulerError::config(
                "lambda_min_clipped",
                format!("{bound} clips away every training timestep"),
            ));
        }
    }
    Ok(())
}

/// The f32 exponential, correctly rounded (through f64) so that it does not depend on the
/// platform's `expf`. torch's scalar `exp` is within an ulp of it and differs in about 1% of
/// arguments, as glibc's `expf` does.
fn exp_f32(x: f32) -> f32 {
    (x as f64).exp() as f32
}

/// Widens an f32 coefficient for [`Tensor::affine`], which applies it in the tensor's dtype.
fn f(c: f32) -> f64 {
    c as f64
}

/// `x + c·y`, the product rounded before the sum as torch does.
fn add_scaled(x: Tensor, y: &Tensor, c: f32) -> Result<Tensor> {
    Ok((x + y.affine(f(c), 0.0)?)?)
}

/// `x − c·y`, the product rounded before the difference as torch does.
fn sub_scaled(x: Tensor, y: &Tensor, c: f32) -> Result<Tensor> {
    Ok((x - y.affine(f(c), 0.0)?)?)
}

/// Adds the SDE's noise term `c·noise` when there is noise.
fn add_noise_term(x: Tensor, noise: Option<&Tensor>, c: f32) -> Result<Tensor> {
    match noise {
        Some(noise) => add_scaled(x, noise, c),
        None => Ok(x),
    }
}

/// `x / c` as an elementwise division (not a multiplication by `1/c`, which rounds
/// differently).
fn div_scalar(x: &Tensor, c: f32) -> Result<Tensor> {
    let divisor = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&divisor)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BetaSchedule, TimestepSpacing};
    use candle_core::Device;

    fn sd() -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            steps_offset: Some(1),
            ..Default::default()
        }
    }

    fn x4() -> SchedulerConfig {
        SchedulerConfig {
            beta_start: Some(0.0001),
            beta_end: Some(0.02),
            timestep_spacing: Some(TimestepSpacing::Leading),
            ..sd()
        }
    }

    fn cosine_clipped() -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: Some(BetaSchedule::SquaredcosCapV2),
            lambda_min_clipped: Some(-5.1),
            ..Default::default()
        }
    }

    fn timesteps(config: &SchedulerConfig, steps: usize) -> Vec<f64> {
        DpmSolverMultistep::new(config, steps)
            .unwrap()
            .timesteps()
            .to_vec()
    }

    fn with(config: SchedulerConfig, f: impl FnOnce(&mut SchedulerConfig)) -> SchedulerConfig {
        let mut config = config;
        f(&mut config);
        config
    }

    fn config_error(config: &SchedulerConfig) -> String {
        DpmSolverMultistep::new(config, 10).unwrap_err().to_string()
    }

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::from_slice(values, (1, 2, 2, 2), &Device::Cpu).unwrap()
    }

    // Every list below is what diffusers 0.42.1 `set_timesteps(10)` gives for the same config.

    #[test]
    fn linspace_timesteps_match_diffusers() {
        let expected = [999., 899., 799., 699., 599., 500., 400., 300., 200., 100.];
        assert_eq!(timesteps(&sd(), 10), expected);
    }

    #[test]
    fn leading_timesteps_match_diffusers() {
        let expected = [901., 811., 721., 631., 541., 451., 361., 271., 181., 91.];
        assert_eq!(timesteps(&x4(), 10), expected);
    }

    #[test]
    fn trailing_timesteps_match_diffusers() {
        let config = with(sd(), |c| {
            c.timestep_spacing = Some(TimestepSpacing::Trailing)
        });
        let expected = [999., 899., 799., 699., 599., 499., 399., 299., 199., 99.];
        assert_eq!(timesteps(&config, 10), expected);
    }

    #[test]
    fn karras_timesteps_match_diffusers() {
        let karras = |c: &mut SchedulerConfig| c.use_karras_sigmas = Some(true);
        let expected = [999., 916., 815., 687., 523., 327., 146., 41., 7., 0.];
        assert_eq!(timesteps(&with(sd(), karras), 10), expected);
        // Spacing and offset play no part once the σ's are Karras'.
        let expected = [999., 941., 869., 776., 648., 469., 259., 97., 17., 0.];
        assert_eq!(timesteps(&with(x4(), karras), 10), expected);
        // The cosine schedule truncates instead of rounding, and keeps the repeats.
        let cosine = SchedulerConfig {
            beta_schedule: Some(BetaSchedule::SquaredcosCapV2),
            use_karras_sigmas: Some(true),
            ..Default::default()
        };
        let expected = [998., 998., 998., 998., 997., 995., 983., 894., 259., 0.];
        assert_eq!(timesteps(&cosine, 10), expected);
    }

    #[test]
    fn lambda_clipping_moves_the_last_timestep() {
        let expected = [995., 896., 796., 696., 597., 498., 398., 298., 199., 100.];
        assert_eq!(timesteps(&cosine_clipped(), 10), expected);
        let trailing = with(cosine_clipped(), |c| {
            c.timestep_spacing = Some(TimestepSpacing::Trailing)
        });
        let expected = [995., 895., 795., 695., 595., 495., 395., 295., 195., 95.];
        assert_eq!(timesteps(&trailing, 10), expected);
    }

    #[test]
    fn sigmas_end_with_the_final_sigma() {
        let solver = DpmSolverMultistep::new(&sd(), 10).unwrap();
        let sigmas = solver.sigmas().unwrap();
        assert_eq!(sigmas.len(), 11);
        assert_eq!(sigmas[10], 0.0);
        assert!(sigmas.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(solver.init_noise_sigma(), 1.0);
        assert_eq!(solver.order(), 1);
        assert_eq!(solver.solver_order(), 2);

        let config = with(sd(), |c| c.final_sigmas_type = Some("sigma_min".into()));
        let solver = DpmSolverMultistep::new(&config, 10).unwrap();
        let first_training_sigma = crate::NoiseSchedule::from_config(&sd())
            .unwrap()
            .train_sigmas()[0];
        assert_eq!(solver.sigmas().unwrap()[10], first_training_sigma as f64);
    }

    #[test]
    fn kind_follows_the_config() {
        let kind = |config: &SchedulerConfig| DpmSolverMultistep::new(config, 5).unwrap().kind();
        assert_eq!(kind(&sd()), SchedulerKind::DpmPp2m);
        let karras = with(sd(), |c| c.use_karras_sigmas = Some(true));
        assert_eq!(kind(&karras), SchedulerKind::DpmPp2mKarras);
        let sde = with(sd(), |c| c.algorithm_type = Some("sde-dpmsolver++".into()));
        assert_eq!(kind(&sde), SchedulerKind::DpmPp2mSde);
    }

    #[test]
    fn noise_prediction_algorithms_are_refused() {
        for algorithm in ["dpmsolver", "sde-dpmsolver", "deis"] {
            let config = with(sd(), |c| c.algorithm_type = Some(algorithm.into()));
            let err = config_error(&config);
            assert!(
                err.contains("algorithm_type") && err.contains(algorithm),
                "{err}"
            );
        }
    }

    #[test]
    fn unsupported_options_are_named() {
        let cases: Vec<(&str, SchedulerConfig)> = vec![
            ("solver_order", with(sd(), |c| c.solver_order = Some(4))),
            ("solver_order", with(sd(), |c| c.solver_order = Some(0))),
            (
                "solver_type",
                with(sd(), |c| c.solver_type = Some("rk4".into())),
            ),
            ("thresholding", with(sd(), |c| c.thresholding = Some(true))),
            (
                "use_lu_lambdas",
                with(sd(), |c| c.use_lu_lambdas = Some(true)),
            ),
            (
                "use_exponential_sigmas",
                with(sd(), |c| c.use_exponential_sigmas = Some(true)),
            ),
            (
                "use_beta_sigmas",
                with(sd(), |c| c.use_beta_sigmas = Some(true)),
            ),
            (
                "use_flow_sigmas",
                with(sd(), |c| c.use_flow_sigmas = Some(true)),
            ),
            (
                "use_dynamic_shifting",
                with(sd(), |c| c.use_dynamic_shifting = Some(true)),
            ),
            (
                "variance_type",
                with(sd(), |c| c.variance_type = Some("learned_range".into())),
            ),
            (
                "final_sigmas_type",
                with(sd(), |c| c.final_sigmas_type = Some("one".into())),
            ),
            (
                "lambda_min_clipped",
                with(sd(), |c| c.lambda_min_clipped = Some(f64::NAN)),
            ),
            (
                "lambda_min_clipped",
                with(sd(), |c| c.lambda_min_clipped = Some(100.0)),
            ),
        ];
        for (field, config) in cases {
            let err = config_error(&config);
            assert!(
                err.contains(field),
                "expected an error naming {field}, got: {err}"
            );
        }
        // Settings the reference accepts and ignores (or rewrites) are accepted.
        for config in [
            with(x4(), |c| c.variance_type = Some("fixed_small".into())),
            with(sd(), |c| c.solver_type = Some("bh2".into())),
            with(sd(), |c| c.solver_type = Some("heun".into())),
        ] {
            DpmSolverMultistep::new(&config, 10).unwrap();
        }
    }

    #[test]
    fn steps_must_follow_each_other() {
        let mut solver = DpmSolverMultistep::new(&sd(), 10).unwrap();
        let x = tensor(&[0.5, -1.0, 0.25, 2.0, -0.75, 0.0, 1.5, -2.0]);
        solver.step(0, &x, &x, None).unwrap();
        let err = solver.step(2, &x, &x, None).unwrap_err().to_string();
        assert!(err.contains("step_index"), "{err}");
        let err = solver.step(0, &x, &x, None).unwrap_err().to_string();
        assert!(err.contains("step_index"), "{err}");
        solver.step(1, &x, &x, None).unwrap();
        assert!(solver.step(10, &x, &x, None).is_err());
        // After a reset a run may begin anywhere (diffusers' begin_index), with no history.
        solver.reset();
        solver.step(4, &x, &x, None).unwrap();
        solver.step(5, &x, &x, None).unwrap();
    }

    #[test]
    fn sde_steps_need_noise() {
        let config = with(sd(), |c| c.algorithm_type = Some("sde-dpmsolver++".into()));
        let mut solver = DpmSolverMultistep::new(&config, 4).unwrap();
        assert!((0..4).all(|i| solver.needs_noise(i)));
        assert!(!solver.needs_noise(4));
        let x = tensor(&[0.5, -1.0, 0.25, 2.0, -0.75, 0.0, 1.5, -2.0]);
        let err = solver.step(0, &x, &x, None).unwrap_err().to_string();
        assert!(err.contains("noise"), "{err}");
        // The failed call left no trace: step 0 can be taken again.
        solver.step(0, &x, &x, Some(&x)).unwrap();

        let ode = DpmSolverMultistep::new(&sd(), 4).unwrap();
        assert!((0..4).all(|i| !ode.needs_noise(i)));
    }

    #[test]
    fn final_step_lands_on_the_data_prediction() {
        // A model that always predicts the same clean sample: every order ends exactly on it,
        // since the last step to σ = 0 is first order.
        let target = tensor(&[0.5, -1.0, 0.25, 2.0, -0.75, 0.0, 1.5, -2.0]);
        for order in 1..=3 {
            let config = with(sd(), |c| {
                c.prediction_type = Some(PredictionType::Sample);
                c.solver_order = Some(order);
            });
            let mut solver = DpmSolverMultistep::new(&config, 20).unwrap();
            let mut x = target.affine(0.0, 3.0).unwrap();
            for i in 0..solver.num_inference_steps() {
                x = solver.step(i, &target, &x, None).unwrap().prev_sample;
            }
            let diff: Vec<f32> = (&x - &target)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(diff.iter().all(|d| *d == 0.0), "order {order}: {diff:?}");
        }
    }

    #[test]
    fn half_precision_steps_keep_the_model_dtype() {
        let config = with(sd(), |c| c.algorithm_type = Some("sde-dpmsolver++".into()));
        let mut solver = DpmSolverMultistep::new(&config, 3).unwrap();
        let x = tensor(&[0.5, -1.0, 0.25, 2.0, -0.75, 0.0, 1.5, -2.0]);
        let x16 = x.to_dtype(DType::F16).unwrap();
        let mut reference = solver.clone();
        for i in 0..3 {
            let out = solver.step(i, &x16, &x16, Some(&x16)).unwrap();
            assert_eq!(out.prev_sample.dtype(), DType::F16);
            let full = reference.step(i, &x, &x, Some(&x)).unwrap().prev_sample;
            let diff = (out.prev_sample.to_dtype(DType::F32).unwrap() - full)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-2, "step {i}: {diff}");
        }
    }

    #[test]
    fn add_noise_matches_diffusers() {
        let solver = DpmSolverMultistep::new(&sd(), 10).unwrap();
        let x: Vec<f32> = (0..8).map(|i| -1.0 + 2.0 * i as f32 / 7.0).collect();
        let noise: Vec<f32> = (0..8).map(|i| 1.0 - 1.5 * i as f32 / 7.0).collect();
        let noised = solver
            .add_noise(&tensor(&x), &tensor(&noise), 699.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // diffusers 0.42.1: add_noise(linspace(-1, 1, 8), linspace(1, -0.5, 8), timesteps[3]).
        let expected = [
            0.669_214_5,
            0.546_405_6,
            0.423_596_8,
            0.300_788,
            0.177_979_1,
            0.055_170_3,
            -0.067_638_5,
            -0.190_447_4,
        ];
        for (a, b) in noised.iter().zip(expected) {
            assert!((a - b).abs() <= 1e-6, "{noised:?}");
        }
        assert!(solver
            .add_noise(&tensor(&x), &tensor(&noise), 698.0)
            .is_err());
    }
}
