//! Upscales one image 4× through the library API.
//!
//! ```bash
//! cargo run --release --example upscale -- MODEL_DIR IN.png OUT.png "a prompt"
//! # with the tiny test model:
//! cargo run --release --example upscale -- tests/fixtures/tiny-x4-upscaler \
//!     tests/fixtures/images/astronaut-20x16.png /tmp/astronaut-4x.png "an astronaut"
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use diffsr::image_io::{load_rgb8, save_rgb8};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, UpscalePipeline};
use diffsr::schedulers::SchedulerKind;
use diffsr::upscaler::{UpscaleParams, UpscaleRequest, Upscaler};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: upscale MODEL_DIR INPUT OUTPUT [PROMPT]";
    let model = PathBuf::from(args.next().context(usage)?);
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let prompt = args.next().unwrap_or_default();

    // The settings an upscale uses when its request carries none of its own.
    let pipeline =
        UpscalePipeline::load(&model, &LoadOptions::default())?.with_settings(DiffusionSettings {
            prompt,
            steps: 20,
            scheduler: Some(SchedulerKind::DpmPp2mKarras),
            seed: 42,
            ..DiffusionSettings::default()
        });
    let image = load_rgb8(&input)?;
    // The model's own factor (4x), no colour fix; `size: OutputSize::scale(2.5)` would land
    // on 2.5x, `color_fix: ColorFix::Wavelet` correct the colours against the input.
    let params = UpscaleParams::default();
    let upscaled = pipeline.upscale(UpscaleRequest::new(&image, &params, &mut |p| {
        eprintln!("step {}/{}", p.step, p.total);
        ControlFlow::Continue(()) // Break cancels between steps
    }))?;
    let (width, height) = upscaled.size();
    save_rgb8(&output, &upscaled.to_rgb8())?;
    println!(
        "{} -> {} ({width}x{height})",
        input.display(),
        output.display()
    );
    Ok(())
}
