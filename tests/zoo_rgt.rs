//! RGT against spandrel 0.4.2 (`scripts/fixtures/zoo_rgt.py`: random weights, float64
//! forward on photo crops): detection of every hyper-parameter spandrel reports, the network's
//! output (the published RGT-S x2 preset, a tiny grey x4 model with the other options, and
//! that model on an input below the minimum side), the upscaler whole and in tiles, and the
//! errors for a missing or mis-shaped tensor.
//!
//! The preset is too large to store: its weights are regenerated here from the manifest
//! (splitmix64 per tensor, the fixture script's `uniform`), checked against values the script
//! recorded, written with the two buffers spandrel's detection reads to a temporary
//! .safetensors and loaded from it. The tiny model is a .pth as users have them, every buffer
//! included (int64 position indices, shift masks).

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::rgt::{ResiConnection, IMG_RANGE, MIN_SIDE};
use diffsr::gan::arch::{GanArch, RgtParams};
use diffsr::gan::{GanModel, GanNetwork};
use serde_json::Value;

const Z: zoo::Fixtures = zoo::Fixtures("rgt");

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("diffsr-zoo-rgt-{tag}-{}", std::process::id()));
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
/// float64 u in [0, 1), (2u − 1)·bound + offset in float64, rounded to f32.
fn uniform(seed: u64, count: usize, bound: f64, offset: f64) -> Vec<f32> {
    (1..=count as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * 2f64.powi(-53);
            ((2.0 * u - 1.0) * bound + offset) as f32
        })
        .collect()
}

/// The reference's `relative_position_index` (n, n) and `rpe_biases` (rows, 2) of an
/// `a × b` window, written out from its definitions.
fn position_buffers(a: usize, b: usize) -> Result<(Tensor, Tensor)> {
    let n = a * b;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dy = (i / b) as i64 - (j / b) as i64 + a as i64 - 1;
            let dx = (i % b) as i64 - (j % b) as i64 + b as i64 - 1;
            index.push(dy * (2 * b as i64 - 1) + dx);
        }
    }
    let (a, b) = (a as i64, b as i64);
    let offsets: Vec<f32> = (1 - a..a)
        .flat_map(|dy| (1 - b..b).flat_map(move |dx| [dy as f32, dx as f32]))
        .collect();
    let rows = offsets.len() / 2;
    Ok((
        Tensor::from_vec(index, (n, n), &Device::Cpu)?,
        Tensor::from_vec(offsets, (rows, 2), &Device::Cpu)?,
    ))
}

/// The generated case's state dict, checked against the values the script recorded.
fn generated(listing: &[Value], split: [usize; 2]) -> Result<HashMap<String, Tensor>> {
    let mut dict = HashMap::new();
    for t in listing {
        let name = t["name"].as_str().context("name")?;
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).context("dim"))
            .collect::<Result<_>>()?;
        if t["derived"].as_bool() == Some(true) {
            let (index, offsets) = position_buffers(split[0], split[1])?;
            let buffer = if name.ends_with("relative_position_index") {
                index
            } else {
                offsets
            };
            ensure!(
                buffer.dims() == shape,
                "{name}: {:?} vs {shape:?}",
                buffer.dims()
            );
            dict.insert(name.to_string(), buffer);
            continue;
        }
        let count = shape.iter().product();
        let seed = t["seed"].as_u64().context("seed")?;
        let bound = t["bound"].as_f64().context("bound")?;
        let offset = t["offset"].as_f64().context("offset")?;
        let values = uniform(seed, count, bound, offset);
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

fn usizes(v: &Value) -> Result<Vec<usize>> {
    v.as_array()
        .context("list")?
        .iter()
        .map(|x| x.as_u64().map(|x| x as usize).context("integer"))
        .collect()
}

/// The case's model file: the stored one, or the generated weights written to `scratch`.
fn model_file(case: &Value, scratch: &Scratch) -> Result<PathBuf> {
    if let Some(file) = case["file"].as_str() {
        return Ok(Z.dir().join(file));
    }
    let listing = case["generated"].as_array().context("generated")?;
    let name = case["name"].as_str().context("name")?;
    let split = usizes(&case["hyperparameters"]["split_size"])?;
    let split = [split[0], split[1]];
    let path = scratch.path(&format!("{name}.safetensors"));
    candle_core::safetensors::save(&generated(listing, split)?, &path)?;
    Ok(path)
}

fn rgt_params<'a>(name: &str, arch: &'a GanArch) -> Result<&'a RgtParams> {
    match arch {
        GanArch::Rgt(p) => Ok(p),
        other => bail!("{name}: detected {}", other.describe()),
    }
}

/// Every hyper-parameter spandrel reported equals the detected one.
fn check_arch(name: &str, model: &GanModel, case: &Value) -> Result<()> {
    let arch = model.arch();
    let p = rgt_params(name, arch)?;
    let hp = &case["hyperparameters"];
    let u = |v: &Value| v.as_u64().map(|x| x as usize);
    ensure!(case["architecture"] == "RGT", "{name}: architecture");
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
    ensure!(Some(MIN_SIDE) == u(&case["minimum"]), "{name}: minimum");
    ensure!(Some(p.in_chans) == u(&hp["in_chans"]), "{name}: in_chans");
    ensure!(
        Some(p.embed_dim) == u(&hp["embed_dim"]),
        "{name}: embed_dim {}",
        p.embed_dim
    );
    ensure!(
        p.depth == usizes(&hp["depth"])?,
        "{name}: depth {:?}",
        p.depth
    );
    ensure!(
        p.num_heads == usizes(&hp["num_heads"])?,
        "{name}: num_heads {:?}",
        p.num_heads
    );
    ensure!(
        hp["mlp_ratio"].as_f64() == Some(p.mlp_ratio),
        "{name}: mlp_ratio {}",
        p.mlp_ratio
    );
    ensure!(
        hp["c_ratio"].as_f64() == Some(p.c_ratio),
        "{name}: c_ratio {}",
        p.c_ratio
    );
    ensure!(
        hp["qkv_bias"].as_bool() == Some(p.qkv_bias),
        "{name}: qkv_bias"
    );
    ensure!(Some(p.upscale) == u(&hp["upscale"]), "{name}: upscale");
    ensure!(
        hp["resi_connection"].as_str() == Some(p.resi_connection.name()),
        "{name}: resi_connection {}",
        p.resi_connection.name()
    );
    ensure!(
        usizes(&hp["split_size"])? == p.split_size,
        "{name}: split_size {:?}",
        p.split_size
    );
    // Not in the weights: spandrel's constant, which the port shares.
    ensure!(
        hp["img_range"].as_f64() == Some(IMG_RANGE),
        "{name}: img_range"
    );
    // spandrel runs RGT in f32 only (`supports_half = False`); so do GPUs here.
    ensure!(case["supports_half"] == false && arch.gpu_dtype() == DType::F32);
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
        // The tiny model in f64 takes the tensor-op paths (what GPUs run) throughout.
        if case["file"].is_string() {
            let net = GanNetwork::new(
                model.arch(),
                model.weights(),
                DType::F64,
                &Device::Cpu,
                model.source(),
            )?;
            let got = net.forward(&input.to_dtype(DType::F64)?)?;
            failures.push(common::compare(&format!("{name} f64"), &got, want, 1e-5));
        }
    }
    failures.into_iter().collect()
}

#[test]
fn the_untiled_upscaler_gives_the_clamped_reference() -> Result<()> {
    let t = Z.tensors()?;
    let cases = Z.cases()?;
    // The tiny model's cases: the preset's forward is the parity test's.
    for case in cases.iter().filter(|c| c["file"].is_string()) {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
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

/// RG-SA attends from every pixel to the whole (reduced) input and the window grid starts at
/// each tile's corner, so tiles never equal the whole image exactly; with the overlap the
/// config asks for (32 pixels of context for the tiny model's 2 × 4 windows), the tiny
/// model's blended tiles stay within 1e-1 of the whole image (measured 7.0e-2, outputs in
/// [0, 1]; random weights, whose RG-SA attends more sharply than trained ones need to).
#[test]
fn tiles_stay_close_to_the_whole_image() -> Result<()> {
    let model = GanModel::load(&Z.dir().join("rgt_tiny_grey_x4.pth"))?;
    let radius = model.arch().context_radius();
    ensure!(radius == 32, "RGT's tile context is 32, got {radius}");
    let input = mosaic(5)?;
    let (_, _, h, w) = input.dims4()?;
    let whole = zoo::upscale_with(&zoo::upscaler(&model, 0)?, &input)?;
    // The smallest tile the overlap allows: 2 × 2 tiles on 240 × 200.
    let tile = 2 * diffsr::tiling::exact_overlap(radius);
    let tiled_up = zoo::upscaler(&model, tile)?;
    ensure!(tiled_up.tile_count(w, h)? > 1, "expected several tiles");
    common::compare(
        "tiled x4",
        &zoo::upscale_with(&tiled_up, &input)?,
        &whole,
        1e-1,
    )
}

/// The tiny case's tensors, with `edit` applied, written to `scratch` and loaded.
fn load_edited(
    scratch: &Scratch,
    edit: impl FnOnce(&mut HashMap<String, Tensor>) -> Result<()>,
) -> Result<String> {
    let model = GanModel::load(&Z.dir().join("rgt_tiny_grey_x4.pth"))?;
    let mut dict: HashMap<String, Tensor> = model
        .weights()
        .iter()
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
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
        "layers.0.blocks.1.attn.reduction1.bias",
        "layers.1.blocks.0.attn.attns.1.pos.pos2.2.weight",
        "layers.0.blocks.0.mlp.sg.conv.weight",
        "conv_after_body.4.bias",
        "upsample.2.bias",
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
    // dim 64, c_ratio 0.25: RG-SA's k is (16, 16).
    let err = load_edited(&scratch, |d| {
        let bad = Tensor::zeros((16, 32), DType::F32, &Device::Cpu)?;
        d.insert("layers.0.blocks.1.attn.k.weight".into(), bad);
        Ok(())
    })?;
    ensure!(
        err.contains("layers.0.blocks.1.attn.k.weight")
            && err.contains("[16, 32]")
            && err.contains("[16, 16]"),
        "{err}"
    );
    // The gate's conv is depthwise over half the MLP's 96 channels.
    let err = load_edited(&scratch, |d| {
        let bad = Tensor::zeros((48, 48, 3, 3), DType::F32, &Device::Cpu)?;
        d.insert("layers.1.blocks.0.mlp.sg.conv.weight".into(), bad);
        Ok(())
    })?;
    ensure!(
        err.contains("layers.1.blocks.0.mlp.sg.conv.weight")
            && err.contains("[48, 48, 3, 3]")
            && err.contains("[48, 1, 3, 3]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_tiny_model_is_3conv_without_qkv_bias() -> Result<()> {
    // The options the preset does not cover, as detected from the .pth.
    let model = GanModel::load(&Z.dir().join("rgt_tiny_grey_x4.pth"))?;
    let p = rgt_params("tiny", model.arch())?;
    ensure!(p.resi_connection == ResiConnection::ThreeConv && !p.qkv_bias);
    ensure!(p.split_size == [2, 4] && p.in_chans == 1 && p.upscale == 4);
    Ok(())
}

/// How far input context reaches: the centre K × K of a crop with r pixels of context on each
/// side against the same pixels of the whole mosaic's output (`-- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_context() -> Result<()> {
    let scratch = Scratch::new("context")?;
    let cases = Z.cases()?;
    for case in cases.iter().take(2) {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&model_file(case, &scratch)?)?;
        let mut input = mosaic(3)?;
        if model.arch().in_channels() == 1 {
            input = input.mean_keepdim(1)?;
        }
        let s = model.arch().scale();
        let whole = zoo::forward(&model, &input, DType::F32)?;
        let k = 16;
        let (cy, cx) = (52, 64);
        for r in [8, 16, 24, 32, 48] {
            let crop = input
                .narrow(2, cy - r, k + 2 * r)?
                .narrow(3, cx - r, k + 2 * r)?;
            let out = zoo::forward(&model, &crop, DType::F32)?
                .narrow(2, r * s, k * s)?
                .narrow(3, r * s, k * s)?;
            let want = whole.narrow(2, cy * s, k * s)?.narrow(3, cx * s, k * s)?;
            let d = (out - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            println!("{name}: context {r}: max|Δ| {d:.3e}");
        }
    }
    Ok(())
}
