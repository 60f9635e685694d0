//! DRCT against spandrel 0.4.2 (random weights, float64 forward on photo crops through
//! spandrel's padding to a multiple of 16; `scripts/fixtures/zoo_drct.py`): detection of every
//! hyper-parameter spandrel reports, the network's output untiled (the CPU kernel in f32, the
//! tensor-op path in f64), tiled runs against untiled ones, and the errors of a damaged state
//! dict.

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{DrctParams, GanArch};
use diffsr::gan::load::read_model_file;
use diffsr::gan::{GanModel, GanNetwork, GanOptions, GanUpscaler, StateDict};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo/drct")
}

fn manifest() -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(fixtures().join("drct.json"))?;
    let m: Value = serde_json::from_str(&text)?;
    Ok(m["cases"].as_array().context("cases")?.clone())
}

fn tensors() -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixtures().join("drct.safetensors"),
        &Device::Cpu,
    )?)
}

fn case(name: &str) -> Result<Value> {
    manifest()?
        .into_iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("case {name}"))
}

fn load_dict(file: &str) -> Result<StateDict> {
    Ok(read_model_file(&fixtures().join(file))?)
}

/// The case's state dict as a real checkpoint holds it: the buffers the fixture left out for
/// size (`buffers`: name → shape, dtype) put back as zeros (diffsr reads only their shapes).
fn full_dict(case: &Value) -> Result<StateDict> {
    let mut dict = load_dict(case["file"].as_str().context("file")?)?;
    for (name, b) in case["buffers"].as_object().context("buffers")? {
        let shape: Vec<usize> = b["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize).context("dim"))
            .collect::<Result<_>>()?;
        let dtype = match b["dtype"].as_str() {
            Some("int64") => DType::I64,
            _ => DType::F32,
        };
        dict.insert(name.clone(), Tensor::zeros(shape, dtype, &Device::Cpu)?);
    }
    Ok(dict)
}

/// A case's model: from the file itself when it holds every buffer, else from [`full_dict`].
fn load(case: &Value) -> Result<GanModel> {
    let file = fixtures().join(case["file"].as_str().context("file")?);
    if case["buffers"].as_object().is_some_and(|b| b.is_empty()) {
        return Ok(GanModel::load(&file)?);
    }
    Ok(GanModel::from_state_dict(full_dict(case)?, &file)?)
}

fn drct(model: &GanModel) -> Result<&DrctParams> {
    match model.arch() {
        GanArch::Drct(p) => Ok(p),
        other => bail!("detected {}", other.describe()),
    }
}

/// Every hyper-parameter spandrel reports equals the detected one.
fn check_params(name: &str, model: &GanModel, c: &Value) -> Result<()> {
    let arch = model.arch();
    let p = drct(model)?;
    let buffers: usize = c["buffers"]
        .as_object()
        .context("buffers")?
        .values()
        .map(|b| {
            b["shape"].as_array().map_or(0, |s| {
                s.iter().filter_map(Value::as_u64).product::<u64>() as usize
            })
        })
        .sum();
    let reported = json!({
        "architecture": "DRCT",
        "scale": arch.scale(),
        "in_channels": arch.in_channels(),
        "out_channels": arch.out_channels(),
        "multiple_of": arch.input_multiple(),
        "supports_half": arch.gpu_dtype() == DType::F16,
        "params": model.parameter_count() - buffers,
        "tags": p.tags(),
    });
    let hyperparameters = json!({
        "img_size": p.img_size,
        "patch_size": 1,
        "in_chans": p.in_channels,
        "embed_dim": p.embed_dim,
        "depths": p.depths,
        "num_heads": p.num_heads,
        "window_size": p.window_size,
        "mlp_ratio": p.mlp_ratio(),
        "qkv_bias": p.qkv_bias,
        "ape": p.ape,
        "patch_norm": p.patch_norm,
        "upscale": p.upscale,
        "img_range": p.img_range,
        "upsampler": p.upsampler.name(),
        "resi_connection": p.resi_connection.name(),
        "gc": p.gc,
    });
    common_fields(name, &reported, c)?;
    common_fields(name, &hyperparameters, &c["hyperparameters"])
}

/// Each field of `got` equals the same field of `want`.
fn common_fields(name: &str, got: &Value, want: &Value) -> Result<()> {
    for (key, value) in got.as_object().context("object")? {
        ensure!(
            &want[key] == value,
            "{name}: {key} detected {value}, spandrel {}",
            want[key]
        );
    }
    Ok(())
}

fn forward(model: &GanModel, input: &Tensor, dtype: DType) -> Result<Tensor> {
    let net = GanNetwork::new(
        model.arch(),
        model.weights(),
        dtype,
        &Device::Cpu,
        model.source(),
    )?;
    Ok(net.forward(&input.to_dtype(dtype)?)?)
}

#[test]
fn every_case_is_detected_and_matches_spandrel() -> Result<()> {
    let t = tensors()?;
    let cases = manifest()?;
    ensure!(cases.len() >= 3, "expected every case in the fixture");
    for c in &cases {
        let name = c["name"].as_str().context("name")?;
        let model = load(c)?;
        check_params(name, &model, c)?;
        println!("{name}: {}", model.arch().describe());
        let input = &t[&format!("{name}.input")];
        let want = &t[&format!("{name}.output")];
        common::compare(name, &forward(&model, input, DType::F32)?, want, 1e-4)?;
        common::compare(
            &format!("{name} (tensor ops, f64)"),
            &forward(&model, input, DType::F64)?,
            want,
            1e-4,
        )?;
        // Sides under half of 16: spandrel reflects side − 1 pixels, then replicates.
        if let Some(small) = t.get(&format!("{name}.small_input")) {
            let want = &t[&format!("{name}.small_output")];
            common::compare(
                &format!("{name} ({:?} input)", small.dims()),
                &forward(&model, small, DType::F32)?,
                want,
                1e-4,
            )?;
        }
    }
    Ok(())
}

#[test]
fn the_upscaler_untiled_is_the_clamped_network() -> Result<()> {
    let t = tensors()?;
    for name in ["drct_w16_x2", "drct_tiny_x2"] {
        let model = load(&case(name)?)?;
        let upscaler = GanUpscaler::new(
            &model,
            &GanOptions {
                tile: Some(0),
                pre_pad: 0,
                ..GanOptions::default()
            },
        )?;
        let got = upscaler.upscale_tensor(&t[&format!("{name}.input")], &mut |_, _| {
            ControlFlow::Continue(())
        })?;
        let want = t[&format!("{name}.output")].clamp(0f32, 1f32)?;
        common::compare(&format!("{name} upscaler"), &got, &want, 1e-4)?;
    }
    Ok(())
}

/// A deterministic test image with structure at every scale.
fn pattern(width: usize, height: usize) -> Result<Tensor> {
    let mut data = Vec::with_capacity(3 * width * height);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let v = ((x * 7 + y * 13 + c * 29) % 31) as f32 / 31.0;
                let w = ((x as f32 * 0.3).sin() * (y as f32 * 0.2 + c as f32).cos() + 1.0) / 2.0;
                data.push(0.5 * v + 0.5 * w);
            }
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, height, width), &Device::Cpu)?)
}

/// max |tiled − untiled| over the image, for tiles of edge `tile`, and the tile count.
fn seam(model: &GanModel, image: &Tensor, tile: usize) -> Result<(f32, usize)> {
    let run = |tile: usize| -> Result<(Tensor, usize)> {
        let upscaler = GanUpscaler::new(
            model,
            &GanOptions {
                tile: Some(tile),
                pre_pad: 0,
                ..GanOptions::default()
            },
        )?;
        let mut tiles = 0;
        let out = upscaler.upscale_tensor(image, &mut |_, total| {
            tiles = total;
            ControlFlow::Continue(())
        })?;
        Ok((out, tiles))
    };
    let (whole, _) = run(0)?;
    let (tiled, tiles) = run(tile)?;
    let d = (tiled - whole)?.abs()?.flatten_all()?.max(0)?;
    Ok((d.to_scalar::<f32>()?, tiles))
}

/// Tiles (on the 16-pixel grid) blend to nearly the untiled image: a tile's shifted windows
/// wrap at its own edges, which the overlap hides. Measured with random weights, outputs
/// clamped to [0, 1], context 2·window + 4 (36 for window 16, a 96-pixel overlap): 1.8e-5.
#[test]
fn tiled_runs_stay_close_to_untiled() -> Result<()> {
    let c = case("drct_w16_x2")?;
    let model = load(&c)?;
    let (d, tiles) = seam(&model, &pattern(288, 208)?, 192)?;
    println!(
        "drct_w16_x2: {tiles} tiles of 192, context {}: max |tiled − untiled| = {d:.2e}",
        model.arch().context_radius()
    );
    ensure!(tiles > 1, "not tiled");
    ensure!(d <= 1e-3, "seam {d:e} above 1e-3");
    Ok(())
}

/// The absolute position embedding fixes the padded input size, as in the reference.
#[test]
fn a_position_embedding_refuses_other_sizes() -> Result<()> {
    let model = load(&case("drct_tiny_x2")?)?;
    let err = forward(&model, &pattern(20, 18)?, DType::F32).unwrap_err();
    ensure!(err.to_string().contains("position embedding"), "{err}");
    Ok(())
}

fn error_of(dict: StateDict) -> String {
    match GanModel::from_state_dict(dict, Path::new("damaged.safetensors")) {
        Ok(m) => format!("loaded as {}", m.arch().describe()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let c = case("drct_w16_x2")?;
    let name = "layers.1.swin3.attn.qkv.weight";
    let mut dict = full_dict(&c)?;
    ensure!(dict.remove(name).is_some(), "fixture lacks {name}");
    let err = error_of(dict);
    ensure!(
        err.contains(name) && err.contains("missing") && err.contains("[120, 40]"),
        "{err}"
    );

    let name = "layers.0.adjust4.weight";
    let mut dict = full_dict(&c)?;
    dict.insert(
        name.into(),
        Tensor::zeros((8, 47, 1, 1), DType::F32, &Device::Cpu)?,
    );
    let err = error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[8, 47, 1, 1]") && err.contains("[8, 48, 1, 1]"),
        "{err}"
    );

    let mut dict = load_dict("drct_tiny_x2.pth")?;
    let name = "layers.1.swin2.attn_mask";
    dict.insert(
        name.into(),
        Tensor::zeros((4, 16, 16), DType::F32, &Device::Cpu)?,
    );
    let err = error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[4, 16, 16]") && err.contains("[16, 16, 16]"),
        "{err}"
    );
    Ok(())
}
