//! `diffsr upscale`: images through the latent-diffusion upscaler, one (`IN -o OUT`) or many
//! (files, folders, glob patterns or a JSONL manifest, named under `--out-dir`), with the
//! model loaded once. The run is planned (every argument checked) before the model loads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::ValueEnum;
use diffsr::batch::{
    check_jobs, expand_inputs, plan, run_jobs, Event, JobOptions, Manifest, OutputTemplate, Plan,
    PlanOptions, RunSettings, Shard, Source, Summary, DEFAULT_TEMPLATE,
};
use diffsr::color_fix::ColorFix;
use diffsr::device::{select_device, DeviceRequest};
use diffsr::engine::EngineConfig;
use diffsr::hub::HubOptions;
use diffsr::image_io::{load_image, OutputFormat};
use diffsr::output_file::is_stdout;
use diffsr::profile::{self, StageTimes};
use diffsr::scale_plan::ScalePlan;
use diffsr::schedulers::SchedulerKind;
use diffsr::text_escape;
use diffsr::upscaler::{DiffusionSettings, Engine, OutputSize, TargetSize, Upscaler};
use tracing_subscriber::layer::SubscriberExt;

use super::batch_progress::{describe, Reporter};
use super::engine::{load_engine, EngineArg};
use super::flag_errors::{is_unusable_model, with_flag_names};
use super::{parse_kind, Exit};

/// The x4 upscaler's scale, for naming outputs before the model loads (checked after).
const PLANNED_SCALE: usize = 4;

#[derive(clap::Args)]
pub struct UpscaleArgs {
    /// Input images (PNG, JPEG, WebP, TIFF, BMP): files, folders (their images, sorted) or
    /// glob patterns (quote them: 'photos/*.jpg').
    #[arg(value_name = "INPUT", required_unless_present = "manifest")]
    inputs: Vec<PathBuf>,
    /// Output image of a single input; the format follows the extension. `-`: standard output
    /// (with --format).
    #[arg(short, long, conflicts_with_all = ["out_dir", "manifest"])]
    output: Option<PathBuf>,
    /// Folder for the outputs of several inputs, named by --name (created if missing).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Output name under --out-dir; placeholders {stem} {ext} {scale} {seed} {index}
    /// {scheduler} {steps} {dir} (the subfolder under a --recursive folder input).
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    name: String,
    /// Look for images in the subfolders of folder inputs too.
    #[arg(short, long)]
    recursive: bool,
    /// Leave jobs whose output already exists (resume an interrupted run).
    #[arg(long)]
    skip_existing: bool,
    /// Run only shard I of N (0-based: 0/4 .. 3/4): the jobs whose index modulo N is I.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// JSONL file, one job a line: {"input", "output", "prompt", "negative_prompt", "seed",
    /// "steps", "guidance", "noise_level", "scheduler", "eta"}; missing keys use the flags.
    #[arg(long, conflicts_with = "inputs")]
    manifest: Option<PathBuf>,
    /// Print one JSON event a line on stdout (started, step, done, failed, summary).
    #[arg(long)]
    json: bool,
    /// The model. Diffusion: a hub repo id (owner/name[@revision], downloaded into the hub
    /// cache; default stabilityai/stable-diffusion-x4-upscaler) or a local diffusers folder.
    /// GAN: a model file (.safetensors, .pth, ncnn .param/.bin) or owner/repo[@rev]:file on the
    /// hub; default: the built-in realesr-animevideov3 x4.
    #[arg(long)]
    model: Option<String>,
    /// auto: diffusion when its model is available or downloadable, else the GAN engine (a
    /// model file given to --model means GAN); diffusion: never fall back; gan: Real-ESRGAN.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineArg,
    /// Output size as a factor of the input's (any number up to 16; default: the model's own).
    /// Other factors than the model's are reached by one Lanczos resample of its output.
    #[arg(long, conflicts_with_all = ["target", "long_side"])]
    scale: Option<f64>,
    /// Exact output size WxH instead of a factor (e.g. 3840x2160; the aspect ratio may change).
    #[arg(long, value_name = "WxH", value_parser = parse_target, conflicts_with = "long_side")]
    target: Option<TargetSize>,
    /// Output long side in pixels instead of a factor (the aspect ratio is kept).
    #[arg(long, value_name = "N")]
    long_side: Option<usize>,
    /// How factors beyond the model's own are reached: auto (diffusion then the GAN, or the
    /// GAN twice), single (one pass, then a resample), diffusion+gan, diffusion+diffusion,
    /// gan+gan.
    #[arg(long, default_value = "auto", value_parser = parse_plan)]
    plan: ScalePlan,
    /// Colour correction of the result against the input: none, wavelet (keeps the result's
    /// detail, the input's colours) or adain (per-channel mean and contrast).
    #[arg(long, default_value = "none", value_parser = parse_color_fix)]
    color_fix: ColorFix,
    /// GAN tile edge in input pixels (0: the whole image at once; default: chosen from
    /// --max-memory).
    #[arg(long)]
    tile: Option<usize>,
    /// Working-memory budget, e.g. 4G, 512M (default: half the available RAM, at most 8G, on
    /// the CPU; on a CUDA GPU its free memory less a reserve; 4G on Metal).
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// realesr-general-x4v3's denoise strength 0..1: blends its weights with the
    /// realesr-general-wdn-x4v3 model's (weight D on the general model), as Real-ESRGAN does.
    #[arg(long, value_name = "D")]
    denoise: Option<f64>,
    /// The -wdn model --denoise blends in (default: realesr-general-wdn-x4v3 beside --model).
    #[arg(long, requires = "denoise")]
    denoise_model: Option<String>,
    /// GAN: reflect padding around the image before the network, input pixels (default 10,
    /// as Real-ESRGAN; 0 with --tile 0 gives the reference model's own output).
    #[arg(long, value_name = "N")]
    pre_pad: Option<usize>,
    /// GAN: the factor of a model whose weights hold none (SRCNN: default 2, or its file's
    /// diffsr.scale entry); other models accept only their own.
    #[arg(long, value_name = "N")]
    model_scale: Option<usize>,
    /// No download or run progress, no device or engine line (failures and the summary are
    /// still printed).
    #[arg(short, long)]
    quiet: bool,
    /// Print where the run's time went, stage by stage (convolution, linear, attention, …) and
    /// phase by phase (text encoder, UNet steps, VAE decode, GAN network), on stderr at the end.
    /// CPU figures; on a GPU the launches are asynchronous and the stages mean little.
    #[arg(long)]
    profile: bool,
    /// Text prompt.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Negative prompt (used when --guidance > 1).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Number of denoising steps.
    #[arg(long, default_value_t = 75)]
    steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    #[arg(long, default_value_t = 9.0)]
    guidance: f64,
    /// Noise added to the input, 0..=max_noise_level (350): higher invents more detail.
    #[arg(long, default_value_t = 20)]
    noise_level: u32,
    /// Denoising solver (default: the model's own scheduler config, DDIM for the x4 upscaler).
    #[arg(long, value_parser = parse_kind)]
    scheduler: Option<SchedulerKind>,
    /// Seed of the diffusers-compatible generator, for every job without its own (default:
    /// one random seed for the run, printed and stored in each output).
    #[arg(long)]
    seed: Option<u64>,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Diffusion: dtype of the UNet and text encoder (default f32; the VAE always runs in f32).
    /// GAN: dtype of the network (default f16 on a GPU, f32 where the architecture overflows
    /// f16; f32 on the CPU).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    #[command(flatten)]
    output_format: super::output::OutputArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
            DtypeArg::Bf16 => DType::BF16,
        }
    }
}

/// The device `spec` names; `auto` says which it found, and why not a GPU, unless `quiet`.
pub(super) fn parse_device(spec: &str, quiet: bool) -> Result<Device> {
    let request: DeviceRequest = spec.parse().map_err(|_| {
        usage(format!(
            "--device {}: {}",
            text_escape::text(spec),
            DeviceRequest::EXPECTED
        ))
    })?;
    // Exit 2 as for a bad flag: nothing ran.
    let selected = select_device(request).map_err(|e| match e {
        diffsr::Error::DeviceUnavailable { reason, .. } => usage(format!(
            "--device {}: {}",
            text_escape::text(spec),
            text_escape::text(&reason)
        )),
        other => usage(other),
    })?;
    if request == DeviceRequest::Auto && !quiet {
        match &selected.fallback_reason {
            Some(why) => eprintln!("device: {} ({})", selected.name, text_escape::text(why)),
            None => eprintln!("device: {}", selected.name),
        }
    }
    Ok(selected.device)
}

/// `4G`, `512M`, `1.5GiB`, `1000000`: a byte count with an optional binary unit.
fn parse_bytes(s: &str) -> Result<u64, String> {
    diffsr::memory::parse_bytes(s).map_err(|e| e.to_string())
}

fn parse_target(s: &str) -> Result<TargetSize, String> {
    s.parse().map_err(|e: diffsr::Error| e.to_string())
}

fn parse_plan(s: &str) -> Result<ScalePlan, String> {
    s.parse().map_err(|e: diffsr::Error| e.to_string())
}

fn parse_color_fix(s: &str) -> Result<ColorFix, String> {
    s.parse().map_err(|e: diffsr::Error| e.to_string())
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: diffsr::Error| e.to_string())
}

/// An argument error: exit code 2, as clap's own.
pub(super) fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Exit {
        code: 2,
        message: e.to_string(),
    }
    .into()
}

/// A library error about the flags: exit code 2, naming the flag (`--guidance`, not the
/// library's `guidance_scale`).
fn flag_usage(e: diffsr::Error) -> anyhow::Error {
    usage(with_flag_names(e))
}

/// Plans the run from the arguments: every job named and checked, nothing run.
fn plan_run(args: &UpscaleArgs, defaults: &JobOptions, scale: usize) -> Result<Plan> {
    let template = OutputTemplate::parse(&args.name).map_err(usage)?;
    let source = match &args.manifest {
        Some(path) => Source::Manifest(Manifest::read(path).map_err(usage)?),
        None => Source::Inputs(expand_inputs(&args.inputs, args.recursive).map_err(usage)?),
    };
    let options = PlanOptions {
        defaults,
        output: args.output.as_deref(),
        out_dir: args.out_dir.as_deref(),
        template: &template,
        scale,
        shard: args.shard,
        skip_existing: args.skip_existing,
    };
    let plan = plan(&source, &options).map_err(usage)?;
    if args.json && args.output.as_deref().is_some_and(is_stdout) {
        return Err(usage(
            "-o -: the image would go to standard output, where --json writes its events; \
             drop --json or write the image to a file",
        ));
    }
    if args.output_format.format.is_none() {
        for job in plan.jobs.iter().chain(&plan.skipped) {
            OutputFormat::from_path(&job.output).map_err(usage)?;
        }
    }
    Ok(plan)
}

pub fn run(args: UpscaleArgs) -> Result<()> {
    let mut reporter = Reporter::new(args.json, args.quiet);
    let result = upscale(args, &mut reporter);
    if let Err(e) = &result {
        // Under --json, a failure before the run's summary is an event too.
        reporter.run_failed(&super::error_text::error_text(e));
    }
    result
}

fn upscale(args: UpscaleArgs, reporter: &mut Reporter) -> Result<()> {
    // The engines run their CPU work in this pool (none: rayon's global one, every core).
    let threads = match args.threads {
        Some(0) => return Err(usage("--threads must be at least 1".to_string())),
        Some(n) => Some(diffsr::threads::pool(n).map_err(usage)?),
        None => None,
    };
    let device = parse_device(&args.device, args.quiet)?;
    // One seed for the whole run, so a batch is reproducible from the one printed number
    // (and each output's metadata); manifest lines may give their own.
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let defaults = JobOptions {
        diffusion: DiffusionSettings {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            steps: args.steps,
            guidance_scale: args.guidance,
            noise_level: args.noise_level,
            eta: args.eta,
            scheduler: args.scheduler,
            seed,
        },
        size: OutputSize {
            scale: args.scale,
            target: args.target.or(args.long_side.map(TargetSize::LongSide)),
        },
        color_fix: args.color_fix,
    };
    defaults.validate().map_err(flag_usage)?;
    let mut plan = plan_run(&args, &defaults, PLANNED_SCALE)?;
    reporter.begin(&plan);
    if plan.jobs.is_empty() {
        // Everything is done already (--skip-existing) or this shard is empty: no model needed.
        // A killed run's temporary files for the skipped outputs still go.
        plan.remove_stale_partials();
        for job in &plan.skipped {
            reporter.event(&Event::Skipped {
                index: job.index,
                input: job.input.clone(),
                output: job.output.clone(),
            });
        }
        let summary = Summary {
            total: plan.skipped.len(),
            skipped: plan.skipped.len(),
            ..Summary::default()
        };
        reporter.event(&Event::Summary(summary.clone()));
        if !args.quiet && !args.json && summary.total <= 1 {
            eprintln!("{}", describe(&summary));
        }
        return Ok(());
    }
    if plan.jobs.len() == 1 && plan.skipped.is_empty() {
        // A single image: say what is wrong with it before spending time on the model.
        let job = &plan.jobs[0];
        load_image(&job.input)?.check_min_size(4)?;
    }
    let hub = HubOptions {
        progress: (!args.quiet).then(super::models::progress_printer),
        ..HubOptions::from_env(args.dtype.map_or(DType::F32, DType::from))?
    };
    let config = EngineConfig {
        choice: args.engine.into(),
        model: args.model.clone(),
        device,
        dtype: args.dtype.map(DType::from),
        max_memory: args.max_memory,
        tile: args.tile,
        denoise: args.denoise,
        denoise_model: args.denoise_model.clone(),
        pre_pad: args.pre_pad,
        model_scale: args.model_scale,
        diffusion: defaults.diffusion.clone(),
        threads,
        hub: Some(hub),
    };
    // Everything that needs no model, before the model loads (once, exit 2).
    config.validate().map_err(flag_usage)?;
    // load_engine adds no context: a library error comes back as it is, its options renamed
    // to the flags that set them.
    let loaded =
        load_engine(&config, args.quiet).map_err(|e| match e.downcast::<diffsr::Error>() {
            Ok(inner) if is_unusable_model(&inner) => usage(with_flag_names(inner)),
            Ok(inner) => inner.into(),
            Err(e) => e,
        })?;
    let upscaler = loaded.planned(args.plan);
    if upscaler.scale() != PLANNED_SCALE {
        // Outputs were named with {scale} = 4; name them again with the model's own.
        plan = plan_run(&args, &defaults, upscaler.scale())?;
    }
    // What the loaded model refuses fails every image alike: once, before the first.
    check_jobs(&upscaler, &plan).map_err(flag_usage)?;
    let settings = RunSettings {
        format: args.output_format.format,
        quality: args.output_format.quality,
        model: loaded.model.clone(),
        revision: loaded.revision.clone(),
    };
    if upscaler.engine() == Engine::Diffusion {
        eprintln!("seed {seed}");
    }
    // Not a FIFO or device: reading its header would block (the job itself refuses it).
    if let Some(job) = plan.jobs.first().filter(|job| job.input.is_file()) {
        // Say what will happen (and refuse an impossible size) before the long part.
        if let Ok((w, h)) = image::image_dimensions(&job.input) {
            let params = job.params(upscaler.engine(), args.output_format.format);
            let line = upscaler
                .describe(w as usize, h as usize, &params)
                .map_err(flag_usage)?;
            if !args.quiet {
                let first = if plan.jobs.len() > 1 {
                    " (first image)"
                } else {
                    ""
                };
                eprintln!("plan{first}: {line}");
            }
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    install_ctrlc(&cancel);
    let profile = args.profile.then(start_profile).transpose()?;
    let started = Instant::now();
    let summary = run_jobs(&upscaler, &plan, &settings, &cancel, &mut |e| {
        reporter.event(e)
    });
    if let Some(times) = profile {
        let wall = started.elapsed();
        eprintln!(
            "profile ({:.3} s of upscaling):\n{}\n{}",
            wall.as_secs_f64(),
            profile::table(&times.totals(), wall),
            profile::phase_table(&times.phases(), wall)
        );
    }
    if summary.cancelled {
        return Err(Exit {
            code: 130,
            message: format!(
                "interrupted with {} image(s) not finished; rerun with --skip-existing to finish",
                summary.not_started
            ),
        }
        .into());
    }
    if summary.failed > 0 {
        let message = if summary.total == 1 {
            summary.failures[0].error.clone()
        } else {
            format!(
                "{} of {} images failed (see above)",
                summary.failed, summary.total
            )
        };
        return Err(Exit { code: 1, message }.into());
    }
    Ok(())
}

/// Installs the per-stage profile as the process's tracing subscriber (global: the engines
/// run their work on thread-pool threads).
fn start_profile() -> Result<StageTimes> {
    let times = StageTimes::new();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(times.layer()))
        .context("--profile: a tracing subscriber is already installed")?;
    Ok(times)
}

/// Ctrl-C sets `cancel`: the run stops at the next step boundary and writes nothing partial.
/// A second Ctrl-C exits at once (outputs are renamed into place whole, so even then no
/// half-written image is left under an output's name).
fn install_ctrlc(cancel: &Arc<AtomicBool>) {
    let cancel = Arc::clone(cancel);
    let installed = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after the current step (Ctrl-C again to quit now)");
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C cannot be caught ({e}); it will stop the run at once");
    }
}
