//! What a solver will do for a given config and step count: its timesteps, sigmas and initial
//! noise scale. Backs `diffsr schedule`, so a user can compare a diffsr schedule with
//! diffusers' `scheduler.timesteps` before spending minutes on an upscale.

use std::path::Path;

use serde::Serialize;

use crate::schedulers::{PredictionType, Result, SchedulerConfig, SchedulerKind, SolverOptions};

/// A solver's schedule for one run.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    pub scheduler: String,
    pub diffusers_class: String,
    pub num_inference_steps: usize,
    pub order: usize,
    pub init_noise_sigma: f64,
    pub timesteps: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigmas: Option<Vec<f64>>,
}

/// The base config a run uses: a `scheduler_config.json` when given, else the x4 upscaler's.
pub fn base_config(path: Option<&Path>) -> Result<SchedulerConfig> {
    match path {
        Some(path) => SchedulerConfig::from_file(path),
        None => Ok(SchedulerConfig::x4_upscaler()),
    }
}

/// Builds `kind` from `config` (as diffusers' `from_config` would) and reports its schedule.
pub fn report(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    prediction_type: Option<PredictionType>,
    num_inference_steps: usize,
    options: &SolverOptions,
) -> Result<ScheduleReport> {
    let mut config = config.clone();
    if prediction_type.is_some() {
        config.prediction_type = prediction_type;
    }
    let solver = kind.build(&config, num_inference_steps, options)?;
    Ok(ScheduleReport {
        scheduler: kind.name().to_string(),
        diffusers_class: kind.diffusers_class().to_string(),
        num_inference_steps: solver.num_inference_steps(),
        order: solver.order(),
        init_noise_sigma: solver.init_noise_sigma(),
        timesteps: solver.timesteps().to_vec(),
        sigmas: solver.sigmas().map(<[f64]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x4_ddim_schedule_is_leading_with_offset() {
        let config = base_config(None).unwrap();
        let r = report(
            SchedulerKind::Ddim,
            &config,
            None,
            4,
            &SolverOptions::default(),
        )
        .unwrap();
        assert_eq!(r.timesteps, vec![751.0, 501.0, 251.0, 1.0]);
        assert_eq!(r.init_noise_sigma, 1.0);
        assert!(r.sigmas.is_none());
    }

    #[test]
    fn euler_reports_sigmas() {
        let config = base_config(None).unwrap();
        let r = report(
            SchedulerKind::Euler,
            &config,
            None,
            5,
            &SolverOptions::default(),
        )
        .unwrap();
        let sigmas = r.sigmas.unwrap();
        assert_eq!(sigmas.len(), 6);
        assert_eq!(sigmas[5], 0.0);
        assert!(r.init_noise_sigma > sigmas[0]);
    }
}
