//! SAFMN against spandrel 0.4.2 (`scripts/fixtures/zoo_safmn.py`: random weights, float64
//! forward on odd-sized photo crops padded as spandrel pads them): detection of every
//! hyper-parameter spandrel reports, the network's output (the published SAFMN_DF2K_x2 preset
//! stored in f16, two tiny models), the upscaler whole and in tiles, and the errors for a
//! missing or mis-shaped tensor.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::{GanArch, SafmnParams};
use diffsr::gan::GanModel;
use serde_json::Value;

const Z: zoo::Fixtures = zoo::Fixtures("safmn");

fn safmn_params<'a>(name: &str, arch: &'a GanArch) -> Result<&'a SafmnParams> {
    match arch {
        GanArch::Safmn(p) => Ok(p),
        other => bail!("{name}: detected {}", other.describe()),
    }
}

/// Every hyper-parameter spandrel reported equals the detected one.
fn check_arch(name: &str, model: &GanModel, case: &Value) -> Result<()> {
    let arch = model.arch();
    let p = safmn_params(name, arch)?;
    let hp = &case["hyperparameters"];
    let u = |v: &Value| v.as_u64().map(|x| x as usize);
    ensure!(case["architecture"] == "SAFMN", "{name}: architecture");
    ensure!(Some(arch.scale()) == u(&case["scale"]), "{name}: scale");
    ensure!(
        Some(arch.in_channels()) == u(&case["in_channels"]),
        "{name}: in"
    );
    ensure!(
        Some(arch.out_channels()) == u(&case["out_channels"]),
        "{name}: out"
    );
    ensure!(
        Some(arch.input_multiple()) == u(&case["multiple_of"]),
        "{name}: size multiple {}",
        arch.input_multiple()
    );
    ensure!(Some(p.dim) == u(&hp["dim"]), "{name}: dim {}", p.dim);
    ensure!(Some(p.n_blocks) == u(&hp["n_blocks"]), "{name}: n_blocks");
    ensure!(
        Some(p.upscale) == u(&hp["upscaling_factor"]),
        "{name}: upscaling_factor"
    );
    let ffn = hp["ffn_scale"].as_f64().context("ffn_scale")?;
    ensure!(
        (p.ffn_scale() - ffn).abs() < 1e-12,
        "{name}: ffn_scale {}",
        p.ffn_scale()
    );
    ensure!(
        Some(model.parameter_count()) == u(&case["params"]),
        "{name}: {} parameters",
        model.parameter_count()
    );
    Ok(())
}

#[test]
fn every_case_is_detected_and_matches_spandrel() -> Result<()> {
    let cases = Z.cases()?;
    ensure!(cases.len() >= 3, "expected the preset and two tiny cases");
    let t = Z.tensors()?;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().context("name")?;
        let model = Z.load(case)?;
        check_arch(name, &model, case)?;
        let input = &t[&format!("{name}.input")];
        let want = &t[&format!("{name}.output")];
        // Every case is compared (and printed) before the first failure is returned.
        failures.push(common::compare(
            name,
            &zoo::forward(&model, input, DType::F32)?,
            want,
            1e-4,
        ));
    }
    failures.into_iter().collect()
}

#[test]
fn the_untiled_upscaler_gives_the_clamped_reference() -> Result<()> {
    let t = Z.tensors()?;
    for case in Z.cases()? {
        let name = case["name"].as_str().context("name")?;
        let input = &t[&format!("{name}.input")];
        let want = t[&format!("{name}.output")].clamp(0f32, 1f32)?;
        let got = zoo::upscale_with(&zoo::upscaler(&Z.load(&case)?, 0)?, input)?;
        common::compare(name, &got, &want, 1e-4)?;
    }
    Ok(())
}

/// A photo mirrored into an n × n mosaic (no seams of its own): 48n × 40n.
fn mosaic(n: usize) -> Result<Tensor> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan/photos/coffee.png");
    let photo = diffsr::image_io::load_rgb8(&path)?.to_tensor(&Device::Cpu)?;
    let flip = |t: &Tensor, dim: usize| -> Result<Tensor> {
        let len = t.dim(dim)?;
        let index: Vec<u32> = (0..len as u32).rev().collect();
        Ok(t.index_select(&Tensor::new(index.as_slice(), &Device::Cpu)?, dim)?)
    };
    let mosaic_along = |t: &Tensor, dim: usize| -> Result<Tensor> {
        let flipped = flip(t, dim)?;
        let parts: Vec<&Tensor> = (0..n)
            .map(|i| if i % 2 == 0 { t } else { &flipped })
            .collect();
        Ok(Tensor::cat(&parts, dim)?)
    };
    mosaic_along(&mosaic_along(&photo, 3)?, 2)
}

#[test]
fn tiles_blend_to_the_whole_image() -> Result<()> {
    // Two blocks: the exact receptive radius (2 × 16 + 2) is below the cap, so tiles that
    // overlap by it equal the whole image up to rounding.
    let model = GanModel::load(&Z.dir().join("safmn_x3_dim8.pth"))?;
    let radius = model.arch().context_radius();
    ensure!(
        radius == 34,
        "2-block SAFMN's receptive radius is 34, got {radius}"
    );
    let input = mosaic(5)?;
    let (_, _, h, w) = input.dims4()?;
    let whole = zoo::upscale_with(&zoo::upscaler(&model, 0)?, &input)?;
    let tile = (2 * diffsr::tiling::exact_overlap(radius)).next_multiple_of(8);
    let tiled_up = zoo::upscaler(&model, tile)?;
    ensure!(tiled_up.tile_count(w, h)? > 1, "expected several tiles");
    common::compare(
        "tiled x3",
        &zoo::upscale_with(&tiled_up, &input)?,
        &whole,
        1e-5,
    )
}

/// The preset's receptive radius (130) is capped at 48: measured here, its smallest tiles
/// (256² on a 336 × 280 mosaic) stay within 3.8e-5 of the whole image (`cargo test --test
/// zoo_safmn -- --ignored`; ~20 s in a debug build, so not run by default).
#[test]
#[ignore]
fn tiles_of_the_preset_stay_close() -> Result<()> {
    let model = GanModel::load(&Z.dir().join("safmn_x2_dim36.safetensors"))?;
    ensure!(model.arch().context_radius() == 48);
    let input = mosaic(7)?;
    let (_, _, h, w) = input.dims4()?;
    let whole = zoo::upscale_with(&zoo::upscaler(&model, 0)?, &input)?;
    let tile = 2 * diffsr::tiling::exact_overlap(48);
    let tiled_up = zoo::upscaler(&model, tile)?;
    ensure!(tiled_up.tile_count(w, h)? > 1, "expected several tiles");
    common::compare(
        "tiled preset",
        &zoo::upscale_with(&tiled_up, &input)?,
        &whole,
        2e-4,
    )
}

/// The tiny x4 case's tensors, with `edit` applied, written to a scratch file and loaded.
fn load_edited(tag: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> Result<String> {
    let mut dict =
        candle_core::safetensors::load(Z.dir().join("safmn_x4_dim4.safetensors"), &Device::Cpu)?;
    edit(&mut dict);
    let dir = std::env::temp_dir().join(format!("diffsr-zoo-safmn-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("edited.safetensors");
    candle_core::safetensors::save(&dict, &path)?;
    let result = GanModel::load(&path);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(m) => bail!("loaded as {}", m.arch().describe()),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn a_missing_tensor_is_named() -> Result<()> {
    for name in [
        "feats.0.safm.mfr.1.weight",
        "feats.0.norm2.bias",
        "to_img.0.bias",
    ] {
        let err = load_edited("missing", |d| {
            d.remove(name);
        })?;
        ensure!(
            err.contains(name) && err.contains("missing") && err.contains("edited.safetensors"),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() -> Result<()> {
    // dim 4, hidden 10: the CCM's projection is (4, 10, 1, 1).
    let err = load_edited("shape", |d| {
        let bad = Tensor::zeros((4, 12, 1, 1), DType::F32, &Device::Cpu).unwrap();
        d.insert("feats.0.ccm.ccm.2.weight".into(), bad);
    })?;
    ensure!(
        err.contains("feats.0.ccm.ccm.2.weight")
            && err.contains("[4, 12, 1, 1]")
            && err.contains("[4, 10, 1, 1]"),
        "{err}"
    );
    Ok(())
}
