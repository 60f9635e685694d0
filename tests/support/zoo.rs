//! What the model-zoo parity tests share: a fixture folder's manifest, reference tensors and
//! model files (`tests/fixtures/zoo/<name>/`, written by `scripts/fixtures/zoo_<name>.py`), the
//! network run untiled in a dtype, the upscaler untiled, and tiled-against-untiled seams.
//! Included by a test file with `#[path = "support/zoo.rs"] mod zoo;`.

// Each test crate uses a subset of these.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::gan::load::read_model_file;
use diffsr::gan::{GanModel, GanNetwork, GanOptions, GanUpscaler, StateDict};
use serde_json::Value;

/// One architecture's fixtures: `tests/fixtures/zoo/<name>/<name>.json` (the cases) and
/// `<name>.safetensors` (`<case>.input`, `<case>.output`).
pub struct Fixtures(pub &'static str);

impl Fixtures {
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/zoo/{}", self.0))
    }

    /// The whole manifest (`cases`, and whatever else the script recorded).
    pub fn manifest(&self) -> Result<Value> {
        let text = std::fs::read_to_string(self.dir().join(format!("{}.json", self.0)))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn cases(&self) -> Result<Vec<Value>> {
        Ok(self.manifest()?["cases"]
            .as_array()
            .context("cases")?
            .clone())
    }

    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(candle_core::safetensors::load(
            self.dir().join(format!("{}.safetensors", self.0)),
            &Device::Cpu,
        )?)
    }

    pub fn case(&self, name: &str) -> Result<Value> {
        self.cases()?
            .into_iter()
            .find(|c| c["name"] == name)
            .with_context(|| format!("case {name}"))
    }

    /// The case's model file, as `diffsr upscale` loads it.
    pub fn load(&self, case: &Value) -> Result<GanModel> {
        Ok(GanModel::load(
            &self.dir().join(case["file"].as_str().context("file")?),
        )?)
    }

    /// A model file's state dict, to damage.
    pub fn dict(&self, file: &str) -> Result<StateDict> {
        Ok(read_model_file(&self.dir().join(file))?)
    }
}

/// Each field of `got` equals the same field of `want`.
pub fn same_fields(name: &str, got: &Value, want: &Value) -> Result<()> {
    for (key, value) in got.as_object().context("object")? {
        ensure!(
            &want[key] == value,
            "{name}: {key} detected {value}, spandrel {}",
            want[key]
        );
    }
    Ok(())
}

/// The network on `input`, whole, in `dtype` on the CPU.
pub fn forward(model: &GanModel, input: &Tensor, dtype: DType) -> Result<Tensor> {
    let net = GanNetwork::new(
        model.arch(),
        model.weights(),
        dtype,
        &Device::Cpu,
        model.source(),
    )?;
    Ok(net.forward(&input.to_dtype(dtype)?)?)
}

/// The upscaler with tiles of edge `tile` (0: whole) and no pre-pad.
pub fn upscaler(model: &GanModel, tile: usize) -> Result<GanUpscaler> {
    Ok(GanUpscaler::new(
        model,
        &GanOptions {
            tile: Some(tile),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?)
}

/// `upscaler` on `image`.
pub fn upscale_with(upscaler: &GanUpscaler, image: &Tensor) -> Result<Tensor> {
    Ok(upscaler.upscale_tensor(image, &mut |_, _| ControlFlow::Continue(()))?)
}

/// [`upscaler`] on `image`, and how many tiles it ran.
pub fn upscale(model: &GanModel, image: &Tensor, tile: usize) -> Result<(Tensor, usize)> {
    let upscaler = upscaler(model, tile)?;
    let mut tiles = 0;
    let out = upscaler.upscale_tensor(image, &mut |_, total| {
        tiles = total;
        ControlFlow::Continue(())
    })?;
    Ok((out, tiles))
}

/// A deterministic test image with structure at every scale.
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

/// max |tiled − untiled| over the image for tiles of edge `tile`, and the tile count.
pub fn seam(model: &GanModel, image: &Tensor, tile: usize) -> Result<(f32, usize)> {
    let (whole, _) = upscale(model, image, 0)?;
    let (tiled, tiles) = upscale(model, image, tile)?;
    let d = (tiled - whole)?.abs()?.flatten_all()?.max(0)?;
    Ok((d.to_scalar::<f32>()?, tiles))
}

/// The error of building a model from `dict` (or what it loaded as).
pub fn error_of(dict: StateDict) -> String {
    match GanModel::from_state_dict(dict, Path::new("damaged.safetensors")) {
        Ok(m) => format!("loaded as {}", m.arch().describe()),
        Err(e) => e.to_string(),
    }
}
