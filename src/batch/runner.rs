//! Running planned jobs through one loaded pipeline, in order. A failed job is reported and
//! the run goes on; outputs are written whole (temporary file, then rename) only after their
//! last step (a PNG output too large to hold is streamed into its temporary file row by row
//! as the tiles finish, and renamed the same way at the end), so a cancelled or failed job
//! leaves no partial file and a rerun with `--skip-existing` redoes exactly the unfinished ones
//! (and removes a killed run's temporary files).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::image_io::{
    load_image, save_result, stream_result, GenerationInfo, OutputFormat, WrittenImage,
};
use crate::scale_plan::PlannedUpscaler;
use crate::upscaler::{Engine, StepProgress, UpscaleRequest, Upscaler};

use super::plan::{Job, Plan};
use super::{Event, Failure, Summary};

/// How results are written and described.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// `None`: from each output's extension.
    pub format: Option<OutputFormat>,
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// The model as given (repo id or folder), for the outputs' metadata.
    pub model: String,
    /// The hub revision (commit) the model resolved to, if it came from the hub.
    pub revision: Option<String>,
}

/// Runs `plan`'s jobs with `pipeline`, reporting through `on_event` (skips first, a summary
/// last). Temporary files a killed run left for the plan's outputs (skipped ones included)
/// are removed first ([`Plan::remove_stale_partials`]). `cancel` is read before each job and
/// after each denoising step: once set, the job in progress stops at the step boundary,
/// nothing of it is written, and no further job starts.
pub fn run_jobs(
    upscaler: &PlannedUpscaler<'_>,
    plan: &Plan,
    settings: &RunSettings,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Summary {
    let started = Instant::now();
    // A killed run's temporary files for these outputs go before anything else is written.
    plan.remove_stale_partials();
    let mut summary = Summary {
        total: plan.jobs.len() + plan.skipped.len(),
        skipped: plan.skipped.len(),
        ..Summary::default()
    };
    for job in &plan.skipped {
        on_event(&Event::Skipped {
            index: job.index,
            input: job.input.clone(),
            output: job.output.clone(),
        });
    }
    for (i, job) in plan.jobs.iter().enumerate() {
        if cancel.load(Ordering::SeqCst) {
            summary.cancelled = true;
            summary.not_started = plan.jobs.len() - i;
            break;
        }
        on_event(&Event::Started {
            index: job.index,
            position: i + 1,
            count: plan.jobs.len(),
            input: job.input.clone(),
            output: job.output.clone(),
            seed: job.options.diffusion.seed,
            steps: job.options.diffusion.steps,
        });
        let job_started = Instant::now();
        match run_one(upscaler, job, settings, cancel, on_event) {
            Ok(written) => {
                if written.alpha_dropped {
                    on_event(&Event::Note {
                        index: job.index,
                        message: format!(
                            "{} has an alpha channel, which the output format cannot hold; \
                             it is dropped",
                            job.input.display()
                        ),
                    });
                }
                summary.done += 1;
                on_event(&Event::Done {
                    index: job.index,
                    input: job.input.clone(),
                    output: job.output.clone(),
                    width: written.width,
                    height: written.height,
                    seconds: job_started.elapsed().as_secs_f64(),
                });
            }
            Err(Error::Cancelled) => {
                summary.cancelled = true;
                summary.not_started = plan.jobs.len() - i;
                break;
            }
            Err(e) => {
                let error = e.to_string();
                summary.failed += 1;
                summary.failures.push(Failure {
                    input: job.input.clone(),
                    error: error.clone(),
                });
                on_event(&Event::Failed {
                    index: job.index,
                    input: job.input.clone(),
                    output: job.output.clone(),
                    error,
                });
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    on_event(&Event::Summary(summary.clone()));
    summary
}

fn run_one(
    upscaler: &PlannedUpscaler<'_>,
    job: &Job,
    settings: &RunSettings,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<WrittenImage> {
    job.options.validate()?;
    let image = load_image(&job.input)?;
    // The VAE works on 4x4 blocks: say so, naming the file, rather than fail in the model.
    image.check_min_size(4)?;
    let params = job.params(upscaler.engine(), settings.format);
    let mut on_step = |p: StepProgress| {
        on_event(&Event::Step {
            index: job.index,
            step: p.step,
            total: p.total,
        });
        if cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let (width, height) = image.rgb.size();
    // An output too large to hold goes to its PNG in rows as the engine finishes them.
    if upscaler.streams_output(width, height, &params)? {
        create_folder(job)?;
        let s = upscaler.scale();
        return stream_result(
            &job.output,
            &image,
            (width * s, height * s),
            settings.format,
            metadata(upscaler, job, settings),
            &mut |write_row| {
                upscaler.upscale_rows(
                    UpscaleRequest::new(&image.rgb, &params, &mut on_step),
                    write_row,
                )
            },
        );
    }
    let result = upscaler.upscale(UpscaleRequest::new(&image.rgb, &params, &mut on_step))?;
    create_folder(job)?;
    save_result(
        &job.output,
        &image,
        &result,
        settings.format,
        settings.quality,
        metadata(upscaler, job, settings),
    )
}

/// Creates the output's folder when the job's name asks for it.
fn create_folder(job: &Job) -> Result<()> {
    if job.create_folder {
        if let Some(folder) = job.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| Error::Io {
                path: folder.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The generation parameters written into the output.
fn metadata(upscaler: &PlannedUpscaler<'_>, job: &Job, settings: &RunSettings) -> GenerationInfo {
    let o = &job.options.diffusion;
    let common = GenerationInfo {
        engine: upscaler.engine().name().into(),
        scale: job.options.size.scale,
        model: settings.model.clone(),
        revision: settings.revision.clone(),
        diffsr_version: env!("CARGO_PKG_VERSION").into(),
        ..GenerationInfo::default()
    };
    // A GAN is deterministic and takes no prompt: only the model and scale describe it.
    match upscaler.engine() {
        Engine::Gan => common,
        Engine::Diffusion => GenerationInfo {
            prompt: o.prompt.clone(),
            negative_prompt: o.negative_prompt.clone(),
            seed: o.seed,
            steps: o.steps,
            scheduler: o.scheduler.map_or("default".into(), |k| k.name().into()),
            guidance: o.guidance_scale,
            noise_level: o.noise_level,
            eta: o.eta,
            ..common
        },
    }
}
