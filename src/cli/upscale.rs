//! `diffsr upscale`: one image through the latent-diffusion upscaler.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::ValueEnum;
use diffsr::hub::{resolve, HubOptions, ModelSpec};
use diffsr::image_io::{check_output_path, load_image, GenerationInfo};
use diffsr::pipeline::{LoadOptions, UpscaleOptions, UpscalePipeline};
use diffsr::schedulers::SchedulerKind;

use super::parse_kind;

#[derive(clap::Args)]
pub struct UpscaleArgs {
    /// Low-resolution input image (PNG, JPEG, WebP, TIFF, BMP).
    input: PathBuf,
    /// Output image; the format follows the extension.
    #[arg(short, long)]
    output: PathBuf,
    /// Hub repo id (owner/name[@revision], downloaded into the hub cache) or a local model
    /// directory in the diffusers layout (model_index.json, unet/, vae/, ...).
    #[arg(long, default_value = diffsr::hub::DEFAULT_REPO)]
    model: String,
    /// No download progress.
    #[arg(short, long)]
    quiet: bool,
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
    /// Seed of the diffusers-compatible generator (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// dtype of the UNet and text encoder (the VAE always runs in f32).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
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

fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec {
        "cpu" => Device::Cpu,
        "metal" => Device::new_metal(0)?,
        "cuda" => Device::new_cuda(0)?,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::new_cuda(i)?,
            _ => bail!("--device {other}: expected cpu, cuda, cuda:N or metal"),
        },
    };
    Ok(device)
}

pub fn run(args: UpscaleArgs) -> Result<()> {
    let device = parse_device(&args.device)
        .with_context(|| format!("--device {}: this device is not available", args.device))?;
    if args.output == args.input {
        bail!(
            "-o {}: the output would overwrite the input",
            args.output.display()
        );
    }
    check_output_path(&args.input, &args.output)?;
    args.output_format.check(&args.output)?;
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let options = UpscaleOptions {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        steps: args.steps,
        guidance_scale: args.guidance,
        noise_level: args.noise_level,
        eta: args.eta,
        scheduler: args.scheduler,
        seed,
    };
    options.validate().context("checking the options")?;
    let image = load_image(&args.input)?;
    // The x4 upscaler's VAE works on 4x4 blocks: say so (naming the file) before loading it.
    image.check_min_size(4)?;
    let load = LoadOptions {
        device,
        dtype: args.dtype.into(),
    };
    let spec = ModelSpec::parse(&args.model)?;
    if let ModelSpec::File(path) = &spec {
        bail!(
            "--model {}: a single weights file is not a diffusion model; give the model \
             directory (diffusers layout) or a hub repo id",
            path.display()
        );
    }
    let hub_options = HubOptions {
        progress: (!args.quiet).then(super::models::progress_printer),
        ..HubOptions::from_env(load.dtype)?
    };
    let model_dir = resolve(&spec, &hub_options)?;
    let pipeline = UpscalePipeline::load(&model_dir, &load)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    eprintln!("seed {seed}");
    let started = std::time::Instant::now();
    let out = pipeline.upscale_rgb8(
        &image.rgb.data,
        image.rgb.width,
        image.rgb.height,
        &options,
        &mut |p| {
            eprint!("\rstep {}/{} (t = {})   ", p.step, p.total, p.timestep);
            ControlFlow::Continue(())
        },
    )?;
    eprintln!();
    let metadata = GenerationInfo {
        model: spec.to_string(),
        revision: match &spec {
            ModelSpec::Hub { .. } => model_dir
                .file_name()
                .map(|commit| commit.to_string_lossy().into_owned()),
            _ => None,
        },
        prompt: options.prompt.clone(),
        negative_prompt: options.negative_prompt.clone(),
        seed,
        steps: options.steps,
        scheduler: options
            .scheduler
            .map_or("default".into(), |k| k.name().into()),
        guidance: options.guidance_scale,
        noise_level: options.noise_level,
        eta: options.eta,
        diffsr_version: env!("CARGO_PKG_VERSION").into(),
    };
    let (width, height) = args
        .output_format
        .write(&args.output, &image, &out, metadata)?;
    eprintln!(
        "wrote {} ({width}x{height}) in {:.1}s",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
