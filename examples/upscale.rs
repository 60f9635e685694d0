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
use diffsr::image_io::{load_rgb8, save_rgb8, Rgb8};
use diffsr::pipeline::{tensor_to_rgb8, LoadOptions, UpscaleOptions, UpscalePipeline};
use diffsr::schedulers::SchedulerKind;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: upscale MODEL_DIR INPUT OUTPUT [PROMPT]";
    let model = PathBuf::from(args.next().context(usage)?);
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let prompt = args.next().unwrap_or_default();

    let pipeline = UpscalePipeline::load(&model, &LoadOptions::default())?;
    let image = load_rgb8(&input)?;
    let options = UpscaleOptions {
        prompt,
        steps: 20,
        scheduler: Some(SchedulerKind::DpmPp2mKarras),
        seed: 42,
        ..UpscaleOptions::default()
    };
    let upscaled =
        pipeline.upscale_rgb8(&image.data, image.width, image.height, &options, &mut |p| {
            eprintln!("step {}/{}", p.step, p.total);
            ControlFlow::Continue(())
        })?;
    let (data, width, height) = tensor_to_rgb8(&upscaled)?;
    save_rgb8(
        &output,
        &Rgb8 {
            data,
            width,
            height,
        },
    )?;
    println!(
        "{} -> {} ({width}x{height})",
        input.display(),
        output.display()
    );
    Ok(())
}
