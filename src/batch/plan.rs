//! From inputs (or a manifest) to the jobs this machine runs: outputs named, options checked,
//! two jobs writing one file refused, the shard kept, finished outputs skipped. All of it
//! happens before the model loads, on the full job list, so every shard of a run agrees on
//! the numbering and a collision is caught whichever machine would have hit it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::color_fix::ColorFix;
use crate::error::{Error, Result};
use crate::image_io::{check_output_path, streams_to, OutputFormat};
use crate::output_file::{is_stdout, remove_stale_temp_files};
use crate::upscaler::{
    DiffusionSettings, Engine, EngineSettings, OutputSize, Streaming, TargetSize, UpscaleParams,
};

use super::template::inside_out_dir;
use super::{Input, Manifest, OutputTemplate, Shard, TemplateVars};

/// What one job asks for, planned before the engine is known: the diffusion settings (a
/// diffusion engine's, per image: a manifest line may give its own prompt and seed), and the
/// output's size and colour fix (any engine's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    pub diffusion: DiffusionSettings,
    pub size: OutputSize,
    pub color_fix: ColorFix,
}

impl JobOptions {
    /// Checks what does not depend on the model.
    pub fn validate(&self) -> Result<()> {
        self.diffusion.validate()?;
        self.size.validate()
    }

    /// The request parameters for a primary engine of family `engine`: the diffusion settings
    /// go to a diffusion engine only.
    pub fn params(&self, engine: Engine) -> UpscaleParams {
        UpscaleParams {
            size: self.size,
            color_fix: self.color_fix,
            max_memory: None,
            settings: match engine {
                Engine::Diffusion => Some(EngineSettings::Diffusion(self.diffusion.clone())),
                Engine::Gan => None,
            },
            // The runner allows it per job, by the output's format.
            stream: Streaming::Off,
        }
    }
}

/// One image to upscale.
#[derive(Debug, Clone)]
pub struct Job {
    /// Position in the full (unsharded) job list, from 0: the `{index}` of its name and the
    /// number `--shard` splits on.
    pub index: usize,
    pub input: PathBuf,
    pub output: PathBuf,
    pub options: JobOptions,
    /// The output's folder is created when the job runs (outputs named under `--out-dir`,
    /// whose `{dir}` subfolders need not exist yet); explicit outputs need an existing folder.
    pub create_folder: bool,
    /// The manifest and line (from 1) the job came from, to name them in its errors.
    pub manifest_line: Option<(PathBuf, usize)>,
}

impl Job {
    /// The job's parameters for `engine`, writing its output in `format` (`None`: by the
    /// output's extension): a PNG output may be streamed to disk in rows when the whole
    /// result does not fit the budget.
    pub fn params(&self, engine: Engine, format: Option<OutputFormat>) -> UpscaleParams {
        UpscaleParams {
            stream: if streams_to(&self.output, format) {
                Streaming::WhenNeeded
            } else {
                Streaming::Off
            },
            ..self.options.params(engine)
        }
    }
}

/// Where the jobs come from and how outputs are named.
#[derive(Debug, Clone)]
pub struct PlanOptions<'a> {
    /// The CLI's options; a manifest line overrides them field by field.
    pub defaults: &'a JobOptions,
    /// `-o`: the output of a single input.
    pub output: Option<&'a Path>,
    /// `--out-dir`: outputs named by `template` under it.
    pub out_dir: Option<&'a Path>,
    pub template: &'a OutputTemplate,
    /// The pipeline's scale, for `{scale}`.
    pub scale: usize,
    pub shard: Option<Shard>,
    /// `--skip-existing`: jobs whose output exists are set aside, not run.
    pub skip_existing: bool,
}

/// What a run does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Jobs in the full list, before sharding and skipping.
    pub total: usize,
    /// This shard's jobs to run, in order.
    pub jobs: Vec<Job>,
    /// This shard's jobs whose output already exists (`--skip-existing`).
    pub skipped: Vec<Job>,
}

/// The job source: INPUTs, or a manifest.
#[derive(Debug, Clone)]
pub enum Source {
    Inputs(Vec<Input>),
    Manifest(Manifest),
}

/// Plans the run; every error is an argument error (nothing has run yet).
pub fn plan(source: &Source, options: &PlanOptions<'_>) -> Result<Plan> {
    if options.output.is_some() && options.out_dir.is_some() {
        return Err(Error::option(
            "-o",
            "give either -o (one input) or --out-dir (any number), not both",
        ));
    }
    if let Some(dir) = options.out_dir {
        check_out_dir(dir)?;
    }
    let mut all = Vec::new();
    match source {
        Source::Inputs(inputs) => {
            if inputs.is_empty() {
                return Err(Error::option("INPUT", "no input given"));
            }
            if options.output.is_some() && inputs.len() > 1 {
                return Err(Error::option(
                    "-o",
                    format!(
                        "-o names one output but the inputs give {} images; use --out-dir \
                         (with --name) for several",
                        inputs.len()
                    ),
                ));
            }
            for (index, input) in inputs.iter().enumerate() {
                let opts = options.defaults.clone();
                let (output, create_folder) = name(options, index, &input.path, &input.dir, &opts)?
                    .ok_or_else(|| {
                        Error::option("-o", "give -o OUTPUT (one input) or --out-dir DIR")
                    })?;
                all.push(Job {
                    index,
                    input: input.path.clone(),
                    output,
                    options: opts,
                    create_folder,
                    manifest_line: None,
                });
            }
        }
        Source::Manifest(manifest) => {
            if options.output.is_some() {
                return Err(Error::option(
                    "-o",
                    "a manifest names its outputs itself (or through --out-dir); -o is for one input",
                ));
            }
            for (index, (line, job)) in manifest.jobs.iter().enumerate() {
                let bad = |message: String| Error::Manifest {
                    path: manifest.path.clone(),
                    line: *line,
                    message,
                };
                let defaults = options.defaults;
                let d = &defaults.diffusion;
                let opts = JobOptions {
                    diffusion: DiffusionSettings {
                        prompt: job.prompt.clone().unwrap_or_else(|| d.prompt.clone()),
                        negative_prompt: job
                            .negative_prompt
                            .clone()
                            .unwrap_or_else(|| d.negative_prompt.clone()),
                        steps: job.steps.unwrap_or(d.steps),
                        guidance_scale: job.guidance.unwrap_or(d.guidance_scale),
                        noise_level: job.noise_level.unwrap_or(d.noise_level),
                        eta: job.eta.unwrap_or(d.eta),
                        scheduler: job.scheduler.or(d.scheduler),
                        seed: job.seed.unwrap_or(d.seed),
                    },
                    size: OutputSize {
                        scale: job.scale.or(defaults.size.scale),
                        target: match (&job.target, job.long_side) {
                            (Some(t), _) => Some(t.parse().map_err(|e: Error| bad(e.to_string()))?),
                            (None, Some(n)) => Some(TargetSize::LongSide(n)),
                            (None, None) if job.scale.is_some() => None,
                            (None, None) => defaults.size.target,
                        },
                    },
                    color_fix: match &job.color_fix {
                        Some(c) => c.parse().map_err(|e: Error| bad(e.to_string()))?,
                        None => defaults.color_fix,
                    },
                };
                opts.validate()
                    .map_err(|e| bad(super::manifest::job_message(&e)))?;
                let (output, create_folder) = match &job.output {
                    Some(o) => (o.clone(), false),
                    None => name(options, index, &job.input, "", &opts)?.ok_or_else(|| {
                        bad("no `output`: give one, or --out-dir to name it".into())
                    })?,
                };
                all.push(Job {
                    index,
                    input: job.input.clone(),
                    output,
                    options: opts,
                    create_folder,
                    manifest_line: Some((manifest.path.clone(), *line)),
                });
            }
        }
    }
    check_outputs(&all)?;
    let total = all.len();
    let mut plan = Plan {
        total,
        ..Plan::default()
    };
    for job in all {
        if options.shard.is_some_and(|s| !s.contains(job.index)) {
            continue;
        }
        if options.skip_existing && is_finished(&job.output) {
            plan.skipped.push(job);
        } else {
            plan.jobs.push(job);
        }
    }
    Ok(plan)
}

impl Plan {
    /// Removes what a killed run left while writing this plan's outputs, the jobs to run and
    /// the skipped ones alike: diffsr's temporary files for those output names, nothing else
    /// ([`crate::output_file::remove_stale_temp_files`]). Returns the files removed.
    pub fn remove_stale_partials(&self) -> Vec<PathBuf> {
        remove_stale_temp_files(
            self.jobs
                .iter()
                .chain(&self.skipped)
                .map(|j| j.output.as_path()),
        )
    }
}

/// Whether `output` is done for `--skip-existing`: a regular file (outputs are renamed into
/// place whole). A device, a FIFO or stdout never is.
fn is_finished(output: &Path) -> bool {
    !is_stdout(output) && std::fs::metadata(output).is_ok_and(|m| m.is_file())
}

/// Refuses an `--out-dir` that cannot be a folder: it, or the nearest of its parents that
/// exists, is something else (a file). Said once, before any job, instead of once a job.
fn check_out_dir(dir: &Path) -> Result<()> {
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        let Ok(metadata) = std::fs::metadata(ancestor) else {
            continue;
        };
        if metadata.is_dir() {
            return Ok(());
        }
        let what = if ancestor == dir {
            format!("{} exists and is not a folder", dir.display())
        } else {
            format!("{}: {} is not a folder", dir.display(), ancestor.display())
        };
        return Err(Error::option("--out-dir", what));
    }
    Ok(())
}

/// The output of job `index`: `-o`, or `--out-dir` joined with the template; `None` when
/// neither is given. The flag says whether its folder is to be created. A name that the
/// template's placeholders would take out of --out-dir (a `{stem}` of `..`) is refused.
fn name(
    options: &PlanOptions<'_>,
    index: usize,
    input: &Path,
    dir: &str,
    opts: &JobOptions,
) -> Result<Option<(PathBuf, bool)>> {
    if let Some(o) = options.output {
        return Ok(Some((o.to_path_buf(), false)));
    }
    let Some(out_dir) = options.out_dir else {
        return Ok(None);
    };
    let stem = input.file_stem().unwrap_or_default().to_string_lossy();
    let ext = input.extension().unwrap_or_default().to_string_lossy();
    let scheduler = opts.diffusion.scheduler.map_or("default", |k| k.name());
    let vars = TemplateVars {
        stem: &stem,
        ext: &ext,
        scale: opts.size.scale.unwrap_or(options.scale as f64),
        seed: opts.diffusion.seed,
        index,
        scheduler,
        steps: opts.diffusion.steps,
        dir,
    };
    // Empty components dropped: `{dir}/{stem}.png` with an empty {dir} names `a.png`, not
    // `/a.png` (which `join` would take for an absolute path outside --out-dir).
    let rendered = options.template.render(&vars);
    if !inside_out_dir(&rendered) {
        return Err(Error::option(
            "--name",
            format!(
                "`{}` names `{rendered}` for {}, which is outside --out-dir",
                options.template.as_str(),
                input.display()
            ),
        ));
    }
    let mut path = out_dir.to_path_buf();
    path.extend(rendered.split('/').filter(|c| !c.is_empty()));
    Ok(Some((path, true)))
}

/// Refuses an output that is its job's input, or that two jobs share.
fn check_outputs(jobs: &[Job]) -> Result<()> {
    let mut owners: HashMap<PathBuf, &Job> = HashMap::new();
    for job in jobs {
        let folder_exists = job
            .output
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir());
        // A folder still to be created cannot hold the input, and check_output_path would
        // refuse it for not existing.
        if !job.create_folder || folder_exists {
            check_output_path(&job.input, &job.output)?;
        }
        if let Some(first) = owners.insert(normalize(&job.output), job) {
            return Err(Error::option(
                "output",
                format!(
                    "{} and {} would both be written to {}; add {{index}} or {{dir}} to --name, \
                     or give distinct outputs",
                    first.input.display(),
                    job.input.display(),
                    job.output.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `path` made absolute and cleaned of `.` and `..` without touching the disk (the file need
/// not exist), so `out/a.png` and `./out/../out/a.png` compare equal.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
