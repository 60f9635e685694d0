//! DRCT against spandrel 0.4.2 (random weights, float64 forward on photo crops through
//! spandrel's padding to a multiple of 16; `scripts/fixtures/zoo_drct.py`): detection of every
//! hyper-parameter spandrel reports, the network's output untiled (the CPU kernel in f32, the
//! tensor-op path in f64), tiled runs against untiled ones, and the errors of a damaged state
//! dict.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::ops::ControlFlow;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{DrctParams, GanArch};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler, StateDict};
use serde_json::{json, Value};

const Z: zoo::Fixtures = zoo::Fixtures("drct");

/// The case's state dict as a real checkpoint holds it: the buffers the fixture left out for
/// size (`buffers`: name → shape, dtype) put back as zeros (diffsr reads only their shapes).
fn full_dict(case: &Value) -> Result<StateDict> {
    let mut dict = Z.dict(case["file"].as_str().context("file")?)?;
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
    let file = Z.dir().join(case["file"].as_str().context("file")?);
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

#[test]
fn every_case_is_detected_and_matches_spandrel() -> Result<()> {
    let t = Z.tensors()?;
    let cases = Z.cases()?;
    ensure!(cases.len() >= 3, "expected every case in the fixture");
    for c in &cases {
        let name = c["name"].as_str().context("name")?;
        let model = load(c)?;
        check_params(name, &model, c)?;
        println!("{name}: {}", model.arch().describe());
        let input = &t[&format!("{name}.input")];
        let want = &t[&format!("{name}.output")];
        common::compare(name, &zoo::forward(&model, input, DType::F32)?, want, 1e-4)?;
        common::compare(
            &format!("{name} (tensor ops, f64)"),
            &zoo::forward(&model, input, DType::F64)?,
            want,
            1e-4,
        )?;
        // Sides under half of 16: spandrel reflects side − 1 pixels, then replicates.
        if let Some(small) = t.get(&format!("{name}.small_input")) {
            let want = &t[&format!("{name}.small_output")];
            common::compare(
                &format!("{name} ({:?} input)", small.dims()),
                &zoo::forward(&model, small, DType::F32)?,
                want,
                1e-4,
            )?;
        }
    }
    Ok(())
}

#[test]
fn the_upscaler_untiled_is_the_clamped_network() -> Result<()> {
    let t = Z.tensors()?;
    for name in ["drct_w16_x2", "drct_tiny_x2"] {
        let model = load(&Z.case(name)?)?;
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

/// Tiles (on the 16-pixel grid) blend to nearly the untiled image: a tile's shifted windows
/// wrap at its own edges, which the overlap hides. Measured with random weights, outputs
/// clamped to [0, 1], context 2·window + 4 (36 for window 16, a 96-pixel overlap): 1.8e-5.
#[test]
fn tiled_runs_stay_close_to_untiled() -> Result<()> {
    let c = Z.case("drct_w16_x2")?;
    let model = load(&c)?;
    let (d, tiles) = zoo::seam(&model, &zoo::pattern(288, 208)?, 192)?;
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
    let model = load(&Z.case("drct_tiny_x2")?)?;
    let err = zoo::forward(&model, &zoo::pattern(20, 18)?, DType::F32).unwrap_err();
    ensure!(err.to_string().contains("position embedding"), "{err}");
    Ok(())
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let c = Z.case("drct_w16_x2")?;
    let name = "layers.1.swin3.attn.qkv.weight";
    let mut dict = full_dict(&c)?;
    ensure!(dict.remove(name).is_some(), "fixture lacks {name}");
    let err = zoo::error_of(dict);
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
    let err = zoo::error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[8, 47, 1, 1]") && err.contains("[8, 48, 1, 1]"),
        "{err}"
    );

    let mut dict = Z.dict("drct_tiny_x2.pth")?;
    let name = "layers.1.swin2.attn_mask";
    dict.insert(
        name.into(),
        Tensor::zeros((4, 16, 16), DType::F32, &Device::Cpu)?,
    );
    let err = zoo::error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[4, 16, 16]") && err.contains("[16, 16, 16]"),
        "{err}"
    );
    Ok(())
}
