//! Upscales one image the way `diffsr upscale` does, through the library: the engine chosen by
//! `diffsr::engine::select` (diffusion when its model is there or downloadable, else the
//! built-in GAN, with the reason), any output factor through the scale plan, and the colour
//! fix, progress and cancellation of the engine-neutral request.
//!
//! ```bash
//! cargo run --release --example auto_engine -- IN.png OUT.png [SCALE] [MODEL]
//! # the tiny test model, 6x (diffusion x4, then the built-in GAN, then a resample):
//! cargo run --release --example auto_engine -- tests/fixtures/images/astronaut-20x16.png \
//!     /tmp/astronaut-6x.png 6 tests/fixtures/tiny-x4-upscaler
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use diffsr::color_fix::ColorFix;
use diffsr::engine::{select, EngineChoice, EngineConfig};
use diffsr::image_io::{load_rgb8, save_rgb8};
use diffsr::pipeline::DiffusionSettings;
use diffsr::scale_plan::ScalePlan;
use diffsr::upscaler::{OutputSize, UpscaleParams, UpscaleRequest, Upscaler};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: auto_engine INPUT OUTPUT [SCALE] [MODEL]";
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let scale: Option<f64> = args.next().map(|s| s.parse()).transpose().context(usage)?;
    let model = args.next();

    let engine = select(&EngineConfig {
        choice: EngineChoice::Auto,
        model,
        // What the diffusion engine does with requests that carry no settings of their own.
        diffusion: DiffusionSettings {
            steps: 20,
            seed: 42,
            ..DiffusionSettings::default()
        },
        ..EngineConfig::default()
    })?;
    if let Some(reason) = &engine.fallback_reason {
        eprintln!("diffusion cannot run ({reason}); using {}", engine.model);
    }
    eprintln!("engine: {}", engine.upscaler.describe());

    let upscaler = engine.planned(ScalePlan::Auto);
    let image = load_rgb8(&input)?;
    let params = UpscaleParams {
        size: OutputSize {
            scale,
            target: None,
        },
        color_fix: ColorFix::Wavelet,
        ..UpscaleParams::default()
    };
    let upscaled = upscaler.upscale(UpscaleRequest::new(&image, &params, &mut |p| {
        eprintln!("{}/{}", p.step, p.total);
        ControlFlow::Continue(()) // Break cancels between steps (or tiles)
    }))?;
    let (width, height) = upscaled.size();
    save_rgb8(&output, &upscaled.to_rgb8())?;
    eprintln!("wrote {} ({width}x{height})", output.display());
    Ok(())
}
