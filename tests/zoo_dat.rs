//! DAT against spandrel 0.4.2 (`scripts/fixtures/zoo_dat.py`: random float16 weights, the
//! reference's float64 forward on photo crops): detection recovers every hyper-parameter
//! spandrel reports, for the three stored cases and for the full-size layouts of the
//! published presets (DAT-light, DAT-S, DAT, DAT-2); the network matches the reference; the
//! tiled upscaler stays close to the whole-image one; malformed files are refused by name.

mod common;
#[path = "support/zoo.rs"]
mod zoo;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::arch::dat::{synthetic_dat, DatParams, DatUpsampler, ResiConnection};
use diffsr::gan::{GanArch, GanModel, GanNetwork, StateDict};
use serde_json::Value;

const Z: zoo::Fixtures = zoo::Fixtures("dat");

fn cases(m: &Value) -> Result<&Vec<Value>> {
    m["cases"].as_array().context("cases")
}

fn dat(arch: &GanArch) -> Result<&DatParams> {
    match arch {
        GanArch::Dat(p) => Ok(p),
        other => anyhow::bail!("detected as {}", other.describe()),
    }
}

/// Every hyper-parameter of `p` equals spandrel's report `r` (`spandrel` of the manifest).
fn check_params(name: &str, p: &DatParams, r: &Value) -> Result<()> {
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
    ensure!(r["architecture"] == "DAT", "{name}: {}", r["architecture"]);
    let checks: [(&str, bool); 16] = [
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
        ("depth", list("depth")? == p.depth),
        ("num_heads", list("num_heads")? == p.num_heads),
        ("split_size", list("split_size")? == p.split_size),
        (
            "expansion_factor",
            hp["expansion_factor"].as_f64() == Some(p.expansion_factor),
        ),
        ("qkv_bias", hp["qkv_bias"].as_bool() == Some(p.qkv_bias)),
        (
            "resi_connection",
            hp["resi_connection"] == p.resi_connection.name(),
        ),
        ("upsampler", hp["upsampler"] == p.upsampler.name()),
        ("img_range", hp["img_range"].as_f64() == Some(p.img_range)),
        ("img_size", usize_of(&hp["img_size"]) == Some(p.img_size)),
        // spandrel's tags: size, "s{img}|{h}x{w}", "{nf}nf", "{dim}dim", "{ef}ef", resi.
        (
            "tags",
            r["tags"]
                == serde_json::json!([
                    p.size_tag(),
                    format!("s{}|{}x{}", p.img_size, p.split_size[0], p.split_size[1]),
                    format!("{}nf", p.num_feat),
                    format!("{}dim", p.embed_dim),
                    format!("{:?}ef", p.expansion_factor),
                    p.resi_connection.name(),
                ]),
        ),
    ];
    for (what, ok) in checks {
        ensure!(ok, "{name}: {what} differs: detected {p:?}, spandrel {r}");
    }
    // spandrel runs DAT in bfloat16 but not in float16.
    ensure!(r["supports_half"] == false && r["supports_bfloat16"] == true);
    Ok(())
}

fn network(model: &GanModel) -> Result<GanNetwork> {
    network_in(model, DType::F32)
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
        let file = Z.dir().join(case["file"].as_str().context("file")?);
        let model = GanModel::load(&file)?;
        let p = dat(model.arch())?;
        check_params(name, p, &case["spandrel"])?;
        ensure!(
            model.parameter_count() as u64 == case["tensor_elements"].as_u64().context("n")?,
            "{name}: {} tensor elements",
            model.parameter_count()
        );
        println!("{name}: {}", model.arch().describe());
    }
    Ok(())
}

/// FNV-1a 64 of the sorted `name d0,d1,...` lines, as the fixture script digests spandrel's
/// state dicts.
fn layout_digest(p: &DatParams) -> (usize, String) {
    let mut lines: Vec<String> = p
        .state_dict_layout()
        .iter()
        .map(|e| {
            let dims: Vec<String> = e.shape.iter().map(ToString::to_string).collect();
            format!("{} {}", e.name, dims.join(","))
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
/// builds them) are what the layout says, and detection on such a dict reads back spandrel's
/// report. The dicts hold broadcast zeros: shapes without the memory.
#[test]
fn published_presets_are_detected_at_full_size() -> Result<()> {
    let m = Z.manifest()?;
    let presets = m["presets"].as_array().context("presets")?;
    ensure!(presets.len() == 4, "DAT-light, DAT-S, DAT, DAT-2");
    for preset in presets {
        let name = preset["name"].as_str().context("name")?;
        let hp = &preset["spandrel"]["hyperparameters"];
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
        let embed = hp["embed_dim"].as_u64().context("embed")? as usize;
        let ef = hp["expansion_factor"].as_f64().context("ef")?;
        let split = list("split_size");
        let direct = hp["upsampler"] == "pixelshuffledirect";
        let p = DatParams {
            in_channels: 3,
            embed_dim: embed,
            depth: list("depth"),
            num_heads: list("num_heads"),
            split_size: [split[0], split[1]],
            expansion_factor: ef,
            ffn_hidden: (embed as f64 * ef) as usize,
            qkv_bias: true,
            resi_connection: if hp["resi_connection"] == "3conv" {
                ResiConnection::ThreeConv
            } else {
                ResiConnection::OneConv
            },
            upsampler: if direct {
                DatUpsampler::PixelShuffleDirect
            } else {
                DatUpsampler::PixelShuffle
            },
            num_feat: if direct { embed } else { 64 },
            upscale: hp["upscale"].as_u64().context("upscale")? as usize,
            img_range: 1.0,
            img_size: 64,
        };
        let (count, digest) = layout_digest(&p);
        ensure!(
            count as u64 == preset["keys"].as_u64().context("keys")?
                && digest == preset["layout_fnv1a64"].as_str().context("digest")?,
            "{name}: layout of {count} tensors ({digest}) differs from spandrel's"
        );
        let dict = synthetic_dat(&p)?;
        let model = GanModel::from_state_dict(dict, Path::new(name))?;
        let got = dat(model.arch())?;
        check_params(name, got, &preset["spandrel"])?;
        ensure!(
            got.preset() == Some(name),
            "{name}: named {:?}",
            got.preset()
        );
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
        let got = network(&model)?.forward(input)?;
        common::compare(name, &got, want, 1e-4)?;
    }
    Ok(())
}

/// In f64 every layer takes candle's tensor ops instead of the CPU kernels (the path GPUs
/// take: the shift mask as a matrix, the depthwise convs as shifted views, the position bias
/// broadcast), and the result is the reference's to float64 rounding; bf16, which spandrel
/// also runs DAT in, stays near it.
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
        if name == "dat_tiny_x2" {
            let got = network_in(&model, DType::BF16)?.forward(&input.to_dtype(DType::BF16)?)?;
            common::compare(&format!("{name} bf16"), &got, want, 0.02)?;
        }
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
        if input.dim(1)? != 3 {
            continue;
        }
        let model = GanModel::load(&Z.dir().join(case["file"].as_str().context("file")?))?;
        let want = t[case["output"].as_str().context("output")?].clamp(0f32, 1f32)?;
        let got = zoo::upscale(&model, input, 0)?.0;
        common::compare(&format!("{name} untiled"), &got, &want, 1e-4)?;
    }
    Ok(())
}

/// `rows` × `cols` of the 48×40 test photos side by side (each row starting one photo
/// later), as a (1, 3, 40·rows, 48·cols) image in [0, 1].
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

/// Tiled against whole-image output of the tiny model (2×4 windows, a 16-pixel context, so
/// tiles overlap by 43 pixels) on a 144×120 photo mosaic. DAT's channel attention and pooled
/// channel maps see the whole tile, so tiling is never exact; and a tile that does not start
/// on the window grid (a multiple of the longer window side) cuts its windows differently from
/// the whole image. With tiles of 88 the starts (0, 28, 56 / 0, 32) fall on the grid and the
/// seams are what the context leaves; with tiles of 86 (starts 0, 29, 58) they do not, which
/// random weights turn into large differences (trained models, trained on random crops, are
/// far less sensitive to where their windows fall).
#[test]
fn tiled_output_stays_close_to_the_whole_image() -> Result<()> {
    let image = photo_mosaic(3, 3)?;
    let model = GanModel::load(&Z.dir().join("dat_tiny_x2.pth"))?;
    ensure!(diffsr::tiling::exact_overlap(model.arch().context_radius()) == 43);
    let whole = zoo::upscale(&model, &image, 0)?.0;
    let seams = |tile: usize| -> Result<(f32, f32)> {
        let diff = (zoo::upscale(&model, &image, tile)?.0 - &whole)?.abs()?;
        Ok((
            diff.max_all()?.to_scalar::<f32>()?,
            diff.mean_all()?.to_scalar::<f32>()?,
        ))
    };
    let (max, mean) = seams(88)?;
    println!("tiles of 88 (on the window grid): max |tiled − whole| {max:.3e}, mean {mean:.3e}");
    ensure!(
        max < 0.03 && mean < 1e-3,
        "aligned tiles: {max} (mean {mean})"
    );
    let (max, mean) = seams(86)?;
    println!("tiles of 86 (off the window grid): max |tiled − whole| {max:.3e}, mean {mean:.3e}");
    ensure!(mean < 0.05, "unaligned tiles: mean {mean}");
    Ok(())
}

/// Writes `dict` as safetensors in a temporary directory and loads it as a model.
fn load_dict(dict: &StateDict, tag: &str) -> Result<std::result::Result<GanModel, String>> {
    let dir = std::env::temp_dir().join(format!("diffsr-zoo-dat-{}-{tag}", std::process::id()));
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
    let file = Z.dir().join("dat_grey_x3.safetensors");
    let dict = GanModel::load(&file)?.weights().clone();
    let name = "layers.0.blocks.1.ffn.fc2.weight";
    let mut missing = dict.clone();
    ensure!(missing.remove(name).is_some());
    let err = load_dict(&missing, "missing")?
        .err()
        .context("loaded without a tensor")?;
    ensure!(err.contains(name) && err.contains("missing"), "{err}");
    ensure!(err.contains("[64, 32]"), "the expected shape: {err}");

    let mut bad = dict.clone();
    bad.insert(
        name.into(),
        Tensor::zeros((64, 31), DType::F16, &Device::Cpu)?,
    );
    let err = load_dict(&bad, "shape")?
        .err()
        .context("loaded a wrong shape")?;
    ensure!(
        err.contains(name) && err.contains("[64, 31]") && err.contains("[64, 32]"),
        "{err}"
    );

    // The split size is read from the first window's offsets table.
    let rpe = "layers.0.blocks.0.attn.attns.0.rpe_biases";
    let mut bad = dict;
    bad.insert(
        rpe.into(),
        Tensor::zeros((49, 2), DType::F16, &Device::Cpu)?,
    );
    let err = load_dict(&bad, "rpe")?
        .err()
        .context("loaded a wrong offsets table")?;
    ensure!(err.contains(rpe), "{err}");
    Ok(())
}
