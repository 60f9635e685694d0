//! Any output size: one pass or two (diffusion then the GAN, diffusion twice, the GAN
//! twice), then an exact resample, on real photos; and the memory planner's choices and
//! refusals.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{ensure, Result};
use candle_core::Device;
use diffsr::batch::JobOptions;
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanOptions, GanUpscaler};
use diffsr::image_io::load_rgb8;
use diffsr::pipeline::{
    plan_memory, DiffusionSettings, Im2colBytes, LoadOptions, ModelFootprint, ModelWidths,
    UpscalePipeline,
};
use diffsr::scale_plan::{PlannedUpscaler, ScalePlan, TargetSize};
use diffsr::upscaler::{Engine, OutputSize, UpscaleRequest, Upscaler};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn diffusion() -> Result<UpscalePipeline> {
    Ok(UpscalePipeline::load(
        &fixtures().join("tiny-x4-upscaler"),
        &LoadOptions::default(),
    )?)
}

fn gan() -> Result<GanUpscaler> {
    Ok(GanUpscaler::new(
        &embedded_model()?,
        &GanOptions::default(),
    )?)
}

/// Runs `upscaler` on a photo; returns the output size and the progress reports seen.
fn run(upscaler: &dyn Upscaler, options: &JobOptions) -> Result<((usize, usize), usize)> {
    let image = load_rgb8(&fixtures().join("gan/photos/chelsea.png"))?; // 48x40
    let mut reports = 0;
    let params = options.params(upscaler.engine());
    let out = upscaler.upscale(UpscaleRequest::new(&image, &params, &mut |_| {
        reports += 1;
        ControlFlow::Continue(())
    }))?;
    let out = out.to_tensor(&Device::Cpu)?;
    let (_, c, h, w) = out.dims4()?;
    ensure!(c == 3);
    let max = out.max_all()?.to_scalar::<f32>()?;
    let min = out.min_all()?.to_scalar::<f32>()?;
    ensure!((0.0..=1.0).contains(&min) && max <= 1.0, "in [0, 1]");
    Ok(((w, h), reports))
}

fn options(scale: f64) -> JobOptions {
    JobOptions {
        diffusion: DiffusionSettings {
            steps: 2,
            seed: 3,
            ..DiffusionSettings::default()
        },
        size: OutputSize::scale(scale),
        ..JobOptions::default()
    }
}

#[test]
fn eight_times_with_diffusion_then_the_gan() -> Result<()> {
    let d = diffusion()?;
    let g = gan()?;
    let planned = PlannedUpscaler::new(&d, Some(&g), ScalePlan::Auto);
    let (size, reports) = run(&planned, &options(8.0))?;
    ensure!(size == (384, 320), "{size:?}");
    ensure!(
        reports == 2 + 1,
        "2 denoising steps, then 1 GAN tile: {reports}"
    );
    let line = planned.describe(48, 40, &options(8.0).params(Engine::Diffusion))?;
    ensure!(line.contains("diffusion x4 -> gan x4"), "{line}");
    // The plan line names a resample only when the passes miss the target: x4 then x4
    // overshoots 8x, the model's own 4x lands on it.
    ensure!(line.contains(", then an exact Lanczos resample"), "{line}");
    let line = planned.describe(48, 40, &options(4.0).params(Engine::Diffusion))?;
    ensure!(
        line.starts_with("48x40 -> 192x160: diffusion x4") && !line.contains("resample"),
        "{line}"
    );
    // At the model's own factor the plan is one pass.
    let (size, reports) = run(&planned, &options(4.0))?;
    ensure!(size == (192, 160) && reports == 2);
    Ok(())
}

#[test]
fn eight_times_with_diffusion_twice() -> Result<()> {
    let d = diffusion()?;
    let planned = PlannedUpscaler::new(&d, None, ScalePlan::DiffusionTwice);
    let (size, reports) = run(&planned, &options(8.0))?;
    ensure!(size == (384, 320), "{size:?}");
    ensure!(reports == 4, "two passes of 2 steps: {reports}");
    // A non-integer factor still lands exactly.
    let (size, _) = run(&planned, &options(6.5))?;
    ensure!(size == (312, 260), "{size:?}");
    Ok(())
}

#[test]
fn gan_twice_and_exact_targets() -> Result<()> {
    let g = gan()?;
    let planned = PlannedUpscaler::new(&g, None, ScalePlan::Auto);
    let (size, reports) = run(&planned, &options(8.0))?;
    ensure!(size == (384, 320) && reports == 2, "{size:?} {reports}");
    let exact = JobOptions {
        size: OutputSize {
            target: Some(TargetSize::Exact {
                width: 500,
                height: 123,
            }),
            ..OutputSize::scale(1.0)
        },
        ..options(1.0)
    };
    ensure!(run(&planned, &exact)?.0 == (500, 123));
    let long = JobOptions {
        size: OutputSize {
            target: Some(TargetSize::LongSide(100)),
            scale: None,
        },
        ..options(1.0)
    };
    ensure!(run(&planned, &long)?.0 == (100, 83));
    let single = PlannedUpscaler::new(&g, None, ScalePlan::Single);
    let (size, reports) = run(&single, &options(8.0))?;
    ensure!(size == (384, 320) && reports == 1);
    Ok(())
}

#[test]
fn impossible_plans_and_sizes_are_refused() -> Result<()> {
    let g = gan()?;
    let planned = PlannedUpscaler::new(&g, None, ScalePlan::DiffusionGan);
    let err = run(&planned, &options(8.0)).unwrap_err().to_string();
    ensure!(err.contains("plan") && err.contains("diffusion"), "{err}");
    let auto = PlannedUpscaler::new(&g, None, ScalePlan::Auto);
    let err = run(&auto, &options(20.0)).unwrap_err().to_string();
    ensure!(err.contains("scale"), "{err}");
    let huge = JobOptions {
        size: OutputSize {
            target: Some("2000x100".parse()?),
            ..OutputSize::scale(1.0)
        },
        ..options(1.0)
    };
    let err = run(&auto, &huge).unwrap_err().to_string();
    ensure!(err.contains("at most"), "{err}");
    ensure!("12x".parse::<TargetSize>().is_err() && "0x5".parse::<TargetSize>().is_err());
    ensure!("gan+diffusion".parse::<ScalePlan>().is_err());
    Ok(())
}

const GIB: u64 = 1 << 30;
/// The full-size x4 model's f32 weights (UNet, VAE, text encoder).
const X4_WEIGHTS: u64 = 3_470_000_000;
/// Its largest weights file (the UNet's).
const X4_LARGEST_FILE: u64 = 1_890_000_000;

/// The full-size model in f32 (`half` 1) or f16 (2).
fn x4(half: u64) -> ModelFootprint {
    ModelFootprint {
        weights: X4_WEIGHTS / half,
        loading: X4_LARGEST_FILE / half,
        widths: ModelWidths::X4_UPSCALER,
        unet_dtype_bytes: 4 / half as usize,
        im2col: Im2colBytes::NONE,
    }
}

#[test]
fn memory_plans_fit_the_budget_or_are_refused() -> Result<()> {
    // 512 px input: a 512² latent.
    let mut last_tile = 0;
    for budget in [6 * GIB, 8 * GIB, 12 * GIB, 24 * GIB] {
        let plan = plan_memory(512, 512, budget, &x4(1), true)?;
        println!("{} GiB: {}", budget / GIB, plan.describe(budget));
        ensure!(plan.estimate.peak() <= budget, "within the budget");
        ensure!(
            plan.tiling.latent_tile >= last_tile,
            "more memory, no smaller tiles"
        );
        ensure!(
            plan.unet_tiles > 1 && plan.vae_tiles > 1,
            "a 512² latent is tiled"
        );
        last_tile = plan.tiling.latent_tile;
    }
    // A small latent with a generous budget runs untiled.
    let plan = plan_memory(64, 64, 16 * GIB, &x4(1), true)?;
    ensure!(plan.unet_tiles == 1 && plan.vae_tiles == 1);
    // f16 halves the UNet's share.
    let f32 = plan_memory(128, 128, 8 * GIB, &x4(1), true)?;
    let f16 = plan_memory(128, 128, 8 * GIB, &x4(2), true)?;
    ensure!(f16.estimate.unet < f32.estimate.unet);
    // Below the weights themselves: a refusal that says what would do.
    let err = plan_memory(512, 512, 2 * GIB, &x4(1), true)
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("max_memory") && err.contains("needed"),
        "{err}"
    );
    Ok(())
}
