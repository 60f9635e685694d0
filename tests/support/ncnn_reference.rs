//! A GAN model's output on the fixture photos against ncnn's output of the same model
//! (`tests/fixtures/gan/ncnn_reference*.safetensors`, made by `scripts/fixtures/gan_ncnn*.py`:
//! the `ncnn` PyPI package on the CPU in f32, an independent implementation of the network).
//! Included with `#[path = "support/ncnn_reference.rs"] mod ncnn_reference;`.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::load_rgb8;

/// The bound; f32 against f32 is expected far above it.
pub const MIN_PSNR_DB: f64 = 45.0;

/// PSNR in dB of two images in [0, 1] (both clamped, as they would be saved).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F32)?.clamp(0f32, 1f32)?;
    let b = b.to_dtype(DType::F32)?.clamp(0f32, 1f32)?;
    let mse = (a - b)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    Ok(10.0 * (1.0 / mse.max(1e-20)).log10())
}

/// `model` on each of `photos` (`tests/fixtures/gan/photos/<photo>.png`) against the tensor
/// `<key>.<photo>` of the `reference` file (in `tests/fixtures/gan`), above [`MIN_PSNR_DB`]. ncnn ran each photo
/// whole, with no padding: so does this.
pub fn matches_ncnn(model: &GanModel, reference: &str, key: &str, photos: &[&str]) -> Result<()> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan");
    let reference = candle_core::safetensors::load(fixtures.join(reference), &Device::Cpu)?;
    let upscaler = GanUpscaler::new(
        model,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    for photo in photos {
        let image = load_rgb8(&fixtures.join(format!("photos/{photo}.png")))?;
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
