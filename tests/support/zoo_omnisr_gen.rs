//! What the zoo parity tests of OmniSR, SRResNet and SRCNN share (tests/zoo_omnisr.rs,
//! zoo_srresnet.rs, zoo_srcnn.rs): their fixtures (`tests/fixtures/zoo/<name>/`, written by
//! `scripts/fixtures/zoo_<name>.py`), the deterministic weight generator those scripts use
//! (so that published presets too large to store are rebuilt here bit for bit), loading a
//! case's model, and the checks every case gets.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::{GanModel, GanNetwork, GanOptions, GanUpscaler, StateDict};
use serde_json::Value;

/// `tests/fixtures/zoo/<name>`.
pub fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/zoo/{name}"))
}

/// The cases of `<name>.json`.
pub fn cases(name: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(fixtures(name).join(format!("{name}.json")))?;
    let manifest: Value = serde_json::from_str(&text)?;
    Ok(manifest["cases"].as_array().context("cases")?.clone())
}

/// The inputs and reference outputs of `<name>.safetensors`.
pub fn tensors(name: &str) -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixtures(name).join(format!("{name}.safetensors")),
        &Device::Cpu,
    )?)
}

// ---------------------------------------------------------------------------------------------
// The generator of scripts/fixtures/zoo_omnisr.py (`uniform`, `generated`).

fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `n` values in [0, 1), multiples of 2⁻²⁴: splitmix64(hash(key) + (i + 1) · golden).
fn uniform(key: &str, n: usize) -> impl Iterator<Item = f64> {
    let h = fnv1a64(key);
    (0..n as u64).map(move |i| {
        let mut z = h.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f64 / 16_777_216.0
    })
}

/// One generated tensor: `kind` as the script's `kind_of` says.
fn generated(case: &str, name: &str, shape: &[usize], kind: &str) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product();
    let bound = (3.0 / fan_in as f64).sqrt();
    let values: Vec<f32> = uniform(&format!("{case}/{name}"), n)
        .map(|u| {
            let s = 2.0 * u - 1.0;
            let v = match kind {
                "fan_in" => s * bound,
                "bias" => s * 0.1,
                "norm" => 1.0 + s * 0.2,
                _ => s,
            };
            v as f32
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// The state dict a case's `generated` list describes.
pub fn generated_dict(case: &Value) -> Result<StateDict> {
    let name = case["name"].as_str().context("name")?;
    let list = case["generated"].as_array().context("generated")?;
    list.iter()
        .map(|entry| {
            let tensor = entry[0].as_str().context("tensor name")?;
            let shape: Vec<usize> = entry[1]
                .as_array()
                .context("shape")?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).context("dim"))
                .collect::<Result<_>>()?;
            let kind = entry[2].as_str().context("kind")?;
            Ok((tensor.to_string(), generated(name, tensor, &shape, kind)?))
        })
        .collect()
}

/// A case's model: its weight file, or its generated weights written to a temporary
/// safetensors file first so that they too go through `GanModel::load`.
pub fn load_case(fixture: &str, case: &Value) -> Result<GanModel> {
    if let Some(file) = case["file"].as_str() {
        return Ok(GanModel::load(&fixtures(fixture).join(file))?);
    }
    let dict = generated_dict(case)?;
    let name = case["name"].as_str().context("name")?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zoo-{fixture}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Tests of one binary run in parallel in one process: one file per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{name}-{call}.safetensors"));
    let map: HashMap<String, Tensor> = dict.into_iter().collect();
    candle_core::safetensors::save(&map, &path)?;
    let model = GanModel::load(&path);
    std::fs::remove_file(&path)?;
    Ok(model?)
}

/// A case's weights as the file holds them (for the bad-input tests).
pub fn raw_dict(fixture: &str, file: &str) -> Result<StateDict> {
    let map = candle_core::safetensors::load(fixtures(fixture).join(file), &Device::Cpu)?;
    Ok(map.into_iter().collect())
}

/// A `.pth` fixture's weights, unwrapped and normalised as `GanModel::load` reads them.
pub fn raw_dict_pth(fixture: &str, file: &str) -> Result<StateDict> {
    Ok(GanModel::load(&fixtures(fixture).join(file))?
        .weights()
        .clone())
}

/// Scale, channels and parameter count equal what spandrel reported.
pub fn check_common(model: &GanModel, case: &Value) -> Result<()> {
    let name = case["name"].as_str().context("name")?;
    let arch = model.arch();
    let want = |k: &str| case[k].as_u64().map(|v| v as usize).context(k.to_string());
    ensure!(
        arch.scale() == want("scale")?,
        "{name}: scale {}",
        arch.scale()
    );
    ensure!(
        arch.in_channels() == want("in_channels")?,
        "{name}: in_channels {}",
        arch.in_channels()
    );
    ensure!(
        arch.out_channels() == want("out_channels")?,
        "{name}: out_channels {}",
        arch.out_channels()
    );
    ensure!(
        model.parameter_count() == want("params")?,
        "{name}: {} parameters, spandrel counts {}",
        model.parameter_count(),
        want("params")?
    );
    Ok(())
}

/// The network's f32 CPU output on `input` (no tiles, no pre-pad).
pub fn forward(model: &GanModel, input: &Tensor) -> Result<Tensor> {
    let net = GanNetwork::new(
        model.arch(),
        model.weights(),
        DType::F32,
        &Device::Cpu,
        model.source(),
    )?;
    Ok(net.forward(input)?)
}

/// The network's output in f16 on the CPU against the reference: max |Δ| / max(1, max |ref|),
/// or infinity when the output is not finite.
pub fn f16_relative(model: &GanModel, input: &Tensor, want: &Tensor) -> Result<f32> {
    let net = GanNetwork::new(
        model.arch(),
        model.weights(),
        DType::F16,
        &Device::Cpu,
        model.source(),
    )?;
    let got = net
        .forward(&input.to_dtype(DType::F16)?)?
        .to_dtype(DType::F32)?;
    if !got.sum_all()?.to_scalar::<f32>()?.is_finite() {
        return Ok(f32::INFINITY);
    }
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(max_diff(&got, want)? / scale.max(1.0))
}

/// Every case of `fixture` in f16 within `tolerance` relative (see [`f16_relative`]).
pub fn check_f16(
    fixture: &str,
    tolerance: f32,
    load: impl Fn(&Value) -> Result<GanModel>,
) -> Result<()> {
    let t = tensors(fixture)?;
    for case in cases(fixture)? {
        let name = case["name"].as_str().context("name")?;
        let model = load(&case)?;
        let input = &t[case["input"].as_str().context("input")?];
        let want = &t[case["output"].as_str().context("output")?];
        let rel = f16_relative(&model, input, want)?;
        println!("{name}: f16 max |Δ| {rel:.3e} relative");
        ensure!(rel <= tolerance, "{name}: f16 off by {rel} relative");
    }
    Ok(())
}

/// The upscaler's output of `image` in tiles of `tile` (0: whole) without pre-padding.
pub fn upscale(model: &GanModel, image: &Tensor, tile: usize) -> Result<(Tensor, usize)> {
    let upscaler = GanUpscaler::new(
        model,
        &GanOptions {
            tile: Some(tile),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    let mut count = 0;
    let out = upscaler.upscale_tensor(image, &mut |_, total| {
        count = total;
        std::ops::ControlFlow::Continue(())
    })?;
    Ok((out, count))
}

/// Max |a − b|.
pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The tolerance of a clamped comparison: 1e-4 relative to the unclamped reference
/// `want`'s magnitude, as the network comparison allows (the clamp only removes error).
pub fn clamped_rel(want: &Tensor) -> Result<f64> {
    let max = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64;
    Ok(1e-4 * max.max(1.0))
}

/// Mean |a − b|.
pub fn mean_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.mean_all()?.to_scalar::<f32>()?)
}

/// `assets/astronaut-128.png` as a (1, 3, 128, 128) tensor in [0, 1].
pub fn astronaut() -> Result<Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/astronaut-128.png");
    let img = image::open(path)?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = img.into_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Ok(Tensor::from_vec(data, (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?)
}

/// A deterministic RGB test image with structure at every scale.
pub fn pattern(width: usize, height: usize) -> Result<Tensor> {
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

/// `dict` without `tensor` is refused naming it; with `tensor` reshaped to `bad` it is
/// refused naming it and both shapes.
pub fn check_bad_tensor(dict: &StateDict, tensor: &str, bad: &[usize]) -> Result<()> {
    check_missing(dict, tensor)?;
    check_misshaped(dict, tensor, bad)
}

fn load_error(dict: StateDict) -> String {
    match GanModel::from_state_dict(dict, Path::new("bad.safetensors")) {
        Ok(m) => format!("loaded as {}", m.arch().describe()),
        Err(e) => e.to_string(),
    }
}

/// `dict` without `tensor` is refused naming it.
pub fn check_missing(dict: &StateDict, tensor: &str) -> Result<()> {
    let mut missing = dict.clone();
    ensure!(
        missing.remove(tensor).is_some(),
        "{tensor} not in the fixture"
    );
    let err = load_error(missing);
    ensure!(
        err.contains(&format!("`{tensor}`")) && err.contains("bad.safetensors"),
        "missing {tensor}: {err}"
    );
    Ok(())
}

/// `dict` with `tensor` reshaped to `bad` is refused naming it and both shapes.
pub fn check_misshaped(dict: &StateDict, tensor: &str, bad: &[usize]) -> Result<()> {
    let good = dict.get(tensor).context("tensor in the fixture")?;
    let good_shape = format!("{:?}", good.dims());
    let mut misshaped = dict.clone();
    misshaped.insert(
        tensor.to_string(),
        Tensor::zeros(bad, good.dtype(), &Device::Cpu)?,
    );
    let err = load_error(misshaped);
    ensure!(
        err.contains(&format!("`{tensor}`"))
            && err.contains(&format!("{bad:?}"))
            && err.contains(&good_shape),
        "mis-shaped {tensor}: {err}"
    );
    Ok(())
}
