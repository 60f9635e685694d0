//! Upscales one image with the GAN path through the library API: the built-in
//! realesr-animevideov3, or any Real-ESRGAN-family model file (.safetensors, .pth, ncnn
//! .param/.bin), its architecture detected from the weights.
//!
//! ```bash
//! cargo run --release --example gan_upscale -- IN.png OUT.png [MODEL_FILE]
//! cargo run --release --example gan_upscale -- tests/fixtures/gan/photos/chelsea.png /tmp/chelsea-4x.png
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::{load_rgb8, save_rgb8};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gan_upscale INPUT OUTPUT [MODEL_FILE]";
    let input = PathBuf::from(args.next().context(usage)?);
    let output = PathBuf::from(args.next().context(usage)?);
    let model = match args.next() {
        Some(path) => GanModel::load(path.as_ref())?,
        None => embedded_model()?,
    };
    eprintln!("{}", model.arch().describe());
    // Tiles are sized from the memory available; `tile: Some(n)` fixes them.
    let upscaler = GanUpscaler::new(&model, &GanOptions::default())?;
    let image = load_rgb8(&input)?;
    let upscaled = upscaler.upscale_image(&image, &mut |p| {
        eprintln!("tile {}/{}", p.step, p.total);
        ControlFlow::Continue(()) // Break cancels between tiles
    })?;
    let (width, height) = upscaled.size();
    save_rgb8(&output, &upscaled.to_rgb8())?;
    eprintln!("wrote {} ({width}x{height})", output.display());
    Ok(())
}
