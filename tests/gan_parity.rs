//! The GAN architectures against their PyTorch reference (random weights, float64 forward;
//! `scripts/fixtures/gan_archs.py`): every container (.safetensors, .pth wrapped in
//! `params_ema` / `params` / bare, the old ESRGAN key layout), detection from the weights
//! alone, network interpolation (`--denoise`), and the file errors.

mod common;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{GanArch, SrvggAct};
use diffsr::gan::{GanModel, GanNetwork, GanOptions, GanUpscaler};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan")
}

fn manifest() -> Result<Value> {
    let text = std::fs::read_to_string(fixtures().join("gan_parity.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn tensors() -> Result<std::collections::HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixtures().join("gan_parity.safetensors"),
        &Device::Cpu,
    )?)
}

fn load(variant: &Value) -> Result<GanModel> {
    let file = variant["file"].as_str().context("file")?;
    let model = GanModel::load(&fixtures().join(file))?;
    Ok(match variant["act"].as_str() {
        Some("leakyrelu") => model.with_srvgg_act(SrvggAct::LeakyRelu)?,
        _ => model,
    })
}

/// The detected hyper-parameters equal the ones the fixture was built with.
fn check_arch(name: &str, arch: &GanArch, v: &Value) -> Result<()> {
    let want = |k: &str| v[k].as_u64().map(|x| x as usize);
    ensure!(
        arch.scale() == want("scale").context("scale")?,
        "{name}: scale"
    );
    ensure!(
        arch.in_channels() == want("in_ch").context("in_ch")?,
        "{name}: in_ch"
    );
    ensure!(
        arch.out_channels() == want("out_ch").context("out_ch")?,
        "{name}: out_ch"
    );
    match arch {
        GanArch::RrdbNet(p) => {
            ensure!(v["arch"] == "rrdb", "{name}: detected RRDBNet");
            ensure!(Some(p.num_feat) == want("nf"), "{name}: nf {}", p.num_feat);
            ensure!(
                Some(p.num_block) == want("nb"),
                "{name}: nb {}",
                p.num_block
            );
            ensure!(
                Some(p.num_grow_ch) == want("gc"),
                "{name}: gc {}",
                p.num_grow_ch
            );
        }
        GanArch::Srvgg(p) => {
            ensure!(v["arch"] == "srvgg", "{name}: detected SRVGGNetCompact");
            ensure!(Some(p.num_feat) == want("nf"), "{name}: nf");
            ensure!(Some(p.num_conv) == want("num_conv"), "{name}: num_conv");
            ensure!(v["act"] == p.act.name(), "{name}: act {}", p.act.name());
        }
        // The zoo's architectures have their own fixtures (tests/zoo_*.rs).
        other => anyhow::bail!("{name}: detected {}", other.describe()),
    }
    Ok(())
}

fn forward(model: &GanModel, input: &Tensor) -> Result<Tensor> {
    let net = GanNetwork::new(
        model.arch(),
        model.weights(),
        DType::F32,
        &Device::Cpu,
        model.source(),
    )?;
    Ok(net.forward(input)?)
}

#[test]
fn every_variant_matches_pytorch() -> Result<()> {
    let m = manifest()?;
    let t = tensors()?;
    let variants = m["variants"].as_array().context("variants")?;
    ensure!(
        variants.len() >= 10,
        "expected every variant in the fixture"
    );
    for v in variants {
        let name = v["name"].as_str().context("name")?;
        let model = load(v)?;
        check_arch(name, model.arch(), v)?;
        let input = &t[v["input"].as_str().context("input")?];
        let want = &t[v["output"].as_str().context("output")?];
        let got = forward(&model, input)?;
        common::compare(name, &got, want, 1e-4)?;
        ensure!(
            model.parameter_count() as u64 == v["params"].as_u64().context("params")?,
            "{name}: {} parameters",
            model.parameter_count()
        );
    }
    Ok(())
}

#[test]
fn upscaler_untiled_equals_the_clamped_network_output() -> Result<()> {
    let m = manifest()?;
    let t = tensors()?;
    for v in m["variants"].as_array().context("variants")? {
        let name = v["name"].as_str().context("name")?;
        if v["in_ch"] != 3 || v["scale"] == 1 {
            continue;
        }
        let model = load(v)?;
        let upscaler = GanUpscaler::new(
            &model,
            &GanOptions {
                tile: Some(0),
                pre_pad: 0,
                ..GanOptions::default()
            },
        )?;
        let input = &t[v["input"].as_str().context("input")?];
        let want = t[v["output"].as_str().context("output")?].clamp(0f32, 1f32)?;
        let got =
            upscaler.upscale_tensor(input, &mut |_, _| std::ops::ControlFlow::Continue(()))?;
        common::compare(name, &got, &want, 1e-4)?;
    }
    Ok(())
}

#[test]
fn grey_models_run_on_luma_and_repeat_their_output() -> Result<()> {
    let m = manifest()?;
    let t = tensors()?;
    let v = m["variants"]
        .as_array()
        .context("variants")?
        .iter()
        .find(|v| v["name"] == "rrdb_x4_grey")
        .context("grey variant")?;
    let model = load(v)?;
    let grey = &t["rrdb_x4_grey.input"];
    // An RGB image whose channels are all the grey input has that grey input as its luma.
    let rgb = grey.repeat((1, 3, 1, 1))?;
    let upscaler = GanUpscaler::new(
        &model,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    let got = upscaler.upscale_tensor(&rgb, &mut |_, _| std::ops::ControlFlow::Continue(()))?;
    let want = t["rrdb_x4_grey.output"]
        .clamp(0f32, 1f32)?
        .repeat((1, 3, 1, 1))?;
    common::compare("grey", &got, &want, 1e-4)
}

#[test]
fn denoise_blends_the_general_and_wdn_weights() -> Result<()> {
    let m = manifest()?;
    let t = tensors()?;
    let dni = &m["dni"][0];
    let files = dni["files"].as_array().context("files")?;
    let general = GanModel::load(&fixtures().join(files[0].as_str().context("file")?))?;
    let wdn = GanModel::load(&fixtures().join(files[1].as_str().context("file")?))?;
    let strength = dni["denoise_strength"].as_f64().context("strength")?;
    let blended = general.interpolate(&wdn, strength)?;
    let got = forward(&blended, &t[dni["input"].as_str().context("input")?])?;
    let want = &t[dni["output"].as_str().context("output")?];
    common::compare("dni 0.3", &got, want, 1e-4)?;
    // The end points are the models themselves.
    let input = &t["srvgg_general.input"];
    common::compare(
        "dni 1.0",
        &forward(&general.interpolate(&wdn, 1.0)?, input)?,
        &t["srvgg_general.output"],
        1e-5,
    )?;
    ensure!(general.interpolate(&wdn, 1.5).is_err(), "strength above 1");
    let other = GanModel::load(&fixtures().join("rrdb_x4.safetensors"))?;
    let err = general.interpolate(&other, 0.5).unwrap_err().to_string();
    ensure!(err.contains("cannot be blended"), "{err}");
    Ok(())
}

fn load_error(file: &str) -> String {
    match GanModel::load(&fixtures().join(file)) {
        Ok(_) => format!("{file} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_model_files_say_what_is_wrong() -> Result<()> {
    let err = load_error("not_a_state_dict.pth");
    ensure!(
        err.contains("not_a_state_dict.pth") && err.contains("no state dict"),
        "{err}"
    );
    let err = load_error("legacy_format.pth");
    ensure!(
        err.contains("legacy_format.pth") && err.contains("zip"),
        "{err}"
    );
    let err = load_error("unknown_arch.safetensors");
    ensure!(
        err.contains("not a known architecture") && err.contains("fc.weight"),
        "{err}"
    );
    let err = load_error("missing.pth");
    ensure!(err.contains("missing.pth"), "{err}");
    let dir = std::env::temp_dir().join(format!("diffsr-gan-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let odd = dir.join("weights.onnx");
    std::fs::write(&odd, b"x")?;
    let err = GanModel::load(&odd)
        .err()
        .context("onnx loaded")?
        .to_string();
    ensure!(err.contains("unknown model file type"), "{err}");
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(fixtures().join("rrdb_x4.safetensors"))?;
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let err = GanModel::load(&truncated)
        .err()
        .context("loaded")?
        .to_string();
    ensure!(err.contains("truncated.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn convert_round_trips_through_safetensors() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("diffsr-gan-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = GanModel::load(&fixtures().join("rrdb_x4_esrgan_old.pth"))?;
    let out = dir.join("converted.safetensors");
    model.save_safetensors(&out, None)?;
    let back = GanModel::load(&out)?;
    ensure!(back.arch() == model.arch(), "architecture survives");
    ensure!(
        back.weights().keys().eq(model.weights().keys()),
        "names survive"
    );
    ensure!(
        back.weights().contains_key("conv_up2.weight"),
        "basicsr names are written"
    );
    std::fs::remove_dir_all(&dir)?;
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

#[test]
fn tiled_srvgg_equals_untiled() -> Result<()> {
    let model = GanModel::load(&fixtures().join("srvgg_x4_prelu.pth"))?;
    let image = pattern(61, 47)?;
    let run = |tile: usize| -> Result<Tensor> {
        let upscaler = GanUpscaler::new(
            &model,
            &GanOptions {
                tile: Some(tile),
                ..GanOptions::default()
            },
        )?;
        let mut calls = 0;
        let out = upscaler.upscale_tensor(&image, &mut |_, total| {
            calls = total;
            std::ops::ControlFlow::Continue(())
        })?;
        println!("tile {tile}: {calls} tiles");
        Ok(out)
    };
    let whole = run(0)?;
    for tile in [28, 40] {
        common::compare(&format!("tile {tile}"), &run(tile)?, &whole, 1e-5)?;
    }
    // A tile narrower than twice the overlap is refused, naming the option.
    let err = run(8).unwrap_err().to_string();
    ensure!(err.contains("`tile`") && err.contains("too small"), "{err}");
    Ok(())
}
