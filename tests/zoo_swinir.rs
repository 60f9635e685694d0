//! SwinIR against spandrel 0.4.2 (random weights, float64 forward on photo crops;
//! `scripts/fixtures/zoo_swinir.py`): detection of every hyper-parameter spandrel reports, the
//! network's output untiled (the CPU kernel in f32, the tensor-op path in f64), tiled runs
//! against untiled ones, and the errors of a damaged state dict.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::ops::ControlFlow;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{GanArch, SwinIrParams};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use serde_json::{json, Value};

const Z: zoo::Fixtures = zoo::Fixtures("swinir");

fn swinir(model: &GanModel) -> Result<&SwinIrParams> {
    match model.arch() {
        GanArch::SwinIr(p) => Ok(p),
        other => bail!("detected {}", other.describe()),
    }
}

/// Every hyper-parameter spandrel reports equals the detected one.
fn check_params(name: &str, model: &GanModel, c: &Value) -> Result<()> {
    let arch = model.arch();
    let p = swinir(model)?;
    let reported = json!({
        "architecture": "SwinIR",
        "scale": arch.scale(),
        "in_channels": arch.in_channels(),
        "out_channels": arch.out_channels(),
        "params": model.parameter_count(),
    });
    let hyperparameters = json!({
        "in_chans": p.in_channels,
        "embed_dim": p.embed_dim,
        "depths": p.depths,
        "num_heads": p.num_heads,
        "window_size": p.window_size,
        "img_size": p.img_size,
        "upscale": p.upscale,
        "start_unshuffle": p.start_unshuffle,
        "mlp_ratio": p.mlp_ratio(),
        "img_range": p.img_range,
        "upsampler": p.upsampler.name(),
        "resi_connection": p.resi_connection.name(),
    });
    zoo::same_fields(name, &reported, c)?;
    zoo::same_fields(name, &hyperparameters, &c["hyperparameters"])
}

#[test]
fn every_case_is_detected_and_matches_spandrel() -> Result<()> {
    let t = Z.tensors()?;
    let cases = Z.cases()?;
    ensure!(cases.len() >= 4, "expected every case in the fixture");
    for c in &cases {
        let name = c["name"].as_str().context("name")?;
        let model = Z.load(c)?;
        check_params(name, &model, c)?;
        println!("{name}: {}", model.arch().describe());
        let input = &t[&format!("{name}.input")];
        let want = &t[&format!("{name}.output")];
        // The CPU kernel (f32) and the reference's tensor ops (f64) both match spandrel.
        common::compare(name, &zoo::forward(&model, input, DType::F32)?, want, 1e-4)?;
        common::compare(
            &format!("{name} (tensor ops, f64)"),
            &zoo::forward(&model, input, DType::F64)?,
            want,
            1e-4,
        )?;
    }
    Ok(())
}

#[test]
fn the_upscaler_untiled_is_the_clamped_network() -> Result<()> {
    let t = Z.tensors()?;
    let c = Z.case("swinir_tiny_real_x4")?;
    let model = Z.load(&c)?;
    let upscaler = GanUpscaler::new(
        &model,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    let got = upscaler.upscale_tensor(&t["swinir_tiny_real_x4.input"], &mut |_, _| {
        ControlFlow::Continue(())
    })?;
    let want = t["swinir_tiny_real_x4.output"].clamp(0f32, 1f32)?;
    common::compare("upscaler", &got, &want, 1e-4)
}

/// Tiles blend to nearly the untiled image: the windows are aligned to the whole image's, but
/// a tile's shifted windows wrap at its own edges, which the overlap hides. Measured (random
/// weights, outputs clamped to [0, 1], context 2·window + 4): 5.0e-6 (tiny, window 4) and
/// 2.0e-5 (SwinIR-light, window 8); with a context of 2·window the light preset's seams were
/// 1.5e-4, with 1.5·window 7.8e-3, with one window 9.9e-2.
#[test]
fn tiled_runs_stay_close_to_untiled() -> Result<()> {
    for (name, w, h, tile, bound) in [
        ("swinir_tiny_ps_3conv", 100, 76, 64, 1e-4f32),
        ("swinir_light_x2", 136, 112, 112, 1e-4),
    ] {
        let model = Z.load(&Z.case(name)?)?;
        let (d, tiles) = zoo::seam(&model, &zoo::pattern(w, h)?, tile)?;
        println!(
            "{name}: {tiles} tiles of {tile}, context {}: max |tiled − untiled| = {d:.2e}",
            model.arch().context_radius()
        );
        ensure!(tiles > 1, "{name}: not tiled");
        ensure!(d <= bound, "{name}: seam {d:e} above {bound:e}");
    }
    Ok(())
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let name = "layers.1.residual_group.blocks.1.attn.qkv.weight";
    let mut dict = Z.dict("swinir_tiny_ps_3conv.safetensors")?;
    ensure!(dict.remove(name).is_some(), "fixture lacks {name}");
    let err = zoo::error_of(dict);
    ensure!(
        err.contains(name) && err.contains("missing") && err.contains("[48, 16]"),
        "{err}"
    );

    let name = "upsample.0.weight";
    let mut dict = Z.dict("swinir_tiny_ps_3conv.safetensors")?;
    dict.insert(
        name.into(),
        Tensor::zeros((256, 64, 1, 1), DType::F32, &Device::Cpu)?,
    );
    let err = zoo::error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[256, 64, 1, 1]") && err.contains("3x3"),
        "{err}"
    );

    let mut dict = Z.dict("swinir_tiny_real_x4.pth")?;
    let name = "layers.0.residual_group.blocks.0.mlp.fc2.weight";
    dict.insert(
        name.into(),
        Tensor::zeros((12, 23), DType::F32, &Device::Cpu)?,
    );
    let err = zoo::error_of(dict);
    ensure!(
        err.contains(name) && err.contains("[12, 23]") && err.contains("[12, 24]"),
        "{err}"
    );
    Ok(())
}
