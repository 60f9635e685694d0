//! Two engines sharing one thread pool and one memory budget, through the library: the
//! diffusion upscaler with the built-in GAN for the second pass of an 8x plan, the plan line
//! `diffsr upscale` prints (tiles and estimated peak), a budget refused before any work, a run
//! cancelled from its progress callback, and the errors a caller matches on.
//!
//! ```bash
//! cargo run --release --example shared_pool -- MODEL_DIR IN.png OUT.png [THREADS] [BUDGET]
//! # the tiny test model, 2 threads, a 1 GiB budget:
//! cargo run --release --example shared_pool -- tests/fixtures/tiny-x4-upscaler \
//!     tests/fixtures/images/astronaut-20x16.png /tmp/astronaut-8x.png 2 1G
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use diffsr::gan::{embedded::embedded_model, GanOptions, GanUpscaler};
use diffsr::image_io::{load_rgb8, save_rgb8};
use diffsr::memory::{parse_bytes, tune_allocator, MallocMode};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, UpscalePipeline};
use diffsr::scale_plan::{PlannedUpscaler, ScalePlan};
use diffsr::upscaler::{OutputSize, UpscaleParams, UpscaleRequest, Upscaler};
use diffsr::Error;

fn main() -> Result<()> {
    // Once, before the first model loads: glibc keeps freed tensor buffers for reuse
    // (`MallocMode::System` leaves malloc alone). The binary reads the mode from DIFFSR_MALLOC.
    tune_allocator(MallocMode::KeepFreedBlocks);

    let mut args = std::env::args().skip(1);
    let usage = "usage: shared_pool MODEL_DIR INPUT OUTPUT [THREADS] [BUDGET]";
    let model = PathBuf::from(args.next().context(usage)?);
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let threads: usize = args.next().map_or(Ok(2), |t| t.parse()).context(usage)?;
    let budget = parse_bytes(&args.next().unwrap_or_else(|| "4G".into()))?;

    // One pool for both engines: each runs its loading and every model pass inside it.
    let pool = diffsr::threads::pool(threads)?;
    let pipeline = UpscalePipeline::load(
        &model,
        &LoadOptions {
            max_memory: Some(budget), // tiles chosen per image from the budget
            threads: Some(pool.clone()),
            ..LoadOptions::default()
        },
    )?
    .with_settings(DiffusionSettings {
        steps: 10,
        seed: 7,
        ..DiffusionSettings::default()
    });
    let gan = GanUpscaler::new(
        &embedded_model()?,
        &GanOptions {
            max_memory: Some(budget),
            threads: Some(pool),
            ..GanOptions::default()
        },
    )?;
    // Diffusion x4, then the GAN on its result, then one resample to exactly 8x.
    let upscaler = PlannedUpscaler::new(&pipeline, Some(&gan), ScalePlan::Auto);

    let image = load_rgb8(&input)?;
    let params = UpscaleParams {
        size: OutputSize::scale(8.0),
        ..UpscaleParams::default()
    };
    // The `plan:` line of `diffsr upscale`: the passes, the tiles and the estimated peak.
    println!("{}", upscaler.describe(image.width, image.height, &params)?);

    // A per-call budget overrides the engine's; one too small is refused before any work.
    let tight = UpscaleParams {
        max_memory: Some(1 << 20),
        ..params.clone()
    };
    match upscaler.describe(image.width, image.height, &tight) {
        Err(Error::InvalidOption { option, reason }) => println!("refused: {option}: {reason}"),
        other => anyhow::bail!("expected the 1 MiB budget to be refused, got {other:?}"),
    }

    // `Break` from the callback cancels at the next step (or tile) boundary.
    let cancelled = upscaler.upscale(UpscaleRequest::new(&image, &params, &mut |p| {
        if p.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }));
    match cancelled {
        Err(Error::Cancelled) => println!("cancelled after 2 steps"),
        other => anyhow::bail!(
            "expected a cancelled run, got {:?}",
            other.map(|r| r.size())
        ),
    }

    let upscaled = upscaler.upscale(UpscaleRequest::new(&image, &params, &mut |p| {
        eprintln!("{}/{}", p.step, p.total);
        ControlFlow::Continue(())
    }))?;
    let (width, height) = upscaled.size();
    save_rgb8(&output, &upscaled.to_rgb8())?;
    println!("wrote {} ({width}x{height})", output.display());
    Ok(())
}
