//! The one object-safe solver contract, after diffusers' `set_timesteps` / `scale_model_input` /
//! `step` / `add_noise`, with two deliberate differences:
//!
//! - `step` takes the step index rather than looking the timestep up in the schedule, so
//!   duplicate timesteps and restarts are unambiguous;
//! - stochastic solvers never draw noise themselves: the caller owns the random generator and
//!   passes noise of the sample's shape whenever [`Scheduler::needs_noise`] says so, in the same
//!   order diffusers draws it. Runs are reproducible and tests can inject noise.

use candle_core::Tensor;

use crate::error::{Result, SchedulerError};
use crate::kind::SchedulerKind;

/// The result of one solver step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the next (less noisy) timestep.
    pub prev_sample: Tensor,
    /// The solver's estimate of the clean sample at this step.
    pub pred_original_sample: Tensor,
}

/// A denoising solver whose timesteps are already set for a number of inference steps.
pub trait Scheduler: Send + Sync {
    /// Which solver this is.
    fn kind(&self) -> SchedulerKind;

    /// The timesteps the model is called at, in order (f32-exact values, as diffusers' tensor).
    fn timesteps(&self) -> &[f64];

    /// Noise levels of σ-based solvers, one more than the timesteps (the last is the final
    /// sigma); `None` for solvers that are not σ-based.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// How many steps the solver runs: the length of [`Scheduler::timesteps`].
    fn num_inference_steps(&self) -> usize {
        self.timesteps().len()
    }

    /// The standard deviation the initial noise is multiplied by (1 unless σ-based).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The solver's order (diffusers' `order` attribute: 1 for every solver here, including
    /// the multistep ones, whose steps each cost one model call).
    fn order(&self) -> usize {
        1
    }

    /// Scales the model input at `step_index`: the identity unless σ-based (`x / sqrt(σ²+1)`).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps().len())?;
        Ok(sample.clone())
    }

    /// Whether [`Scheduler::step`] at `step_index` consumes caller-supplied noise.
    fn needs_noise(&self, _step_index: usize) -> bool {
        false
    }

    /// Advances `sample` from timestep `step_index` to the next one given the model output.
    /// `noise` must be given (with the sample's shape) exactly when `needs_noise(step_index)`.
    fn step(
        &mut self,
        step_index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput>;

    /// Noises a clean sample to training timestep `timestep` (forward process), as the
    /// solver's `add_noise` does.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timestep: f64) -> Result<Tensor>;

    /// Forgets multistep history so the same timesteps can be run again on a new sample.
    fn reset(&mut self) {}
}

/// Checks a step index against the schedule length.
pub(crate) fn check_step_index(step_index: usize, num_steps: usize) -> Result<()> {
    if step_index >= num_steps {
        return Err(SchedulerError::argument(
            "step_index",
            format!("{step_index} is past the last step ({num_steps} steps)"),
        ));
    }
    Ok(())
}

/// Multistep solvers carry history from step to step: after the first step of a run (which may
/// be any index, as diffusers' `begin_index` allows for img2img-style partial runs), every step
/// must be the one after the last.
pub(crate) fn check_in_order(next_step: Option<usize>, step_index: usize) -> Result<()> {
    match next_step {
        Some(expected) if step_index != expected => Err(SchedulerError::argument(
            "step_index",
            format!(
                "{step_index} is out of order: this multistep solver keeps the history of the \
                 steps before and expects step {expected} next (call reset() to start a new run)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Returns the caller's noise when the step needs it, checking its shape; errors when it is
/// missing. Noise given to a step that does not need it is ignored.
pub(crate) fn required_noise<'a>(
    needed: bool,
    noise: Option<&'a Tensor>,
    sample: &Tensor,
) -> Result<Option<&'a Tensor>> {
    if !needed {
        return Ok(None);
    }
    let noise = noise.ok_or_else(|| {
        SchedulerError::argument(
            "noise",
            "this stochastic step needs caller-supplied noise of the sample's shape",
        )
    })?;
    if noise.dims() != sample.dims() {
        return Err(SchedulerError::argument(
            "noise",
            format!(
                "shape {:?} differs from the sample's {:?}",
                noise.dims(),
                sample.dims()
            ),
        ));
    }
    Ok(Some(noise))
}

/// Checks that the model output can be combined with the sample.
pub(crate) fn check_same_shape(model_output: &Tensor, sample: &Tensor) -> Result<()> {
    if model_output.dims() != sample.dims() {
        return Err(SchedulerError::argument(
            "model_output",
            format!(
                "shape {:?} differs from the sample's {:?}",
                model_output.dims(),
                sample.dims()
            ),
        ));
    }
    Ok(())
}

/// `a * ca + b * cb`, each scalar applied in the tensors' dtype as torch does.
pub(crate) fn lincomb(a: &Tensor, ca: f64, b: &Tensor, cb: f64) -> Result<Tensor> {
    Ok((a.affine(ca, 0.0)? + b.affine(cb, 0.0)?)?)
}

/// Looks a training timestep up in a σ schedule's timesteps (diffusers' `index_for_timestep`:
/// the second match when a timestep occurs twice).
pub(crate) fn index_for_timestep(timesteps: &[f64], timestep: f64) -> Result<usize> {
    let matches: Vec<usize> = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Err(SchedulerError::argument(
            "timestep",
            format!("{timestep} is not one of this schedule's timesteps"),
        )),
        [only] => Ok(*only),
        [_, second, ..] => Ok(*second),
    }
}
