//! `diffsr bench`: how fast one stage runs on a device, after a warm-up, with random weights
//! and nothing downloaded: a guided x4 UNet step, a VAE decode, a GAN model on an image, or a
//! whole tiled x4 upscale of a model folder. Each timed run ends with a device synchronize (GPU
//! launches return before they run), so the times are the device's. `--json` prints one object
//! that scripts (scripts/gpu-check.sh) compare with PyTorch's times for the same stage.

mod cases;

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use diffsr::device::{device_memory, synchronize, DeviceMemory};
use serde_json::json;

use super::upscale::{parse_device, DtypeArg};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchCase {
    /// One guided UNet step of the x4 upscaler (batch 2, 7 input channels, 77 text tokens) on a
    /// SIZE × SIZE latent.
    Unet,
    /// One VAE decode of a SIZE × SIZE latent (to a 4·SIZE image).
    Vae,
    /// A GAN model (`--model FILE`, default the built-in one) on a SIZE × SIZE image, tiled as
    /// the memory budget says.
    Gan,
    /// A whole x4 upscale (`--model FOLDER`) of a SIZE × SIZE image, tiled as the budget says.
    Upscale,
}

impl BenchCase {
    fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::Gan => "gan",
            Self::Upscale => "upscale",
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    case: BenchCase,
    /// Latent edge (unet, vae) or image edge (gan, upscale).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16384))]
    size: u64,
    /// Dtype of the network (default: f16 for unet and gan on a GPU, else f32; the upscale's
    /// VAE always runs in f32).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Timed runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Untimed runs first (the first run on a GPU compiles its kernels).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=100))]
    warmup: u64,
    /// gan: a model file (default: the built-in model); upscale: an x4 model folder (required).
    #[arg(long)]
    model: Option<String>,
    /// unet, vae: a config.json to build instead of the x4 upscaler's.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// upscale: denoising steps.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// Memory budget for the plan (gan, upscale), e.g. 8G (default: the device's).
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// gan: reflect padding around the image, input pixels (default 10, as `upscale`; 0 runs
    /// the network on the image as it is, as PyTorch references do).
    #[arg(long, value_name = "N")]
    pre_pad: Option<usize>,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object on stdout instead of a line of text.
    #[arg(long)]
    json: bool,
    /// No "device: …" line.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    diffsr::memory::parse_bytes(s).map_err(|e| e.to_string())
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = parse_device(&args.device, args.quiet || args.json)?;
    let device_name = device_label(&device);
    let memory_before = device_memory(&device);
    let case = cases::prepare(&args, &device)?;
    let warmup = args.warmup as usize;
    let runs = args.runs as usize;
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let start = Instant::now();
        (case.run)().with_context(|| format!("{} run {}", args.case.name(), i + 1))?;
        synchronize(&device)?;
        let seconds = start.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(seconds);
        }
        if !args.json && !args.quiet {
            let kind = if i < warmup { "warm-up" } else { "run" };
            eprintln!("{kind} {}: {seconds:.4} s", i + 1);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if runs % 2 == 1 {
        sorted[runs / 2]
    } else {
        (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2.0
    };
    let min = sorted[0];
    let memory_after = device_memory(&device);
    if args.json {
        let object = json!({
            "case": args.case.name(),
            "size": args.size,
            "device": device_name,
            "dtype": dtype_name(case.dtype),
            "warmup": warmup,
            "times_s": times,
            "median_s": median,
            "min_s": min,
            "budget_bytes": case.budget,
            "estimated_peak_bytes": case.planned.as_ref().map(|p| p.peak_bytes),
            "plan": case.planned.as_ref().map(|p| p.description.clone()),
            "device_memory": memory_before.map(memory_json),
            "device_memory_after": memory_after.map(memory_json),
            "description": case.description,
        });
        println!("{object}");
    } else {
        println!(
            "{} {}: median {median:.4} s, min {min:.4} s over {runs} runs on {device_name} ({}){}",
            args.case.name(),
            case.description,
            dtype_name(case.dtype),
            case.planned
                .as_ref()
                .map(|p| format!("; {}", p.description))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn dtype_name(dtype: candle_core::DType) -> String {
    format!("{dtype:?}").to_lowercase()
}

fn memory_json(m: DeviceMemory) -> serde_json::Value {
    json!({ "free_bytes": m.free, "total_bytes": m.total })
}

fn device_label(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { .. } => "metal".into(),
    }
}
