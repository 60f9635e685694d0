//! Loading from the hub's diffusers layout: variants, and every way a model folder can be
//! wrong giving a message that names the file, component or tensor.

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use cli::copy_dir;
use diffsr::model_dir::ModelDir;
use diffsr::pipeline::{LoadOptions, UpscalePipeline};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-x4-upscaler")
}

/// A scratch copy of the tiny model that a test may damage.
fn scratch_copy(name: &str) -> Result<PathBuf> {
    let dest = std::env::temp_dir().join(format!("diffsr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    copy_dir(&tiny(), &dest)?;
    Ok(dest)
}

fn load_error(dir: &Path) -> String {
    match UpscalePipeline::load(dir, &LoadOptions::default()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_pieces_are_named() -> Result<()> {
    let dir = scratch_copy("missing")?;
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    let err = load_error(&dir);
    assert!(
        err.contains("unet/") && err.contains("diffusion_pytorch_model"),
        "{err}"
    );

    std::fs::remove_dir_all(dir.join("tokenizer"))?;
    let err = load_error(&dir);
    assert!(err.contains("tokenizer"), "{err}");

    std::fs::remove_file(dir.join("model_index.json"))?;
    let err = load_error(&dir);
    assert!(err.contains("model_index.json"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() -> Result<()> {
    let dir = scratch_copy("shape")?;
    let path = dir.join("vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    tensors.insert(
        "decoder.conv_in.weight".into(),
        Tensor::zeros((32, 4, 1, 1), DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, &path)?;
    let err = load_error(&dir);
    assert!(err.contains("decoder.conv_in.weight"), "{err}");
    assert!(
        err.contains("[32, 4, 3, 3]") && err.contains("[32, 4, 1, 1]"),
        "{err}"
    );
    assert!(
        err.contains("vae/diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_malformed_config_names_the_file_and_field() -> Result<()> {
    let dir = scratch_copy("config")?;
    let path = dir.join("unet/config.json");
    let text = std::fs::read_to_string(&path)?
        .replace("\"layers_per_block\": 2", "\"layers_per_block\": \"two\"");
    std::fs::write(&path, text)?;
    let err = load_error(&dir);
    assert!(
        err.contains("unet/config.json") && err.contains("layers_per_block"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn fp16_variants_are_preferred_for_half_precision() -> Result<()> {
    let dir = scratch_copy("variant")?;
    let f32_path = dir.join("unet/diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&f32_path, &Device::Cpu)?;
    let half: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F16)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(
        &half,
        dir.join("unet/diffusion_pytorch_model.fp16.safetensors"),
    )?;
    let model = ModelDir::open(&dir)?;
    let picked = model.weights("unet", "diffusion_pytorch_model", true)?;
    assert!(picked.files[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
    let picked = model.weights("unet", "diffusion_pytorch_model", false)?;
    assert!(picked.files[0].ends_with("diffusion_pytorch_model.safetensors"));

    // Only the fp16 file left: an f32 run still loads it (upcast).
    std::fs::remove_file(&f32_path)?;
    let picked = model.weights("unet", "diffusion_pytorch_model", false)?;
    assert!(picked.files[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
    UpscalePipeline::load(&dir, &LoadOptions::default())?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
