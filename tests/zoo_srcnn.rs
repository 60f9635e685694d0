//! SRCNN against the common PyTorch port's pipeline (yjn870/SRCNN-pytorch `test.py`: Pillow
//! bicubic, BT.601 YCbCr, the network on Y clamped to [0, 1], merged back; in float64 in
//! `scripts/fixtures/zoo_srcnn.py`, spandrel 0.4.2 having no SRCNN): detection of channels,
//! filters, kernels (9-5-5, 9-1-5, 5-3-3) and biases from the weights, the scale from the
//! default (2), the `diffsr.scale` entry or `GanModel::with_scale`, the output within 1e-4
//! relative, exact tiling, and the errors of a missing or mis-shaped tensor or a bad scale.

mod common;
#[path = "support/zoo_omnisr_gen.rs"]
mod zoo;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use diffsr::gan::arch::{GanArch, SRCNN_SCALE_KEY};
use diffsr::gan::GanModel;
use serde_json::Value;

const FIXTURE: &str = "srcnn";

/// The case's model, at the scale the caller sets where the case says so.
fn load(case: &Value) -> Result<GanModel> {
    let model = zoo::load_case(FIXTURE, case)?;
    Ok(match case["set_scale"].as_u64() {
        Some(s) => model.with_scale(s as usize)?,
        None => model,
    })
}

fn check_arch(model: &GanModel, case: &Value) -> Result<()> {
    let name = case["name"].as_str().context("name")?;
    zoo::check_common(model, case)?;
    let GanArch::Srcnn(p) = model.arch() else {
        anyhow::bail!("{name}: detected as {}", model.arch().describe());
    };
    let hp = &case["hyperparameters"];
    let list = |k: &str| -> Vec<usize> {
        hp[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        Some(p.net_channels as u64) == hp["net_channels"].as_u64(),
        "{name}: net channels {}",
        p.net_channels
    );
    ensure!(
        p.filters.to_vec() == list("filters"),
        "{name}: filters {:?}",
        p.filters
    );
    ensure!(
        p.kernels.to_vec() == list("kernels"),
        "{name}: kernels {:?}",
        p.kernels
    );
    ensure!(hp["bias"] == p.bias, "{name}: bias {}", p.bias);
    Ok(())
}

#[test]
fn every_case_matches_the_port() -> Result<()> {
    let t = zoo::tensors(FIXTURE)?;
    let cases = zoo::cases(FIXTURE)?;
    ensure!(cases.len() >= 4, "every case in the fixture");
    for case in &cases {
        let name = case["name"].as_str().context("name")?;
        let model = load(case)?;
        check_arch(&model, case)?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        common::compare(name, &zoo::forward(&model, input)?, want, 1e-4)?;
        let (got, _) = zoo::upscale(&model, input, 0)?;
        common::compare(
            name,
            &got,
            &want.clamp(0f32, 1f32)?,
            zoo::clamped_rel(want)?,
        )?;
    }
    Ok(())
}

#[test]
fn the_scale_comes_from_the_default_the_entry_or_the_caller() -> Result<()> {
    let dir = zoo::fixtures(FIXTURE);
    let preset = GanModel::load(&dir.join("srcnn_955.pth"))?;
    ensure!(preset.arch().scale() == 2, "default scale");
    let tiny = GanModel::load(&dir.join("tiny_915_x4.safetensors"))?;
    ensure!(tiny.arch().scale() == 4, "diffsr.scale entry");
    ensure!(
        tiny.parameter_count() == 8 * 81 + 8 + 4 * 8 + 4 + 4 * 25 + 1,
        "no entry counted"
    );
    // The caller's scale is written as the entry, so a converted file keeps it.
    let x3 = preset.with_scale(3)?;
    ensure!(x3.arch().scale() == 3, "set scale");
    let entry = x3.weights().get(SRCNN_SCALE_KEY).context("entry written")?;
    ensure!(
        entry.flatten_all()?.to_vec1::<f32>()? == [3.0],
        "entry value"
    );
    let err = x3.clone().with_scale(0).unwrap_err().to_string();
    ensure!(err.contains("scale"), "{err}");
    // Other architectures keep their own scale.
    let srresnet = GanModel::load(&zoo::fixtures("srresnet").join("tiny_x2.safetensors"))?;
    ensure!(srresnet.clone().with_scale(2).is_ok(), "own scale");
    let err = srresnet.with_scale(3).unwrap_err().to_string();
    ensure!(err.contains("cannot be chosen"), "{err}");
    // A malformed entry is refused naming it.
    let mut dict = zoo::raw_dict(FIXTURE, "tiny_915_x4.safetensors")?;
    dict.insert(
        SRCNN_SCALE_KEY.into(),
        Tensor::new(&[1.5f32], &Device::Cpu)?,
    );
    let err = GanModel::from_state_dict(dict, std::path::Path::new("s.safetensors"))
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains(SRCNN_SCALE_KEY) && err.contains("1.5"),
        "{err}"
    );
    Ok(())
}

/// The context radius is exact (bicubic taps, the network's kernels), so tiles blend to the
/// whole-image result.
#[test]
fn tiles_equal_the_whole_image() -> Result<()> {
    let image = zoo::astronaut()?.narrow(2, 20, 60)?.narrow(3, 10, 70)?;
    for case in zoo::cases(FIXTURE)? {
        let name = case["name"].as_str().context("name")?;
        let model = load(&case)?;
        let radius = model.arch().context_radius();
        let (whole, _) = zoo::upscale(&model, &image, 0)?;
        let tile = 2 * (radius * 8).div_ceil(3);
        let (tiled, count) = zoo::upscale(&model, &image, tile)?;
        let diff = zoo::max_diff(&tiled, &whole)?;
        println!("{name}: radius {radius}, tile {tile}: {count} tiles, max |Δ| {diff:.3e}");
        ensure!(count > 1, "{name}: one tile");
        ensure!(diff < 1e-5, "{name}: tiles differ by {diff}");
    }
    Ok(())
}

#[test]
fn a_missing_or_misshaped_tensor_is_named() -> Result<()> {
    let dict = zoo::raw_dict(FIXTURE, "tiny_915_x4.safetensors")?;
    zoo::check_bad_tensor(&dict, "conv3.bias", &[2])?;
    zoo::check_bad_tensor(&dict, "conv2.bias", &[5])?;
    zoo::check_bad_tensor(&dict, "conv2.weight", &[4, 7, 1, 1])?;
    let preset = zoo::raw_dict_pth(FIXTURE, "srcnn_955.pth")?;
    // Kernel sizes are read from the shapes (a [32, 64, 3, 3] conv2 is a 9-3-5 SRCNN), channel
    // counts must chain.
    zoo::check_misshaped(&preset, "conv3.weight", &[1, 31, 5, 5])?;
    Ok(())
}

/// Bicubic, colour conversion and three convolutions: f16 within about 2e-3.
#[test]
fn f16_stays_close() -> Result<()> {
    zoo::check_f16(FIXTURE, 1e-2, load)
}
