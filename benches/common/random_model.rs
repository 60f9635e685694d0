//! The full-size x4 upscaler with random weights: a candle_nn backend that hands out random
//! tensors for any name ([`RandomWeights`]), and a complete model directory in the hub's
//! diffusers layout built from it ([`write_random_model`]), so benches can time the real
//! loading and upscaling code at full size without downloading the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};

/// Random weights for any name: norms get weight 1 and bias 0, other vectors N(0, 0.02²),
/// matrices and kernels N(0, 1/fan_in) so activations stay O(1) through the network (no
/// overflow, no denormals that would distort the timings). Counts the parameters it hands out
/// and, when made with [`RandomWeights::recording`], keeps the tensors (in f32) by name.
pub struct RandomWeights {
    params: Mutex<HashMap<String, usize>>,
    tensors: Option<Mutex<HashMap<String, Tensor>>>,
}

impl RandomWeights {
    pub fn new() -> Self {
        Self {
            params: Mutex::new(HashMap::new()),
            tensors: None,
        }
    }

    /// Also keeps every tensor handed out, for [`RandomWeights::take_tensors`].
    pub fn recording() -> Self {
        Self {
            tensors: Some(Mutex::new(HashMap::new())),
            ..Self::new()
        }
    }

    /// A `VarBuilder` drawing from these weights.
    pub fn var_builder(&self, dtype: DType, dev: &Device) -> VarBuilder<'_> {
        VarBuilder::from_backend(Box::new(Shared(self)), dtype, dev.clone())
    }

    /// Parameters handed out so far (each name counted once).
    pub fn param_count(&self) -> usize {
        self.params
            .lock()
            .expect("parameter count lock")
            .values()
            .sum()
    }

    /// The recorded tensors (empty unless made with [`RandomWeights::recording`]).
    pub fn take_tensors(&self) -> HashMap<String, Tensor> {
        self.tensors
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().expect("tensor lock")))
            .unwrap_or_default()
    }
}

/// Shares one backend between a `VarBuilder` (which takes ownership) and the caller.
struct Shared<'a>(&'a RandomWeights);

impl SimpleBackend for Shared<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .params
            .lock()
            .expect("parameter count lock")
            .insert(name.to_string(), s.elem_count());
        let dims = s.dims().to_vec();
        let mut parts = name.rsplit('.');
        let leaf = parts.next().unwrap_or("");
        let module = parts.next().unwrap_or("");
        let t = if dims.len() == 1 && module.contains("norm") {
            match leaf {
                "weight" => Tensor::ones(s, DType::F32, dev)?,
                _ => Tensor::zeros(s, DType::F32, dev)?,
            }
        } else if dims.len() == 1 {
            Tensor::randn(0f32, 0.02, s, dev)?
        } else {
            let fan_in: usize = dims[1..].iter().product();
            Tensor::randn(0f32, (1.0 / (fan_in.max(1) as f64).sqrt()) as f32, s, dev)?
        };
        if let Some(tensors) = &self.0.tensors {
            tensors
                .lock()
                .expect("tensor lock")
                .insert(name.to_string(), t.clone());
        }
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: {name} requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// `text_encoder/config.json` of stabilityai/stable-diffusion-x4-upscaler: the OpenCLIP
/// ViT-H text tower (23 of its 24 layers, as Stable Diffusion 2 uses it) in transformers'
/// `CLIPTextModel` form.
pub const X4_TEXT_ENCODER_CONFIG: &str = r#"{
  "architectures": [
    "CLIPTextModel"
  ],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1024,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 4096,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 16,
  "num_hidden_layers": 23,
  "pad_token_id": 1,
  "projection_dim": 512,
  "torch_dtype": "float32",
  "vocab_size": 49408
}
"#;

/// Bumped when what [`write_random_model`] writes changes, so old caches are rebuilt.
const LAYOUT_VERSION: &str = "x4-random v1";
/// Written last into a finished model directory: the configs it was built from.
const STAMP: &str = "bench-model-stamp.txt";

/// The crate root (the benches' `CARGO_MANIFEST_DIR`).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or the crate's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_root().join("target"))
}

/// Where the random model is cached: `DIFFSR_BENCH_MODEL_DIR`, else
/// `<target>/bench-models/x4-random`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIFFSR_BENCH_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    target_dir().join("bench-models/x4-random")
}

fn stamp_text(root: &Path) -> Result<String> {
    let assets = root.join("assets/x4-upscaler");
    let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| p.display().to_string());
    Ok(format!(
        "{LAYOUT_VERSION}\n--- unet\n{}\n--- vae\n{}\n--- text_encoder\n{X4_TEXT_ENCODER_CONFIG}",
        read(assets.join("unet_config.json"))?,
        read(assets.join("vae_config.json"))?,
    ))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| entry.path().display().to_string())?;
        }
    }
    Ok(())
}

/// Saves what `weights` recorded to `path` and returns (tensors, parameters, bytes).
fn save_recorded(weights: &RandomWeights, path: &Path) -> Result<(usize, usize, u64)> {
    let tensors = weights.take_tensors();
    if tensors.is_empty() {
        bail!("no tensors were recorded for {}", path.display());
    }
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing {}", path.display()))?;
    let bytes = std::fs::metadata(path)?.len();
    Ok((tensors.len(), weights.param_count(), bytes))
}

/// Writes a complete full-size x4-upscaler model directory with random weights at `dir`, in
/// the hub's diffusers layout, so `UpscalePipeline::load(dir)` runs the real loading code (and
/// diffusers' `StableDiffusionUpscalePipeline.from_pretrained(dir)` loads it too, for the
/// `x4_cpu` bench's reference):
/// `model_index.json`, `scheduler/`, `low_res_scheduler/` and `tokenizer/` (the real CLIP
/// vocabulary) from the tiny test fixture, the UNet and VAE configs from
/// `assets/x4-upscaler/`, the real text encoder config ([`X4_TEXT_ENCODER_CONFIG`]), and f32
/// safetensors with a random tensor for every name each model asks for (~3.5 GB in all).
///
/// A directory that is complete (its stamp names the same configs) is reused. The directory
/// is built under a temporary name and renamed into place, so an interrupted run never
/// leaves a half-written model that looks complete.
pub fn write_random_model(dir: &Path) -> Result<()> {
    let root = crate_root();
    let stamp = stamp_text(&root)?;
    if std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    let parent = dir.parent().context("the model directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .context("the model directory has no name")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    eprintln!(
        "[bench] writing the random full-size x4 model to {} (once; reused later)",
        dir.display()
    );
    let start = Instant::now();
    let fixture = root.join("tests/fixtures/tiny-x4-upscaler");
    let assets = root.join("assets/x4-upscaler");
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(
        fixture.join("model_index.json"),
        tmp.join("model_index.json"),
    )?;
    for component in ["scheduler", "low_res_scheduler", "tokenizer"] {
        copy_dir(&fixture.join(component), &tmp.join(component))?;
    }
    for component in ["unet", "vae", "text_encoder"] {
        std::fs::create_dir_all(tmp.join(component))?;
    }
    std::fs::copy(
        assets.join("unet_config.json"),
        tmp.join("unet/config.json"),
    )?;
    std::fs::copy(assets.join("vae_config.json"), tmp.join("vae/config.json"))?;
    std::fs::write(tmp.join("text_encoder/config.json"), X4_TEXT_ENCODER_CONFIG)?;

    let dev = Device::Cpu;
    let report = |what: &str, (n, params, bytes): (usize, usize, u64)| {
        eprintln!(
            "[bench]   {what}: {n} tensors, {:.1}M parameters, {:.2} GB",
            params as f64 / 1e6,
            bytes as f64 / 1e9
        );
    };
    {
        let config = ClipTextConfig::from_file(&tmp.join("text_encoder/config.json"))?;
        let weights = RandomWeights::recording();
        let model = ClipTextModel::new(&config, weights.var_builder(DType::F32, &dev))?;
        drop(model);
        let saved = save_recorded(&weights, &tmp.join("text_encoder/model.safetensors"))?;
        report("text_encoder", saved);
    }
    {
        let config = UNet2DConditionConfig::from_file(&tmp.join("unet/config.json"))?;
        let weights = RandomWeights::recording();
        let model = UNet2DConditionModel::new(&config, weights.var_builder(DType::F32, &dev))?;
        drop(model);
        let path = tmp.join("unet/diffusion_pytorch_model.safetensors");
        report("unet", save_recorded(&weights, &path)?);
    }
    {
        let config = AutoencoderKLConfig::from_file(&tmp.join("vae/config.json"))?;
        let weights = RandomWeights::recording();
        let model = AutoencoderKL::new(&config, weights.var_builder(DType::F32, &dev))?;
        drop(model);
        let path = tmp.join("vae/diffusion_pytorch_model.safetensors");
        report("vae", save_recorded(&weights, &path)?);
    }
    std::fs::write(tmp.join(STAMP), &stamp)?;
    // An outdated or incomplete directory makes way; a concurrent bench that finished first
    // wins (its directory is as good as ours).
    if dir.exists() {
        if std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp) {
            std::fs::remove_dir_all(&tmp)?;
            return Ok(());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    eprintln!(
        "[bench] random model written in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
