//! SPAN against spandrel 0.4.2 (`scripts/fixtures/zoo_span.py`: random weights, float64
//! forward on photo crops): detection of every hyper-parameter spandrel reports, the network's
//! output, the upscaler whole and in tiles, and the errors for a missing or mis-shaped tensor.
//!
//! The published preset (4x-spanx4-ch48) is too large to store: its weights are regenerated
//! here from the manifest (splitmix64 per tensor, the fixture script's `uniform`), checked
//! against values the script recorded, written to a temporary .safetensors and loaded from it.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::span::{IMG_RANGE, RGB_MEAN};
use diffsr::gan::arch::{GanArch, SpanParams};
use diffsr::gan::GanModel;
use serde_json::Value;

const Z: zoo::Fixtures = zoo::Fixtures("span");

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("diffsr-zoo-span-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fixture script's `uniform`: splitmix64 of `seed + (i + 1)·γ`, its top 53 bits as a
/// float64 in [0, 1), mapped to [-bound, bound), rounded to f32.
fn uniform(seed: u64, count: usize, bound: f64) -> Vec<f32> {
    (1..=count as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * 2f64.powi(-53);
            ((2.0 * u - 1.0) * bound) as f32
        })
        .collect()
}

/// The generated case's state dict, checked against the values the script recorded.
fn generated(listing: &[Value]) -> Result<HashMap<String, Tensor>> {
    let mut dict = HashMap::new();
    for t in listing {
        let name = t["name"].as_str().context("name")?;
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).context("dim"))
            .collect::<Result<_>>()?;
        let count = shape.iter().product();
        let seed = t["seed"].as_u64().context("seed")?;
        let values = uniform(seed, count, t["bound"].as_f64().context("bound")?);
        for (k, want) in t["first"].as_array().context("first")?.iter().enumerate() {
            let want = want.as_f64().context("first value")?;
            // serde_json's float parsing may be an ulp of f64 off: equal once in f32.
            ensure!(
                values[k] == want as f32,
                "{name}[{k}]: {} vs {want}",
                values[k]
            );
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want = t["sum"].as_f64().context("sum")?;
        ensure!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: sum {sum} vs {want}"
        );
        dict.insert(
            name.to_string(),
            Tensor::from_vec(values, shape, &Device::Cpu)?,
        );
    }
    Ok(dict)
}

/// The case's model file: the stored one, or the generated weights written to `scratch`.
fn model_file(case: &Value, scratch: &Scratch) -> Result<PathBuf> {
    if let Some(file) = case["file"].as_str() {
        return Ok(Z.dir().join(file));
    }
    let listing = case["generated"].as_array().context("generated")?;
    let name = case["name"].as_str().context("name")?;
    let path = scratch.path(&format!("{name}.safetensors"));
    candle_core::safetensors::save(&generated(listing)?, &path)?;
    Ok(path)
}

fn span_params<'a>(name: &str, arch: &'a GanArch) -> Result<&'a SpanParams> {
    match arch {
        GanArch::Span(p) => Ok(p),
        other => bail!("{name}: detected {}", other.describe()),
    }
}

/// Every hyper-parameter spandrel reported equals the detected one.
fn check_arch(name: &str, model: &GanModel, case: &Value) -> Result<()> {
    let arch = model.arch();
    let p = span_params(name, arch)?;
    let hp = &case["hyperparameters"];
    let u = |v: &Value| v.as_u64().map(|x| x as usize);
    ensure!(case["architecture"] == "SPAN", "{name}: architecture");
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
        "{name}: size multiple"
    );
    ensure!(
        Some(p.in_channels) == u(&hp["num_in_ch"]),
        "{name}: num_in_ch"
    );
    ensure!(
        Some(p.out_channels) == u(&hp["num_out_ch"]),
        "{name}: num_out_ch"
    );
    ensure!(
        Some(p.feature_channels) == u(&hp["feature_channels"]),
        "{name}: feature_channels {}",
        p.feature_channels
    );
    ensure!(Some(p.upscale) == u(&hp["upscale"]), "{name}: upscale");
    ensure!(
        hp["norm"].as_bool() == Some(p.norm),
        "{name}: norm {}",
        p.norm
    );
    // Not in the weights: spandrel's constants, which the port shares.
    ensure!(hp["bias"].as_bool() == Some(true), "{name}: bias");
    ensure!(
        hp["img_range"].as_f64() == Some(IMG_RANGE),
        "{name}: img_range"
    );
    let mean: Vec<f64> = hp["rgb_mean"]
        .as_array()
        .context("rgb_mean")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let want: Vec<f64> = RGB_MEAN.iter().map(|&m| m as f64).collect();
    ensure!(
        mean.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6) && mean.len() == 3,
        "{name}: rgb_mean {mean:?}"
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
    let scratch = Scratch::new("parity")?;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&model_file(case, &scratch)?)?;
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
    let scratch = Scratch::new("upscaler")?;
    for case in Z.cases()? {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&model_file(&case, &scratch)?)?;
        let input = &t[&format!("{name}.input")];
        let want = t[&format!("{name}.output")].clamp(0f32, 1f32)?;
        // The upscaler takes RGB; a grey model runs on its luma, which for a grey image
        // repeated over three channels is that image.
        let (rgb, want) = if input.dim(1)? == 1 {
            (input.repeat((1, 3, 1, 1))?, want.repeat((1, 3, 1, 1))?)
        } else {
            (input.clone(), want)
        };
        common::compare(
            name,
            &zoo::upscale_with(&zoo::upscaler(&model, 0)?, &rgb)?,
            &want,
            1e-4,
        )?;
    }
    Ok(())
}

/// A 144 × 120 photo: chelsea mirrored into a 3 × 3 mosaic (no seams of its own), large
/// enough for tiles of 2 × the overlap.
fn mosaic() -> Result<Tensor> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan/photos/chelsea.png");
    let photo = diffsr::image_io::load_rgb8(&path)?.to_tensor(&Device::Cpu)?;
    let flip = |t: &Tensor, dim: usize| -> Result<Tensor> {
        let n = t.dim(dim)?;
        let index: Vec<u32> = (0..n as u32).rev().collect();
        Ok(t.index_select(&Tensor::new(index.as_slice(), &Device::Cpu)?, dim)?)
    };
    let row = Tensor::cat(&[&photo, &flip(&photo, 3)?, &photo], 3)?;
    Ok(Tensor::cat(&[&row, &flip(&row, 2)?, &row], 2)?)
}

#[test]
fn tiles_blend_to_the_whole_image() -> Result<()> {
    let model = GanModel::load(&Z.dir().join("span_x2_ch8.pth"))?;
    let radius = model.arch().context_radius();
    ensure!(radius == 21, "SPAN's receptive radius is 21, got {radius}");
    let input = mosaic()?;
    let whole = zoo::upscale_with(&zoo::upscaler(&model, 0)?, &input)?;
    // The smallest tile the overlap allows: 2 × 2 tiles on 144 × 120.
    let tile = 2 * diffsr::tiling::exact_overlap(radius);
    let tiled_up = zoo::upscaler(&model, tile)?;
    ensure!(tiled_up.tile_count(144, 120)? > 1, "expected several tiles");
    // The overlap covers the receptive radius: tiles equal the whole image up to rounding.
    common::compare(
        "tiled x2",
        &zoo::upscale_with(&tiled_up, &input)?,
        &whole,
        1e-5,
    )
}

/// The grey case's tensors, with `edit` applied, written to `scratch` and loaded.
fn load_edited(
    scratch: &Scratch,
    edit: impl FnOnce(&mut HashMap<String, Tensor>) -> Result<()>,
) -> Result<String> {
    let mut dict =
        candle_core::safetensors::load(Z.dir().join("span_x3_grey_ch6.safetensors"), &Device::Cpu)?;
    edit(&mut dict)?;
    let path = scratch.path("edited.safetensors");
    candle_core::safetensors::save(&dict, &path)?;
    match GanModel::load(&path) {
        Ok(m) => bail!("loaded as {}", m.arch().describe()),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn a_missing_tensor_is_named() -> Result<()> {
    let scratch = Scratch::new("missing")?;
    for name in [
        "block_3.c2_r.conv.1.weight",
        "conv_cat.bias",
        "conv_2.eval_conv.bias",
    ] {
        let err = load_edited(&scratch, |d| {
            d.remove(name).context("no such tensor")?;
            Ok(())
        })?;
        ensure!(err.contains(name) && err.contains("missing"), "{err}");
        ensure!(err.contains("edited.safetensors"), "{err}");
    }
    Ok(())
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() -> Result<()> {
    let scratch = Scratch::new("shape")?;
    // fc 6: the chain's middle conv is (12, 12, 3, 3); a (12, 12, 1, 1) in its place.
    let err = load_edited(&scratch, |d| {
        let bad = Tensor::zeros((12, 12, 1, 1), DType::F32, &Device::Cpu)?;
        d.insert("block_5.c3_r.conv.1.weight".into(), bad);
        Ok(())
    })?;
    ensure!(
        err.contains("block_5.c3_r.conv.1.weight")
            && err.contains("[12, 12, 1, 1]")
            && err.contains("[12, 12, 3, 3]"),
        "{err}"
    );
    // conv_cat reads 4 × fc channels.
    let err = load_edited(&scratch, |d| {
        let bad = Tensor::zeros((6, 18, 1, 1), DType::F32, &Device::Cpu)?;
        d.insert("conv_cat.weight".into(), bad);
        Ok(())
    })?;
    ensure!(
        err.contains("conv_cat.weight")
            && err.contains("[6, 18, 1, 1]")
            && err.contains("[6, 24, 1, 1]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_normalised_model_needs_rgb_input() -> Result<()> {
    let scratch = Scratch::new("norm")?;
    // The grey model without its `no_norm` buffer: spandrel loads it, then its forward fails
    // to subtract the RGB mean from one channel; diffsr refuses it when building.
    let mut dict =
        candle_core::safetensors::load(Z.dir().join("span_x3_grey_ch6.safetensors"), &Device::Cpu)?;
    dict.remove("no_norm").context("no_norm")?;
    let path = scratch.path("grey_norm.safetensors");
    candle_core::safetensors::save(&dict, &path)?;
    let model = GanModel::load(&path)?;
    ensure!(span_params("grey norm", model.arch())?.norm);
    let input = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu)?;
    let err = zoo::forward(&model, &input, DType::F32)
        .unwrap_err()
        .to_string();
    ensure!(err.contains("3 input channels"), "{err}");
    Ok(())
}
