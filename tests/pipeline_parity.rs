//! Whole-pipeline parity with diffusers' `StableDiffusionUpscalePipeline` on the tiny x4 model:
//! same image, prompt, solver, guidance, noise level and seed (diffusers' CPU generator) must
//! give the same image. Tolerance: mean absolute error ≤ 1/255 over the [0, 1] output, and no
//! pixel off by more than 1e-4 (measured: ≤ 3e-6). Fixtures: `scripts/fixtures/x4_pipeline.py`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::image_io::{load_rgb8, Rgb8};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, UpscalePipeline};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn options_of(case: &Value) -> Result<DiffusionSettings> {
    Ok(DiffusionSettings {
        prompt: case["prompt"].as_str().unwrap_or_default().to_string(),
        negative_prompt: case["negative_prompt"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        steps: case["steps"].as_u64().context("steps")? as usize,
        guidance_scale: case["guidance"].as_f64().context("guidance")?,
        noise_level: case["noise_level"].as_u64().context("noise_level")? as u32,
        eta: case["eta"].as_f64().unwrap_or(0.0),
        scheduler: case["scheduler"].as_str().map(str::parse).transpose()?,
        seed: case["seed"].as_u64().context("seed")?,
    })
}

fn run_case(pipeline: &UpscalePipeline, case: &Value, reference: &Tensor) -> Result<f32> {
    let image = load_rgb8(
        &fixtures()
            .join("images")
            .join(case["image"].as_str().unwrap()),
    )?;
    let mut steps = 0;
    let out = pipeline.upscale_with(&image, &options_of(case)?, &mut |_| {
        steps += 1;
        ControlFlow::Continue(())
    })?;
    ensure!(steps > 0, "no progress reported");
    // diffusers' "np" output is (h, w, 3).
    let ours = Tensor::from_vec(out.data, (out.height, out.width, 3), &Device::Cpu)?;
    ensure!(
        ours.dims() == reference.dims(),
        "shape {:?} != diffusers {:?}",
        ours.dims(),
        reference.dims()
    );
    let diff = (ours - reference)?.abs()?;
    let mae = diff.mean_all()?.to_scalar::<f32>()?;
    let max = diff.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    ensure!(
        mae <= 1.0 / 255.0,
        "mean abs error {mae} (max {max}) exceeds 1/255"
    );
    ensure!(max <= 1e-4, "max abs error {max} exceeds 1e-4 (mean {mae})");
    Ok(max)
}

#[test]
fn upscales_like_diffusers() -> Result<()> {
    let dir = fixtures();
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("x4_pipeline.json"))?)?;
    let references =
        candle_core::safetensors::load(dir.join("x4_pipeline.safetensors"), &Device::Cpu)?;
    let pipeline = UpscalePipeline::load(&dir.join("tiny-x4-upscaler"), &LoadOptions::default())?;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let reference = references[name].to_dtype(DType::F32)?;
        match run_case(&pipeline, case, &reference) {
            Ok(max) => eprintln!("{name}: ok (max abs diff {max:.2e})"),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn cancelling_stops_between_steps() -> Result<()> {
    let dir = fixtures();
    let pipeline = UpscalePipeline::load(&dir.join("tiny-x4-upscaler"), &LoadOptions::default())?;
    let image = load_rgb8(&dir.join("images/chelsea-16x12.png"))?;
    let options = DiffusionSettings {
        steps: 5,
        ..DiffusionSettings::default()
    };
    let mut seen = 0;
    let result = pipeline.upscale_with(&image, &options, &mut |p| {
        seen = p.step;
        if p.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    ensure!(
        matches!(result, Err(diffsr::Error::Cancelled)),
        "{result:?}"
    );
    ensure!(seen == 2, "ran to step {seen}");
    Ok(())
}

#[test]
fn bad_options_and_models_are_named() -> Result<()> {
    let dir = fixtures();
    let pipeline = UpscalePipeline::load(&dir.join("tiny-x4-upscaler"), &LoadOptions::default())?;
    let image = load_rgb8(&dir.join("images/chelsea-16x12.png"))?;
    let run = |options: DiffusionSettings| {
        pipeline
            .upscale_with(&image, &options, &mut |_| ControlFlow::Continue(()))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let err = run(DiffusionSettings {
        noise_level: 351,
        ..DiffusionSettings::default()
    });
    ensure!(err.contains("noise_level") && err.contains("350"), "{err}");
    let err = run(DiffusionSettings {
        steps: 0,
        ..DiffusionSettings::default()
    });
    ensure!(err.contains("steps"), "{err}");
    let tiny = pipeline
        .upscale_with(
            &Rgb8::new(vec![0u8; 9], 3, 1)?,
            &DiffusionSettings::default(),
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap_err()
        .to_string();
    ensure!(tiny.contains("too small"), "{tiny}");

    let missing = UpscalePipeline::load(Path::new("/nonexistent/model"), &LoadOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(missing.contains("/nonexistent/model"), "{missing}");
    Ok(())
}
