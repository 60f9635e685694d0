//! ATD against spandrel 0.4.2 (`scripts/fixtures/zoo_atd.py`: random float16 weights, the
//! reference's float64 forward on photo crops): detection recovers every hyper-parameter
//! spandrel reports; the network matches the reference (the category attention's token order
//! included: torch's unstable sort, ties and all); the tiled upscaler stays close to the
//! whole-image one; malformed files are refused by name.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::atd::synthetic_atd;
use diffsr::gan::arch::swin::{ResiConnection, Upsampler};
use diffsr::gan::arch::AtdParams;
use diffsr::gan::{GanArch, GanModel, GanNetwork, StateDict};
use serde_json::Value;

const Z: zoo::Fixtures = zoo::Fixtures("atd");

fn cases(m: &Value) -> Result<&Vec<Value>> {
    m["cases"].as_array().context("cases")
}

fn atd(arch: &GanArch) -> Result<&AtdParams> {
    match arch {
        GanArch::Atd(p) => Ok(p),
        other => anyhow::bail!("detected as {}", other.describe()),
    }
}

/// Every hyper-parameter of `p` equals spandrel's report `r`.
fn check_params(name: &str, p: &AtdParams, r: &Value) -> Result<()> {
    let hp = &r["hyperparameters"];
    let usize_of = |v: &Value| v.as_u64().map(|x| x as usize);
    let list = |k: &str| -> Result<Vec<usize>> {
        hp[k]
            .as_array()
            .context(k.to_string())?
            .iter()
            .map(|v| usize_of(v).context(k.to_string()))
            .collect()
    };
    ensure!(r["architecture"] == "ATD", "{name}: {}", r["architecture"]);
    let mut tags = vec![
        format!("{}dim", p.embed_dim),
        format!("{}w", p.window_size),
        format!("{}cat", p.category_size),
    ];
    if p.is_light() {
        tags.insert(0, "light".into());
    }
    let checks: [(&str, bool); 22] = [
        ("scale", usize_of(&r["scale"]) == Some(p.upscale)),
        ("upscale", usize_of(&hp["upscale"]) == Some(p.upscale)),
        (
            "in_channels",
            usize_of(&r["in_channels"]) == Some(p.in_channels),
        ),
        (
            "out_channels",
            usize_of(&r["out_channels"]) == Some(p.in_channels),
        ),
        ("in_chans", usize_of(&hp["in_chans"]) == Some(p.in_channels)),
        ("embed_dim", usize_of(&hp["embed_dim"]) == Some(p.embed_dim)),
        ("depths", list("depths")? == p.depths),
        ("num_heads", list("num_heads")? == p.num_heads),
        (
            "window_size",
            usize_of(&hp["window_size"]) == Some(p.window_size),
        ),
        (
            "category_size",
            usize_of(&hp["category_size"]) == Some(p.category_size),
        ),
        (
            "num_tokens",
            usize_of(&hp["num_tokens"]) == Some(p.num_tokens),
        ),
        (
            "reducted_dim",
            usize_of(&hp["reducted_dim"]) == Some(p.reducted_dim),
        ),
        (
            "convffn_kernel_size",
            usize_of(&hp["convffn_kernel_size"]) == Some(p.convffn_kernel_size),
        ),
        ("mlp_ratio", hp["mlp_ratio"].as_f64() == Some(p.mlp_ratio())),
        ("qkv_bias", hp["qkv_bias"].as_bool() == Some(p.qkv_bias)),
        ("ape", hp["ape"].as_bool() == Some(false)),
        (
            "patch_norm",
            hp["patch_norm"].as_bool() == Some(p.patch_norm),
        ),
        ("img_range", hp["img_range"].as_f64() == Some(p.img_range)),
        ("upsampler", hp["upsampler"] == p.upsampler.name()),
        (
            "resi_connection",
            hp["resi_connection"] == p.resi_connection.name(),
        ),
        ("norm", hp["norm"].as_bool() == Some(p.norm)),
        ("tags", r["tags"] == serde_json::json!(tags)),
    ];
    for (what, ok) in checks {
        ensure!(ok, "{name}: {what} differs: detected {p:?}, spandrel {r}");
    }
    // spandrel runs ATD in bfloat16 but not in float16.
    ensure!(r["supports_half"] == false && r["supports_bfloat16"] == true);
    Ok(())
}

fn network_in(model: &GanModel, dtype: DType) -> Result<GanNetwork> {
    Ok(GanNetwork::new(
        model.arch(),
        model.weights(),
        dtype,
        &Device::Cpu,
        model.source(),
    )?)
}

#[test]
fn detection_recovers_spandrels_hyper_parameters() -> Result<()> {
    let m = Z.manifest()?;
    for case in cases(&m)? {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
        let p = atd(model.arch())?;
        check_params(name, p, &case["spandrel"])?;
        println!("{name}: {}", model.arch().describe());
    }
    Ok(())
}

/// FNV-1a 64 of the sorted `name d0,d1,...` lines, as the fixture script digests spandrel's
/// state dicts.
fn layout_digest(p: &AtdParams) -> (usize, String) {
    let mut lines: Vec<String> = p
        .state_dict_layout()
        .iter()
        .map(|(name, shape)| {
            let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
            format!("{name} {}", dims.join(","))
        })
        .collect();
    lines.sort();
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for line in &lines {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    (lines.len(), format!("{h:016x}"))
}

/// The published presets' full-size state dicts (every tensor name and shape, as spandrel
/// builds them) are what the layout says, and detection on such a dict (broadcast zeros:
/// shapes without the memory) reads back spandrel's report.
#[test]
fn published_presets_are_detected_at_full_size() -> Result<()> {
    let m = Z.manifest()?;
    let presets = m["presets"].as_array().context("presets")?;
    ensure!(presets.len() == 2, "ATD, ATD-light");
    for preset in presets {
        let name = preset["name"].as_str().context("name")?;
        let hp = &preset["spandrel"]["hyperparameters"];
        let num =
            |k: &str| -> Result<usize> { Ok(hp[k].as_u64().context(k.to_string())? as usize) };
        let list = |k: &str| -> Vec<usize> {
            hp[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|x| x as usize)
                        .collect()
                })
                .unwrap_or_default()
        };
        let embed = num("embed_dim")?;
        let p = AtdParams {
            in_channels: 3,
            embed_dim: embed,
            depths: list("depths"),
            num_heads: list("num_heads"),
            window_size: num("window_size")?,
            category_size: num("category_size")?,
            num_tokens: num("num_tokens")?,
            reducted_dim: num("reducted_dim")?,
            convffn_kernel_size: num("convffn_kernel_size")?,
            mlp_hidden: (embed as f64 * hp["mlp_ratio"].as_f64().context("mlp_ratio")?) as usize,
            qkv_bias: true,
            patch_norm: true,
            upscale: num("upscale")?,
            img_range: 1.0,
            upsampler: if hp["upsampler"] == "pixelshuffledirect" {
                Upsampler::PixelShuffleDirect
            } else {
                Upsampler::PixelShuffle
            },
            resi_connection: ResiConnection::OneConv,
            norm: true,
        };
        let (count, digest) = layout_digest(&p);
        ensure!(
            count as u64 == preset["keys"].as_u64().context("keys")?
                && digest == preset["layout_fnv1a64"].as_str().context("digest")?,
            "{name}: layout of {count} tensors ({digest}) differs from spandrel's"
        );
        let model = GanModel::from_state_dict(synthetic_atd(&p), std::path::Path::new(name))?;
        let got = atd(model.arch())?;
        check_params(name, got, &preset["spandrel"])?;
        ensure!(got == &p, "{name}: detected {got:?}");
        println!("{name}: {}", model.arch().describe());
    }
    Ok(())
}

#[test]
fn every_case_matches_spandrel() -> Result<()> {
    let m = Z.manifest()?;
    let t = Z.tensors()?;
    for case in cases(&m)? {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        let got = network_in(&model, DType::F32)?.forward(input)?;
        common::compare(name, &got, want, 1e-4)?;
    }
    Ok(())
}

/// In f64 every layer takes candle's tensor ops instead of the CPU kernels (the path GPUs
/// take: the shift mask as a matrix, the depthwise conv as shifted views), and the result is
/// the reference's to float64 rounding.
#[test]
fn the_tensor_op_path_matches_too() -> Result<()> {
    let m = Z.manifest()?;
    let t = Z.tensors()?;
    for case in cases(&m)? {
        let name = case["name"].as_str().context("name")?;
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        let got = network_in(&model, DType::F64)?.forward(&input.to_dtype(DType::F64)?)?;
        common::compare(&format!("{name} f64"), &got, want, 1e-6)?;
    }
    Ok(())
}

/// The upscaler with the whole image in one tile (no pre-pad) is the clamped network output.
#[test]
fn upscaler_untiled_equals_the_clamped_network_output() -> Result<()> {
    let m = Z.manifest()?;
    let t = Z.tensors()?;
    for case in cases(&m)? {
        let name = case["name"].as_str().context("name")?;
        let input = &t[case["input"].as_str().context("input")?];
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
        let want = t[case["output"].as_str().context("output")?].clamp(0f32, 1f32)?;
        let got = zoo::upscale(&model, input, 0)?.0;
        common::compare(&format!("{name} untiled"), &got, &want, 1e-4)?;
    }
    Ok(())
}

/// `rows` × `cols` of the 48×40 test photos side by side, (1, 3, 40·rows, 48·cols) in [0, 1].
fn photo_mosaic(rows: usize, cols: usize) -> Result<Tensor> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gan/photos");
    let photos = ["astronaut.png", "chelsea.png", "coffee.png"]
        .iter()
        .map(|f| {
            let rgb = image::open(dir.join(f))?.to_rgb8();
            let (w, h) = rgb.dimensions();
            let t = Tensor::from_vec(rgb.into_raw(), (h as usize, w as usize, 3), &Device::Cpu)?;
            Ok((t.permute((2, 0, 1))?.to_dtype(DType::F32)? / 255.0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = (0..rows)
        .map(|r| {
            let row: Vec<&Tensor> = (0..cols).map(|c| &photos[(r + c) % 3]).collect();
            Tensor::cat(&row, 2)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 1)?.unsqueeze(0)?)
}

/// max and mean |tiled − whole| of `model` on `image` in tiles of `tile`.
fn seams(model: &GanModel, image: &Tensor, tile: usize) -> Result<(f32, f32)> {
    let whole = zoo::upscale(model, image, 0)?.0;
    let diff = (zoo::upscale(model, image, tile)?.0 - &whole)?.abs()?;
    Ok((
        diff.max_all()?.to_scalar::<f32>()?,
        diff.mean_all()?.to_scalar::<f32>()?,
    ))
}

/// Tiled against whole-image output on photo mosaics. ATD's dictionaries are refined from
/// every token of a tile and its category attention groups tokens from anywhere in the tile
/// by category, so every output pixel depends on the whole tile: tiling is never exact, and
/// with random weights the difference is spread over the image rather than at the seams (the
/// tiny model's mean stays at 2.5e-2 for tiles of 64, 80 and 96; the light one, whose random
/// output reaches 3.7 before the clamp, gave max 1.0, mean 0.14 on a 200×240 mosaic in tiles
/// of 192, a minute in a debug build, so not run here). The bound holds the measured figure
/// (printed) with a margin; trained models, whose categories group similar content, are
/// less sensitive.
#[test]
fn tiled_output_stays_close_to_the_whole_image() -> Result<()> {
    let tiny = GanModel::load(&Z.dir().join("atd_tiny_x2.pth"))?;
    let (max, mean) = seams(&tiny, &photo_mosaic(3, 3)?, 64)?;
    println!("atd_tiny_x2, 120x144 in tiles of 64: max |tiled − whole| {max:.3e}, mean {mean:.3e}");
    ensure!(max < 1.0 && mean < 0.04, "tiny: {max} (mean {mean})");
    Ok(())
}

/// Writes `dict` as safetensors in a temporary directory and loads it as a model.
fn load_dict(dict: &StateDict, tag: &str) -> Result<std::result::Result<GanModel, String>> {
    let dir = std::env::temp_dir().join(format!("diffsr-zoo-atd-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("model.safetensors");
    let tensors: Vec<(&str, Tensor)> = dict
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (*k, t)), None)?;
    std::fs::write(&path, bytes)?;
    let result = GanModel::load(&path).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&dir)?;
    Ok(result)
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() -> Result<()> {
    let file = Z.dir().join("atd_light_x4.safetensors");
    let dict = GanModel::load(&file)?.weights().clone();
    let name = "layers.1.residual_group.layers.0.attn_atd.wk.weight";
    let mut missing = dict.clone();
    ensure!(missing.remove(name).is_some());
    let err = load_dict(&missing, "missing")?
        .err()
        .context("loaded without a tensor")?;
    ensure!(err.contains(name) && err.contains("missing"), "{err}");
    ensure!(err.contains("[8, 48]"), "the expected shape: {err}");

    let mut bad = dict;
    let name = "layers.0.residual_group.layers.1.convffn.dwconv.depthwise_conv.0.weight";
    bad.insert(
        name.into(),
        Tensor::zeros((48, 1, 5, 5), DType::F16, &Device::Cpu)?,
    );
    let err = load_dict(&bad, "shape")?
        .err()
        .context("loaded a wrong shape")?;
    ensure!(
        err.contains(name) && err.contains("[48, 1, 5, 5]") && err.contains("[48, 1, 7, 7]"),
        "{err}"
    );
    Ok(())
}
