//! Inference timestep selection (`timestep_spacing`), as in diffusers' `set_timesteps`.
//!
//! DDIM and DDPM round to integers; the Euler family keeps f32 values (linspace spacing gives
//! fractional timesteps there). Both come back as f64 holding the exact value diffusers'
//! tensor holds, in descending order.

use crate::config::TimestepSpacing;
use crate::error::{Result, SchedulerError};
use crate::numpy_compat::{arange, linspace, round};

/// Checks `num_inference_steps` against the training length, the way every solver does.
pub fn check_step_count(num_inference_steps: usize, num_train_timesteps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        return Err(SchedulerError::argument(
            "num_inference_steps",
            "must be at least 1",
        ));
    }
    if num_inference_steps > num_train_timesteps {
        return Err(SchedulerError::argument(
            "num_inference_steps",
            format!(
                "{num_inference_steps} is more than the {num_train_timesteps} training timesteps"
            ),
        ));
    }
    Ok(())
}

/// Integer timesteps of DDIM / DDPM (`np.int64` in the reference).
pub fn integer_timesteps(
    spacing: TimestepSpacing,
    num_inference_steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let n = num_inference_steps;
    let train = num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(round)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(train, n, train),
    }
}

/// Float timesteps of the Euler family (`np.float32` in the reference).
pub fn float_timesteps(
    spacing: TimestepSpacing,
    num_inference_steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        // np.linspace(..., dtype=np.float32): computed in f64, stored in f32.
        TimestepSpacing::Linspace => {
            linspace(0.0, (num_train_timesteps - 1) as f64, num_inference_steps)
                .into_iter()
                .rev()
                .map(|t| t as f32 as f64)
                .collect()
        }
        _ => integer_timesteps(
            spacing,
            num_inference_steps,
            num_train_timesteps,
            steps_offset,
        ),
    }
}

/// `np.round(np.arange(last, 0, -train / n)) - 1`. numpy's float `arange` can yield one element
/// too many (for example 61 of 1000 steps), ending at timestep −1.
pub(crate) fn trailing(last_timestep: usize, n: usize, train: usize) -> Vec<f64> {
    let ratio = train as f64 / n as f64;
    arange(last_timestep as f64, 0.0, -ratio)
        .into_iter()
        .map(|t| round(t) - 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_with_offset_is_the_x4_upscaler_schedule() {
        let t = integer_timesteps(TimestepSpacing::Leading, 4, 1000, 1);
        assert_eq!(t, vec![751.0, 501.0, 251.0, 1.0]);
    }

    #[test]
    fn trailing_ends_at_the_last_training_step() {
        let t = integer_timesteps(TimestepSpacing::Trailing, 4, 1000, 0);
        assert_eq!(t, vec![999.0, 749.0, 499.0, 249.0]);
    }

    #[test]
    fn linspace_float_keeps_fractions() {
        let t = float_timesteps(TimestepSpacing::Linspace, 4, 1000, 0);
        assert_eq!(t, vec![999.0, 666.0, 333.0, 0.0]);
        let t = float_timesteps(TimestepSpacing::Linspace, 7, 1000, 0);
        assert_eq!(t[1], (999.0f64 * 5.0 / 6.0) as f32 as f64);
    }

    #[test]
    fn step_count_is_checked() {
        assert!(check_step_count(0, 1000).is_err());
        assert!(check_step_count(1001, 1000).is_err());
        assert!(check_step_count(1000, 1000).is_ok());
    }
}
