//! A planned run checked against the loaded engine before its first image. What a job asks
//! that the model refuses (a noise level above its `max_noise_level`, a step count its solver
//! refuses, a GAN tile below the network's overlap) would fail every image alike, so it is
//! refused once, before anything runs, instead of once per image.

use crate::error::{Error, Result};
use crate::upscaler::{EngineSettings, UpscaleParams, Upscaler};

use super::plan::Plan;

/// Runs [`Upscaler::check_params`] on the parameters of every job to run (once per distinct
/// set: the seed and prompts change nothing the check looks at). A manifest job's error names
/// its manifest line.
pub fn check_jobs(upscaler: &dyn Upscaler, plan: &Plan) -> Result<()> {
    let mut last: Option<UpscaleParams> = None;
    for job in &plan.jobs {
        let mut params = job.options.params(upscaler.engine());
        if let Some(EngineSettings::Diffusion(d)) = &mut params.settings {
            d.seed = 0;
            d.prompt.clear();
            d.negative_prompt.clear();
        }
        if last.as_ref() == Some(&params) {
            continue;
        }
        upscaler
            .check_params(&params)
            .map_err(|e| match &job.manifest_line {
                Some((path, line)) => Error::Manifest {
                    path: path.clone(),
                    line: *line,
                    message: super::manifest::job_message(&e),
                },
                None => e,
            })?;
        last = Some(params);
    }
    Ok(())
}
