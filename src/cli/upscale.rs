//! `diffsr upscale`: one image through the latent-diffusion upscaler.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::ValueEnum;
use diffsr::image_io::{load_rgb8, save_rgb8, Rgb8};
use diffsr::pipeline::{tensor_to_rgb8, LoadOptions, UpscaleOptions, UpscalePipeline};
use diffsr::schedulers::SchedulerKind;

use super::parse_kind;

#[derive(clap::Args)]
pub struct UpscaleArgs {
    /// Low-resolution input image (PNG, JPEG, WebP, TIFF, BMP).
    input: PathBuf,
    /// Output image; the format follows the extension.
    #[arg(short, long)]
    output: PathBuf,
    /// Model directory in the hub's diffusers layout (model_index.json, unet/, vae/, ...).
    #[arg(long)]
    model: PathBuf,
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
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
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
    let image = load_rgb8(&args.input)?;
    let load = LoadOptions {
        device,
        dtype: args.dtype.into(),
    };
    let pipeline = UpscalePipeline::load(&args.model, &load)
        .with_context(|| format!("loading the model from {}", args.model.display()))?;
    eprintln!("seed {seed}");
    let started = std::time::Instant::now();
    let out =
        pipeline.upscale_rgb8(&image.data, image.width, image.height, &options, &mut |p| {
            eprint!("\rstep {}/{} (t = {})   ", p.step, p.total, p.timestep);
            ControlFlow::Continue(())
        })?;
    eprintln!();
    let (data, width, height) = tensor_to_rgb8(&out)?;
    save_rgb8(
        &args.output,
        &Rgb8 {
            data,
            width,
            height,
        },
    )?;
    eprintln!(
        "wrote {} ({width}x{height}) in {:.1}s",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
