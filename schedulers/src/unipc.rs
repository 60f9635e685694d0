//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
//! of Diffusion Models"), equal to diffusers' `UniPCMultistepScheduler`
//! (`scheduling_unipc_multistep.py`, diffusers 0.42.1): the UniP predictor of order 1 to 3
//! (diffusers takes any order; higher ones are refused here), the UniC corrector applied at the
//! start of the next step, B(h) variants bh1 / bh2, data (`predict_x0`) or noise prediction,
//! `lower_order_final`, `disable_corrector`, Karras sigmas and both final sigmas.
//!
//! The reference computes every coefficient on 0-d f32 tensors and solves the order-3+ linear
//! systems with f32 LAPACK; this port does the same scalar maths in f32 (with the same operation
//! order and the same LU pivoting), then applies the coefficients to the tensors in the
//! sample's dtype.
//!
//! Two deliberate departures, where diffusers produces non-finite output:
//!
//! - with `solver_type = "bh1"` and a zero final σ, the reference's last (first-order) step
//!   multiplies B(h) = h = −∞ by its empty correction term 0 and returns NaN; here an absent
//!   correction term contributes nothing, so the last step lands on the x₀ estimate as bh2's
//!   does;
//! - configurations whose last step is not finite in the reference (noise prediction,
//!   `predict_x0 = false`, with a zero final σ; `lower_order_final = false` with a last step of
//!   order ≥ 2 onto σ = 0, or of order ≥ 3 onto a repeated σ) are refused when the solver is
//!   built.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig};
use crate::ddim::reject_thresholding;
use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;
use crate::multistep_schedule::{
    expm1_f32, FinalSigma, MultistepSchedule, MultistepSolver, SigmaPoint,
};
use crate::scheduler::{
    check_in_order, check_same_shape, check_step_index, index_for_timestep, lincomb, Scheduler,
    StepOutput,
};

/// The B(h) of the UniPC updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    /// B(h) = h.
    Bh1,
    /// B(h) = eʰ − 1.
    Bh2,
}

impl SolverType {
    fn from_config(config: &SchedulerConfig) -> Result<Self> {
        match config.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => Ok(Self::Bh1),
            "bh2" => Ok(Self::Bh2),
            // DPM-Solver's solver types: the reference maps them to bh2 so that configs of
            // the other multistep solvers load.
            "midpoint" | "heun" | "logrho" => Ok(Self::Bh2),
            other => Err(SchedulerError::config(
                "solver_type",
                format!("`{other}` is not one of bh1, bh2"),
            )),
        }
    }
}

/// The UniPC multistep predictor-corrector.
#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// α, σ, λ of every σ (one more than the timesteps).
    points: Vec<SigmaPoint>,
    /// The forward process needs the σ's in the sample's dtype, as `add_noise` casts them.
    sigmas_f32: Vec<f32>,
    prediction: PredictionType,
    solver_order: usize,
    solver_type: SolverType,
    predict_x0: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    state: History,
}

/// What the solver carries from one step to the next.
#[derive(Debug, Clone, Default)]
struct History {
    /// Converted model outputs (x₀ or ε estimates), oldest first, at most `solver_order`.
    model_outputs: Vec<Tensor>,
    /// The (corrected) sample the last predictor started from.
    last_sample: Option<Tensor>,
    /// The order the last predictor used, which the next corrector reuses.
    this_order: usize,
    /// How many steps have run, capped at `solver_order` (the reference's `lower_order_nums`).
    lower_order_nums: usize,
    /// The step index the next `step` call must have, once a run has started.
    next_step: Option<usize>,
}

impl UniPcMultistep {
    /// Builds UniPC from `config` (defaults as diffusers' class: order 2, bh2, `predict_x0`,
    /// `lower_order_final`, linspace spacing, zero final σ) for `num_inference_steps` steps.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        reject_thresholding(config)?;
        if config.solver_p.as_ref().is_some_and(|p| !p.is_null()) {
            return Err(SchedulerError::config(
                "solver_p",
                "a separate predictor solver is not supported by diffsr; remove it",
            ));
        }
        let solver_order = config.solver_order.unwrap_or(2);
        if solver_order == 0 {
            return Err(SchedulerError::config(
                "solver_order",
                "must be at least 1 (UniPC supports orders 1 to 3)",
            ));
        }
        if solver_order > 3 {
            return Err(SchedulerError::config(
                "solver_order",
                format!("{solver_order} is not supported; UniPC in diffsr supports orders 1 to 3"),
            ));
        }
        let solver_type = SolverType::from_config(config)?;
        let predict_x0 = config.predict_x0.unwrap_or(true);
        let lower_order_final = config.lower_order_final.unwrap_or(true);
        let final_sigma = FinalSigma::from_config(config)?;
        let schedule = MultistepSchedule::new(config, num_inference_steps, MultistepSolver::UniPc)?;
        let points = schedule.points();
        let steps = schedule.timesteps.len();

        if !predict_x0 && final_sigma == FinalSigma::Zero {
            return Err(SchedulerError::config(
                "predict_x0",
                "false needs final_sigmas_type = \"sigma_min\": with a zero final sigma the \
                 reference's last noise-prediction step computes 0 × ∞ and returns NaN",
            ));
        }
        // The order of the last step: 1 with lower_order_final, else as high as the history
        // allows. From order 2 on it divides by r_k = Δλ / h, which is zero when h is infinite
        // (onto σ = 0); from order 3 on it also solves a system in the r_k, which is NaN when
        // h = 0 (onto a repeated σ: Karras with sigma_min). The reference returns ±∞ / NaN.
        let last_order = if lower_order_final {
            1
        } else {
            solver_order.min(steps)
        };
        let last_target = points[steps];
        let last_h = last_target.lambda - points[steps - 1].lambda;
        if (last_order >= 2 && last_h.is_infinite()) || (last_order >= 3 && last_h == 0.0) {
            return Err(SchedulerError::config(
                "lower_order_final",
                format!(
                    "false with solver_order {solver_order} makes the last step of order \
                     {last_order} onto σ = {}, where the reference's update is not finite \
                     (it returns inf or NaN); keep lower_order_final = true or use a lower \
                     solver_order",
                    last_target.sigma
                ),
            ));
        }

        Ok(Self {
            timesteps: schedule.timesteps.clone(),
            sigmas: schedule.sigmas_f64(),
            sigmas_f32: schedule.sigmas,
            points,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            solver_order,
            solver_type,
            predict_x0,
            lower_order_final,
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            state: History::default(),
        })
    }

    /// diffusers' `convert_model_output` at `step_index`: the x₀ estimate with `predict_x0`,
    /// else the ε estimate. Returns `(converted, x0)`, `x0` being what the step reports as its
    /// clean-sample estimate.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        step_index: usize,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.points[step_index];
        let (alpha, sigma) = (p.alpha as f64, p.sigma as f64);
        if self.predict_x0 {
            let x0 = match self.prediction {
                PredictionType::Epsilon => {
                    div_scalar(&lincomb(sample, 1.0, model_output, -sigma)?, p.alpha)?
                }
                PredictionType::Sample => model_output.clone(),
                PredictionType::VPrediction => lincomb(sample, alpha, model_output, -sigma)?,
            };
            return Ok((x0.clone(), x0));
        }
        let eps = match self.prediction {
            PredictionType::Epsilon => model_output.clone(),
            PredictionType::Sample => {
                div_scalar(&lincomb(sample, 1.0, model_output, -alpha)?, p.sigma)?
            }
            PredictionType::VPrediction => lincomb(model_output, alpha, sample, sigma)?,
        };
        let x0 = match self.prediction {
            PredictionType::Sample => model_output.clone(),
            _ => div_scalar(&lincomb(sample, 1.0, &eps, -sigma)?, p.alpha)?,
        };
        Ok((eps, x0))
    }

    /// The f32 coefficients of one UniP / UniC update from σ index `s0` to `t`, using the
    /// earlier σ indices `earlier` (most recent first) for the higher-order differences.
    fn coefficients(&self, t: usize, s0: usize, earlier: &[usize]) -> Coefficients {
        let pt = self.points[t];
        let ps0 = self.points[s0];
        let h = pt.lambda - ps0.lambda;
        let rks: Vec<f32> = earlier
            .iter()
            .map(|&s| (self.points[s].lambda - ps0.lambda) / h)
            .collect();
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = expm1_f32(hh);
        let b_h = match self.solver_type {
            SolverType::Bh1 => hh,
            SolverType::Bh2 => h_phi_1,
        };
        // b_i = i! φ_{i+1}(hh) / B(h), with φ computed by the reference's recurrence
        // φ_{k+1} = φ_k / hh − 1 / (k+1)!.
        let order = earlier.len() + 1;
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial: u64 = 1;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order as u64 {
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }
        // R[i][k] = r_k^i with r = (rks..., 1): the reference's `torch.pow(rks, i)`.
        let mut nodes = rks.clone();
        nodes.push(1.0);
        let r = (0..order)
            .map(|i| nodes.iter().map(|&x| pow_f32(x, i)).collect())
            .collect();
        let (c_sample, c_m0, c_res) = if self.predict_x0 {
            (pt.sigma / ps0.sigma, pt.alpha * h_phi_1, pt.alpha * b_h)
        } else {
            (pt.alpha / ps0.alpha, pt.sigma * h_phi_1, pt.sigma * b_h)
        };
        Coefficients {
            rks,
            b,
            r,
            c_sample,
            c_m0,
            c_res,
        }
    }

    /// `(m_k − m0) / r_k` for each earlier model output (the reference's `D1s`).
    fn differences(history: &[Tensor], rks: &[f32]) -> Result<Vec<Tensor>> {
        let m0 = &history[history.len() - 1];
        rks.iter()
            .enumerate()
            .map(|(k, &rk)| {
                let mk = &history[history.len() - 2 - k];
                div_scalar(&(mk - m0)?, rk)
            })
            .collect()
    }

    /// The UniP predictor (`multistep_uni_p_bh_update`) of `order` from step `step_index`'s
    /// σ to the next, `history` holding this step's converted output last.
    fn predict(
        &self,
        step_index: usize,
        history: &[Tensor],
        sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        let earlier: Vec<usize> = (1..order).map(|k| step_index - k).collect();
        let c = self.coefficients(step_index + 1, step_index, &earlier);
        let m0 = &history[history.len() - 1];
        let base = lincomb(sample, c.c_sample as f64, m0, -(c.c_m0 as f64))?;
        let d1s = Self::differences(history, &c.rks)?;
        if d1s.is_empty() {
            // The reference subtracts c_res × 0 here (NaN when c_res is infinite, see the
            // module docs); the empty correction contributes nothing.
            return Ok(base);
        }
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            // Solve R[:-1, :-1] ρ = b[:-1]. The slice is not contiguous, so torch factors R
            // itself.
            let k = order - 1;
            let a: Vec<Vec<f32>> = c.r[..k].iter().map(|row| row[..k].to_vec()).collect();
            lu_solve(a, &c.b[..k], false).ok_or_else(|| singular(step_index, "predictor"))?
        };
        let residual = weighted_sum(&rhos, &d1s)?;
        Ok((base - residual.affine(c.c_res as f64, 0.0)?)?)
    }

    /// The UniC corrector (`multistep_uni_c_bh_update`) at step `step_index`: refines the
    /// sample the last predictor produced, given this step's converted model output.
    fn correct(
        &self,
        step_index: usize,
        this_output: &Tensor,
        last_sample: &Tensor,
    ) -> Result<Tensor> {
        let order = self.state.this_order;
        let history = &self.state.model_outputs;
        let earlier: Vec<usize> = (1..order).map(|k| step_index - 1 - k).collect();
        let c = self.coefficients(step_index, step_index - 1, &earlier);
        let m0 = &history[history.len() - 1];
        let base = lincomb(last_sample, c.c_sample as f64, m0, -(c.c_m0 as f64))?;
        let d1s = Self::differences(history, &c.rks)?;
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            // Solve R ρ = b. R is contiguous, so torch factors Rᵀ and solves transposed.
            lu_solve(c.r.clone(), &c.b, true).ok_or_else(|| singular(step_index, "corrector"))?
        };
        let d1_t = (this_output - m0)?;
        let last_term = d1_t.affine(rhos[order - 1] as f64, 0.0)?;
        let correction = if d1s.is_empty() {
            last_term
        } else {
            (weighted_sum(&rhos[..order - 1], &d1s)? + last_term)?
        };
        Ok((base - correction.affine(c.c_res as f64, 0.0)?)?)
    }
}

/// The per-update scalars, all f32 as in the reference.
struct Coefficients {
    /// (λ_{s_k} − λ_{s0}) / h for the earlier steps.
    rks: Vec<f32>,
    /// The right-hand side b of the order conditions.
    b: Vec<f32>,
    /// The Vandermonde-like matrix R of the order conditions.
    r: Vec<Vec<f32>>,
    /// The update is `c_sample · x − c_m0 · m0 − c_res · Σ ρ_k D_k`.
    c_sample: f32,
    c_m0: f32,
    c_res: f32,
}

impl Scheduler for UniPcMultistep {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::UniPc
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let steps = self.timesteps.len();
        check_step_index(step_index, steps)?;
        check_in_order(self.state.next_step, step_index)?;
        check_same_shape(model_output, sample)?;
        let (converted, x0) = self.convert_model_output(model_output, sample, step_index)?;

        let use_corrector = step_index > 0 && !self.disable_corrector.contains(&(step_index - 1));
        let sample = match (&self.state.last_sample, use_corrector) {
            (Some(last), true) => self.correct(step_index, &converted, last)?,
            _ => sample.clone(),
        };

        let mut history = self.state.model_outputs.clone();
        if history.len() == self.solver_order {
            history.remove(0);
        }
        history.push(converted);
        let mut this_order = if self.lower_order_final {
            self.solver_order.min(steps - step_index)
        } else {
            self.solver_order
        };
        this_order = this_order.min(self.state.lower_order_nums + 1);
        let prev_sample = self.predict(step_index, &history, &sample, this_order)?;

        // Only now that nothing can fail is the history advanced.
        self.state = History {
            model_outputs: history,
            last_sample: Some(sample),
            this_order,
            lower_order_nums: (self.state.lower_order_nums + 1).min(self.solver_order),
            next_step: Some(step_index + 1),
        };
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = index_for_timestep(&self.timesteps, timestep)?;
        let p = SigmaPoint::from_sigma(self.sigmas_f32[index]);
        lincomb(original, p.alpha as f64, noise, p.sigma as f64)
    }

    fn reset(&mut self) {
        self.state = History::default();
    }
}

/// `tensor / value` as a true division in the tensor's dtype (the reference divides by 0-d
/// tensors; multiplying by a rounded reciprocal would differ in the last bit).
fn div_scalar(tensor: &Tensor, value: f32) -> Result<Tensor> {
    let divisor = Tensor::new(value, tensor.device())?.to_dtype(tensor.dtype())?;
    Ok(tensor.broadcast_div(&divisor)?)
}

/// `Σ_k weights[k] · terms[k]` (the reference's `einsum('k,bkc...->bc...')`).
fn weighted_sum(weights: &[f32], terms: &[Tensor]) -> Result<Tensor> {
    let mut sum = terms[0].affine(weights[0] as f64, 0.0)?;
    for (w, term) in weights.iter().zip(terms).skip(1) {
        sum = (sum + term.affine(*w as f64, 0.0)?)?;
    }
    Ok(sum)
}

/// `torch.pow(x, i)` on f32 for the small integer exponents of the order conditions.
fn pow_f32(x: f32, i: usize) -> f32 {
    match i {
        0 => 1.0,
        1 => x,
        2 => x * x,
        3 => x * x * x,
        _ => (x as f64).powi(i as i32) as f32,
    }
}

/// Solves `a x = b` in f32 as `torch.linalg.solve` does on the CPU: LAPACK's partial-pivoting
/// LU (`getrf`, multipliers scaled by the pivot's reciprocal) and `getrs`. With `transposed`,
/// the factored matrix is aᵀ and the system is solved through the transposed factors, which is
/// what torch does for a contiguous `a`. `None` when a pivot is exactly zero (torch raises).
fn lu_solve(a: Vec<Vec<f32>>, b: &[f32], transposed: bool) -> Option<Vec<f32>> {
    let n = b.len();
    let mut m = if transposed {
        (0..n).map(|i| (0..n).map(|j| a[j][i]).collect()).collect()
    } else {
        a
    };
    let mut pivots = vec![0usize; n];
    for k in 0..n {
        // The first entry of largest magnitude, as `isamax` picks it.
        let mut p = k;
        for i in k + 1..n {
            if m[i][k].abs() > m[p][k].abs() {
                p = i;
            }
        }
        pivots[k] = p;
        if m[p][k] == 0.0 {
            return None;
        }
        m.swap(k, p);
        let pivot = m[k][k];
        if pivot.abs() >= f32::MIN_POSITIVE {
            let inv = 1.0 / pivot;
            for row in m.iter_mut().skip(k + 1) {
                row[k] *= inv;
            }
        } else {
            for row in m.iter_mut().skip(k + 1) {
                row[k] /= pivot;
            }
        }
        for i in k + 1..n {
            for j in k + 1..n {
                m[i][j] -= m[i][k] * m[k][j];
            }
        }
    }
    let mut x = b.to_vec();
    if transposed {
        // (P L U)ᵀ x = b: solve Uᵀ y = b, then Lᵀ z = y, then undo the row swaps backwards.
        for i in 0..n {
            let mut v = x[i];
            for k in 0..i {
                v -= m[k][i] * x[k];
            }
            x[i] = v / m[i][i];
        }
        for i in (0..n).rev() {
            let mut v = x[i];
            for k in i + 1..n {
                v -= m[k][i] * x[k];
            }
            x[i] = v;
        }
        for k in (0..n).rev() {
            x.swap(k, pivots[k]);
        }
    } else {
        // P L U x = b: apply the swaps, then solve L y = Pb and U x = y column by column.
        for (k, &p) in pivots.iter().enumerate() {
            x.swap(k, p);
        }
        for k in 0..n {
            for i in k + 1..n {
                x[i] -= x[k] * m[i][k];
            }
        }
        for k in (0..n).rev() {
            x[k] /= m[k][k];
            for i in 0..k {
                x[i] -= x[k] * m[i][k];
            }
        }
    }
    Some(x)
}

fn singular(step_index: usize, which: &str) -> SchedulerError {
    SchedulerError::argument(
        "step_index",
        format!("step {step_index}: the UniPC {which} order conditions are singular"),
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The usual Stable Diffusion training constants, plus `extra` JSON fields.
    fn sd(extra: &str) -> SchedulerConfig {
        let sep = if extra.is_empty() { "" } else { "," };
        SchedulerConfig::from_json_str(&format!(
            r#"{{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                "steps_offset": 1{sep} {extra}}}"#
        ))
        .unwrap()
    }

    fn x4(extra: &str) -> SchedulerConfig {
        let mut config = SchedulerConfig::x4_upscaler();
        let extra = sd(extra);
        config.use_karras_sigmas = extra.use_karras_sigmas;
        config
    }

    fn timesteps(config: &SchedulerConfig, steps: usize) -> Vec<f64> {
        UniPcMultistep::new(config, steps)
            .unwrap()
            .timesteps()
            .to_vec()
    }

    fn config_error(config: &SchedulerConfig, steps: usize) -> String {
        UniPcMultistep::new(config, steps).unwrap_err().to_string()
    }

    /// The dummy model of the parity fixtures: `0.8 sin(x) + 0.05 (t / 1000) x`.
    fn model(x: &Tensor, t: f64) -> Tensor {
        let coeff = 0.05f32 * (t as f32 / 1000.0);
        (x.sin().unwrap().affine(0.8, 0.0).unwrap() + x.affine(coeff as f64, 0.0).unwrap()).unwrap()
    }

    fn run(solver: &mut UniPcMultistep, start: &[f32]) -> Vec<f32> {
        let mut x = Tensor::from_slice(start, (1, start.len()), &Device::Cpu).unwrap();
        let ts = solver.timesteps().to_vec();
        for (i, &t) in ts.iter().enumerate() {
            let out = model(&solver.scale_model_input(&x, i).unwrap(), t);
            x = solver.step(i, &out, &x, None).unwrap().prev_sample;
        }
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(ours: &[f32], reference: &[f32]) {
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(reference) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{ours:?} vs diffusers {reference:?}"
            );
        }
    }

    // Timestep lists printed by diffusers 0.42.1's UniPCMultistepScheduler.set_timesteps.

    #[test]
    fn linspace_is_the_default_spacing() {
        assert_eq!(
            timesteps(&sd(""), 10),
            [999., 899., 799., 699., 599., 500., 400., 300., 200., 100.]
        );
        assert_eq!(
            timesteps(&SchedulerConfig::default(), 7),
            [999., 856., 714., 571., 428., 285., 143.]
        );
    }

    #[test]
    fn leading_spacing_of_the_x4_upscaler() {
        assert_eq!(
            timesteps(&x4(""), 10),
            [901., 811., 721., 631., 541., 451., 361., 271., 181., 91.]
        );
    }

    #[test]
    fn trailing_spacing_keeps_numpys_extra_step() {
        let trailing = sd(r#""timestep_spacing": "trailing""#);
        assert_eq!(
            timesteps(&trailing, 10),
            [999., 899., 799., 699., 599., 499., 399., 299., 199., 99.]
        );
        let t = timesteps(&trailing, 61);
        assert_eq!(t.len(), 62);
        assert_eq!(t[58..], [48., 32., 15., -1.]);
    }

    #[test]
    fn karras_timesteps_and_final_sigma() {
        let karras = sd(r#""use_karras_sigmas": true"#);
        assert_eq!(
            timesteps(&karras, 10),
            [999., 916., 815., 687., 523., 327., 146., 41., 7., 0.]
        );
        assert_eq!(
            timesteps(&x4(r#""use_karras_sigmas": true"#), 6),
            [999., 884., 705., 385., 75., 0.]
        );
        let solver = UniPcMultistep::new(
            &sd(r#""use_karras_sigmas": true, "final_sigmas_type": "sigma_min""#),
            5,
        )
        .unwrap();
        assert_eq!(solver.timesteps(), [999., 786., 427., 59., 0.]);
        // UniPC repeats the last Karras σ as the final one (DPM-Solver uses the training σ₀).
        let sigmas = solver.sigmas().unwrap();
        assert_eq!(sigmas.len(), 6);
        assert_eq!(sigmas[5], sigmas[4]);
        assert!((sigmas[0] - 14.61465).abs() < 1e-4 && (sigmas[4] - 0.02917).abs() < 1e-5);
    }

    #[test]
    fn zero_snr_floors_the_last_alpha() {
        let config = sd(r#""timestep_spacing": "trailing", "rescale_betas_zero_snr": true"#);
        let solver = UniPcMultistep::new(&config, 5).unwrap();
        assert_eq!(solver.timesteps(), [999., 799., 599., 399., 199.]);
        // σ = sqrt((1 − 2⁻²⁴) / 2⁻²⁴) ≈ 4096.
        assert!((solver.sigmas().unwrap()[0] - 4095.99976).abs() < 1e-3);
    }

    // Whole runs against values diffusers 0.42.1 printed for a 4-element sample.

    #[test]
    fn third_order_bh1_matches_diffusers() {
        let config = sd(
            r#""solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min",
               "prediction_type": "v_prediction""#,
        );
        let mut solver = UniPcMultistep::new(&config, 6).unwrap();
        assert_eq!(solver.timesteps(), [999., 832., 666., 500., 333., 166.]);
        let out = run(&mut solver, &[0.5, -1.0, 2.0, 0.25]);
        assert_close(&out, &[0.13356055, -0.28387675, 0.7736429, 0.06582512]);
    }

    #[test]
    fn karras_with_a_disabled_corrector_matches_diffusers() {
        let config = sd(
            r#""timestep_spacing": "trailing", "use_karras_sigmas": true, "disable_corrector": [1]"#,
        );
        let mut solver = UniPcMultistep::new(&config, 5).unwrap();
        let out = run(&mut solver, &[0.5, -1.0, 2.0, 0.25]);
        assert_close(&out, &[0.31375903, -4.009918, 29.030706, 0.13292229]);
    }

    #[test]
    fn noise_prediction_matches_diffusers() {
        let config = sd(
            r#""predict_x0": false, "final_sigmas_type": "sigma_min", "prediction_type": "sample""#,
        );
        let mut solver = UniPcMultistep::new(&config, 4).unwrap();
        let out = run(&mut solver, &[0.5, -1.0, 2.0, 0.25]);
        assert_close(&out, &[0.5229076, -0.7779033, 0.829306, 0.2894815]);
    }

    #[test]
    fn reset_replays_the_same_run() {
        let mut solver = UniPcMultistep::new(&sd(r#""solver_order": 3"#), 8).unwrap();
        let first = run(&mut solver, &[0.3, -0.7, 1.1, 2.0]);
        solver.reset();
        assert_eq!(run(&mut solver, &[0.3, -0.7, 1.1, 2.0]), first);
    }

    #[test]
    fn zero_final_sigma_lands_on_the_x0_estimate_for_both_b_functions() {
        for solver_type in ["bh1", "bh2"] {
            let config = sd(&format!(r#""solver_type": "{solver_type}""#));
            let mut solver = UniPcMultistep::new(&config, 3).unwrap();
            let mut x = Tensor::new(&[[0.5f32, -1.0, 2.0]], &Device::Cpu).unwrap();
            let ts = solver.timesteps().to_vec();
            for (i, &t) in ts.iter().enumerate() {
                let out = solver.step(i, &model(&x, t), &x, None).unwrap();
                x = out.prev_sample;
                let values: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                assert!(
                    values.iter().all(|v| v.is_finite()),
                    "{solver_type}: {values:?}"
                );
                if i + 1 == ts.len() {
                    let x0: Vec<f32> = out
                        .pred_original_sample
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert_eq!(values, x0);
                }
            }
        }
    }

    #[test]
    fn dpm_solver_types_load_as_bh2() {
        let bh2 = run(&mut UniPcMultistep::new(&sd(""), 5).unwrap(), &[0.5, 1.5]);
        let midpoint = sd(r#""solver_type": "midpoint""#);
        assert_eq!(
            run(&mut UniPcMultistep::new(&midpoint, 5).unwrap(), &[0.5, 1.5]),
            bh2
        );
    }

    #[test]
    fn reports_constant_attributes() {
        let solver = UniPcMultistep::new(&sd(r#""solver_order": 3"#), 10).unwrap();
        assert_eq!(solver.kind(), SchedulerKind::UniPc);
        assert_eq!(solver.order(), 1);
        assert_eq!(solver.init_noise_sigma(), 1.0);
        assert!(!solver.needs_noise(0));
        assert_eq!(solver.sigmas().unwrap().len(), 11);
        assert_eq!(*solver.sigmas().unwrap().last().unwrap(), 0.0);
    }

    #[test]
    fn unsupported_options_are_refused_by_name() {
        for field in [
            "thresholding",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
        ] {
            let err = config_error(&sd(&format!(r#""{field}": true"#)), 10);
            assert!(err.contains(field), "{err}");
        }
        for (extra, field) in [
            (r#""solver_order": 0"#, "solver_order"),
            (r#""solver_order": 4"#, "solver_order"),
            (r#""solver_type": "bh3""#, "solver_type"),
            (r#""final_sigmas_type": "one""#, "final_sigmas_type"),
            // Both would make diffusers' last step NaN / inf.
            (r#""predict_x0": false"#, "predict_x0"),
            (r#""lower_order_final": false"#, "lower_order_final"),
        ] {
            let err = config_error(&sd(extra), 10);
            assert!(err.contains(field), "{extra}: {err}");
        }
        // Fine with a non-zero final σ, or when the last step is first order anyway.
        let config = sd(r#""lower_order_final": false, "final_sigmas_type": "sigma_min""#);
        assert!(UniPcMultistep::new(&config, 10).is_ok());
        assert!(UniPcMultistep::new(&sd(r#""lower_order_final": false"#), 1).is_ok());
        assert!(
            UniPcMultistep::new(&sd(r#""lower_order_final": false, "solver_order": 1"#), 10)
                .is_ok()
        );
    }

    #[test]
    fn bad_step_counts_are_refused() {
        for steps in [0, 1001] {
            assert!(config_error(&sd(""), steps).contains("num_inference_steps"));
        }
        // 1000 linspace steps repeat a timestep, hence a σ: the update would divide by zero.
        assert!(config_error(&sd(""), 1000).contains("num_inference_steps"));
    }

    #[test]
    fn steps_must_come_in_order() {
        let mut solver = UniPcMultistep::new(&sd(""), 4).unwrap();
        let x = Tensor::new(&[[0.5f32, -1.0]], &Device::Cpu).unwrap();
        // A run may begin at any step (img2img), then must go on in order.
        solver.step(2, &x, &x, None).unwrap();
        let err = solver.step(1, &x, &x, None).unwrap_err().to_string();
        assert!(err.contains("step_index"), "{err}");
        solver.reset();
        solver.step(0, &x, &x, None).unwrap();
        // A failed step leaves the history untouched.
        let wrong = Tensor::new(&[[0.5f32, -1.0, 3.0]], &Device::Cpu).unwrap();
        assert!(solver.step(1, &wrong, &x, None).is_err());
        solver.step(1, &x, &x, None).unwrap();
        assert!(solver.step(1, &x, &x, None).is_err());
        assert!(solver
            .step(4, &x, &x, None)
            .unwrap_err()
            .to_string()
            .contains("step_index"));
        solver.reset();
        solver.step(0, &x, &x, None).unwrap();
    }

    #[test]
    fn add_noise_uses_the_schedule_sigma() {
        let solver = UniPcMultistep::new(&sd(""), 10).unwrap();
        let x = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let noise = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let noisy: Vec<f32> = solver
            .add_noise(&x, &noise, 500.0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let p = SigmaPoint::from_sigma(solver.sigmas_f32[5]);
        assert_eq!(noisy, [p.alpha + p.sigma]);
        assert!(solver.add_noise(&x, &noise, 501.0).is_err());
    }

    #[test]
    fn lu_solve_pivots_like_lapack() {
        let a = vec![
            vec![1.0f32, 1.0, 1.0],
            vec![-0.5, 1.0, 2.0],
            vec![0.25, 1.0, 4.0],
        ];
        let b = [1.0f32, 0.5, 0.25];
        for transposed in [false, true] {
            let x = lu_solve(a.clone(), &b, transposed).unwrap();
            for (row, &rhs) in a.iter().zip(&b) {
                let lhs: f32 = row.iter().zip(&x).map(|(r, v)| r * v).sum();
                assert!((lhs - rhs).abs() < 1e-6, "{x:?}");
            }
        }
        assert!(lu_solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], &[1.0, 1.0], false).is_none());
    }
}
