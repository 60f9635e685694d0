//! Choosing and loading an engine, as `diffsr upscale --engine` does: the latent-diffusion
//! upscaler, a GAN model file (local, or `owner/repo:file` from the hub), or the GAN model built
//! into the library. [`EngineChoice::Auto`] runs diffusion when its weights are there or can be
//! downloaded and otherwise falls back to the built-in GAN, saying why
//! ([`SelectedEngine::fallback_reason`]); [`EngineChoice::Diffusion`] never falls back. Without
//! the `hub` feature only local models load, and `Auto` falls back instead of downloading.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::gan::{embedded, GanModel, GanOptions, GanUpscaler};
use crate::model_spec::ModelSpec;
use crate::pipeline::{LoadOptions, UpscalePipeline};
use crate::scale_plan::{PlannedUpscaler, ScalePlan};
use crate::upscaler::{DiffusionSettings, Engine, Upscaler};

/// Most reflect padding `pre_pad` takes: context beyond a few dozen pixels changes nothing.
pub const MAX_PRE_PAD: usize = 512;

/// Which engine to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// Diffusion when its model is available or downloadable, else the built-in GAN. A model
    /// that is a single weights file means the GAN.
    #[default]
    Auto,
    /// The latent-diffusion upscaler only.
    Diffusion,
    /// A Real-ESRGAN-family model (the built-in one unless a model file is named).
    Gan,
}

impl EngineChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "diffusion", "gan"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Diffusion => "diffusion",
            Self::Gan => "gan",
        }
    }
}

impl FromStr for EngineChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "diffusion" => Ok(Self::Diffusion),
            "gan" => Ok(Self::Gan),
            _ => Err(Error::option(
                "engine",
                format!("`{s}`: expected one of {}", Self::NAMES.join(", ")),
            )),
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub choice: EngineChoice,
    /// The model, as [`ModelSpec::parse`] reads it. Diffusion: a hub repo id
    /// (`owner/name[@revision]`) or a local diffusers folder; default
    /// [`crate::model_spec::DEFAULT_REPO`]. GAN: a model file (.safetensors, .pth, ncnn
    /// .param/.bin) or `owner/repo[@rev]:file` on the hub; default the built-in model.
    pub model: Option<String>,
    pub device: Device,
    /// Diffusion: dtype of the UNet and text encoder (default f32). GAN: of the network
    /// (default f16 on a GPU, f32 on the CPU).
    pub dtype: Option<DType>,
    /// Working-memory budget in bytes; `None`: [`crate::memory::default_budget`].
    pub max_memory: Option<u64>,
    /// GAN tile edge in input pixels; `None` chooses it from the budget, `Some(0)` runs whole
    /// images.
    pub tile: Option<usize>,
    /// realesr-general-x4v3's denoise strength 0..=1: its weights blended with its `-wdn`
    /// twin's (GAN only).
    pub denoise: Option<f64>,
    /// The `-wdn` model `denoise` blends in (default: realesr-general-wdn-x4v3 beside `model`).
    pub denoise_model: Option<String>,
    /// GAN: reflect padding around the image, input pixels, before the network (Real-ESRGAN's
    /// `pre_pad`); `None`: [`GanOptions::default`]'s 10. 0 with `tile` `Some(0)` gives the
    /// reference's own output (spandrel runs the network on the image as it is).
    pub pre_pad: Option<usize>,
    /// GAN: the factor of a model whose weights do not hold one (SRCNN, which runs on a bicubic
    /// upscale: default 2, or the file's `diffsr.scale` entry); other models accept only their
    /// own ([`GanModel::with_scale`]).
    pub model_scale: Option<usize>,
    /// What the diffusion engine does when a request carries no settings.
    pub diffusion: DiffusionSettings,
    /// The thread pool both engines run their CPU work in ([`crate::threads::pool`]); `None`:
    /// rayon's global pool.
    pub threads: Option<Arc<rayon::ThreadPool>>,
    /// How the hub is reached; `None`: [`crate::hub::HubOptions::from_env`].
    #[cfg(feature = "hub")]
    pub hub: Option<crate::hub::HubOptions>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            choice: EngineChoice::Auto,
            model: None,
            device: Device::Cpu,
            dtype: None,
            max_memory: None,
            tile: None,
            denoise: None,
            denoise_model: None,
            pre_pad: None,
            model_scale: None,
            diffusion: DiffusionSettings::default(),
            threads: None,
            #[cfg(feature = "hub")]
            hub: None,
        }
    }
}

impl EngineConfig {
    /// Checks what can be checked before any model loads: the diffusion settings
    /// ([`DiffusionSettings::validate`]), `denoise` in 0..=1, a non-zero `max_memory`, and a
    /// `dtype` the device cannot run the diffusion UNet in (bf16 on the CPU: candle's strided
    /// CPU convolution has no bf16 kernel) when the diffusion engine may be chosen. [`select`]
    /// runs it first.
    pub fn validate(&self) -> Result<()> {
        self.diffusion.validate()?;
        if let Some(d) = self.denoise {
            if !(0.0..=1.0).contains(&d) {
                return Err(Error::option(
                    "denoise",
                    format!("is {d}; expected a strength from 0 to 1"),
                ));
            }
        }
        if let Some(p) = self.pre_pad {
            if p > MAX_PRE_PAD {
                return Err(Error::option(
                    "pre_pad",
                    format!("is {p}; expected 0 to {MAX_PRE_PAD} pixels"),
                ));
            }
        }
        if self.max_memory == Some(0) {
            return Err(Error::option("max_memory", "must be at least one byte"));
        }
        if let Some(dtype) = self.dtype {
            if self.may_run_diffusion() && dtype != DType::F32 {
                check_unet_dtype_runs(&self.device, dtype)?;
            }
        }
        Ok(())
    }

    /// Whether [`select`] may load the diffusion engine: asked for, or under `Auto` with no
    /// single model file named.
    fn may_run_diffusion(&self) -> bool {
        match self.choice {
            EngineChoice::Diffusion => true,
            EngineChoice::Gan => false,
            EngineChoice::Auto => !self
                .model
                .as_deref()
                .and_then(|m| ModelSpec::parse(m).ok())
                .is_some_and(|spec| spec.is_single_file()),
        }
    }
}

/// Refuses a dtype the device cannot run the UNet in. The probe is the UNet's own stride-2
/// downsampler on a 4x4 input: candle's CPU convolution has no bf16 kernel for it, while the
/// stride-1 convolutions and the matmuls widen bf16 to f32 and run (so the GAN engine, all
/// stride 1, does run bf16 on the CPU). Probing follows whatever the candle build supports.
fn check_unet_dtype_runs(device: &Device, dtype: DType) -> Result<()> {
    let vb = candle_nn::VarBuilder::zeros(dtype, device);
    let probe = crate::models::layers::Downsample2D::new(1, 1, 1, vb).and_then(|down| {
        let x = candle_core::Tensor::zeros((1, 1, 4, 4), dtype, device)?;
        Ok(down.forward(&x)?.to_dtype(DType::F32)?)
    });
    probe.map(drop).map_err(|e| {
        let device_name = match device {
            Device::Cpu => "the CPU",
            Device::Cuda(_) => "CUDA",
            Device::Metal(_) => "Metal",
        };
        let reason = e.to_string();
        let reason = reason.lines().next().unwrap_or_default();
        Error::option(
            "dtype",
            format!(
                "{} cannot run the diffusion engine on {device_name} ({reason}); use f32 or \
                 f16 there, or the GAN engine",
                dtype.as_str()
            ),
        )
    })
}

/// The loaded engine and how to name its model in the outputs' metadata.
pub struct SelectedEngine {
    pub upscaler: Box<dyn Upscaler>,
    /// The GAN for second passes beyond the diffusion model's factor (the built-in model).
    pub second_pass: Option<Box<dyn Upscaler>>,
    /// The model as given (repo id, folder or file), or the built-in model's name.
    pub model: String,
    /// The hub revision (commit) the model resolved to, if it came from the hub.
    pub revision: Option<String>,
    /// Why [`EngineChoice::Auto`] fell back to the built-in GAN (the first line of the
    /// diffusion error); `None` when it did not.
    pub fallback_reason: Option<String>,
}

impl SelectedEngine {
    pub fn engine(&self) -> Engine {
        self.upscaler.engine()
    }

    /// The engine with its second-pass GAN, running `plan` for sizes beyond its factor.
    pub fn planned(&self, plan: ScalePlan) -> PlannedUpscaler<'_> {
        PlannedUpscaler::new(self.upscaler.as_ref(), self.second_pass.as_deref(), plan)
    }
}

impl std::fmt::Debug for SelectedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectedEngine")
            .field("upscaler", &self.upscaler.describe())
            .field(
                "second_pass",
                &self.second_pass.as_ref().map(|s| s.describe()),
            )
            .field("model", &self.model)
            .field("revision", &self.revision)
            .field("fallback_reason", &self.fallback_reason)
            .finish()
    }
}

/// Loads the engine `config` asks for. Under [`EngineChoice::Auto`], when diffusion cannot
/// run, the built-in GAN is loaded and the reason is in [`SelectedEngine::fallback_reason`];
/// when that fails too the error is [`Error::FallbackFailed`], carrying both.
pub fn select(config: &EngineConfig) -> Result<SelectedEngine> {
    config.validate()?;
    let spec = config.model.as_deref().map(ModelSpec::parse).transpose()?;
    let single_file = spec.as_ref().is_some_and(ModelSpec::is_single_file);
    match config.choice {
        EngineChoice::Gan => load_gan(config, spec.as_ref()),
        EngineChoice::Diffusion => {
            if single_file {
                return Err(Error::ModelSpec {
                    spec: config.model.clone().unwrap_or_default(),
                    reason: "a single weights file is not a diffusion model; give the model \
                             directory (diffusers layout) or a hub repo id, or use the gan \
                             engine (--engine gan)"
                        .into(),
                });
            }
            load_diffusion(config, spec.unwrap_or_default())
        }
        EngineChoice::Auto if single_file => load_gan(config, spec.as_ref()),
        EngineChoice::Auto => match load_diffusion(config, spec.unwrap_or_default()) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                let reason = e.to_string();
                let reason = reason.lines().next().unwrap_or_default().to_string();
                match load_gan(config, None) {
                    Ok(loaded) => Ok(SelectedEngine {
                        fallback_reason: Some(reason),
                        ..loaded
                    }),
                    Err(cause) => Err(Error::FallbackFailed {
                        reason,
                        cause: Box::new(cause),
                    }),
                }
            }
        },
    }
}

/// The working-memory budget: the one given, else the device's default.
fn budget(config: &EngineConfig) -> u64 {
    config
        .max_memory
        .unwrap_or_else(|| crate::memory::default_budget(&config.device))
}

/// The GAN options of `config`; `dtype` as given (`None`: the device's default).
fn gan_options(config: &EngineConfig, dtype: Option<DType>) -> GanOptions {
    GanOptions {
        device: config.device.clone(),
        dtype,
        tile: config.tile,
        max_memory: config.max_memory,
        threads: config.threads.clone(),
        pre_pad: config
            .pre_pad
            .unwrap_or(crate::gan::upscaler::DEFAULT_PRE_PAD),
    }
}

fn load_diffusion(config: &EngineConfig, spec: ModelSpec) -> Result<SelectedEngine> {
    if config.denoise.is_some() {
        return Err(Error::option(
            "--denoise",
            "applies to the GAN engine (realesr-general-x4v3), not to diffusion",
        ));
    }
    if config.pre_pad.is_some() {
        return Err(Error::option(
            "--pre-pad",
            "applies to the GAN engine, not to diffusion (which pads nothing)",
        ));
    }
    if config.model_scale.is_some() {
        return Err(Error::option(
            "--model-scale",
            "applies to GAN models whose weights hold no scale (SRCNN), not to diffusion",
        ));
    }
    let load = LoadOptions {
        device: config.device.clone(),
        dtype: config.dtype.unwrap_or(DType::F32),
        max_memory: Some(budget(config)),
        threads: config.threads.clone(),
        ..LoadOptions::default()
    };
    let model_dir = resolve_dir(config, &spec, load.dtype)?;
    let pipeline = UpscalePipeline::load(&model_dir, &load)
        .map_err(|e| Error::ModelLoad {
            path: model_dir.clone(),
            cause: Box::new(e),
        })?
        .with_settings(config.diffusion.clone());
    // The second-pass GAN runs in its own default dtype, whatever the diffusion dtype.
    let gan = GanUpscaler::new(&embedded::embedded_model()?, &gan_options(config, None))?;
    Ok(SelectedEngine {
        upscaler: Box::new(pipeline),
        second_pass: Some(Box::new(gan)),
        revision: match &spec {
            ModelSpec::Hub { .. } => model_dir
                .file_name()
                .map(|commit| commit.to_string_lossy().into_owned()),
            _ => None,
        },
        model: spec.to_string(),
        fallback_reason: None,
    })
}

fn load_gan(config: &EngineConfig, spec: Option<&ModelSpec>) -> Result<SelectedEngine> {
    let (model, name) = match spec {
        None => (
            embedded::embedded_model()?,
            embedded::EMBEDDED_NAME.to_string(),
        ),
        Some(spec) if spec.is_single_file() => {
            let path = resolve_file(config, spec)?;
            (GanModel::load(&path)?, spec.to_string())
        }
        Some(spec) => {
            return Err(Error::ModelSpec {
                spec: spec.to_string(),
                reason: "the GAN engine takes one model file (.safetensors, .pth, ncnn \
                         .param/.bin), locally or as owner/repo:file on the hub, not a model \
                         directory"
                    .into(),
            })
        }
    };
    let model = match config.model_scale {
        Some(scale) => model.with_scale(scale)?,
        None => model,
    };
    let model = match config.denoise {
        None => model,
        Some(strength) => {
            let twin = denoise_twin(config, spec)?;
            let twin_path = resolve_file(config, &twin).map_err(|e| {
                Error::option("--denoise", format!("needs the -wdn model {twin}: {e}"))
            })?;
            let twin_model = GanModel::load(&twin_path)?;
            model.interpolate(&twin_model, strength)?
        }
    };
    let upscaler = GanUpscaler::new(&model, &gan_options(config, config.dtype))?;
    let revision = match spec {
        Some(ModelSpec::HubFile { revision, .. }) => Some(revision.clone()),
        _ => None,
    };
    Ok(SelectedEngine {
        upscaler: Box::new(upscaler),
        second_pass: None,
        model: name,
        revision,
        fallback_reason: None,
    })
}

/// The `-wdn` model blended in by `denoise`: `denoise_model`, or realesr-general-x4v3's twin
/// named as Real-ESRGAN names it (`realesr-general-wdn-x4v3`), beside the model.
fn denoise_twin(config: &EngineConfig, spec: Option<&ModelSpec>) -> Result<ModelSpec> {
    if let Some(twin) = &config.denoise_model {
        return ModelSpec::parse(twin);
    }
    let Some(spec) = spec else {
        return Err(Error::option(
            "--denoise",
            "blends realesr-general-x4v3 with realesr-general-wdn-x4v3; give them with \
             --model and --denoise-model (the built-in model has no denoise twin)",
        ));
    };
    let text = spec.to_string();
    if !text.contains("realesr-general-x4v3") {
        return Err(Error::option(
            "--denoise",
            format!(
                "cannot tell the -wdn twin of {text}; name it with --denoise-model (for \
                 realesr-general-x4v3 it is realesr-general-wdn-x4v3)"
            ),
        ));
    }
    ModelSpec::parse(&text.replace("realesr-general-x4v3", "realesr-general-wdn-x4v3"))
}

/// The hub options of `config`, fetching the weights of `dtype`.
#[cfg(feature = "hub")]
fn hub_options(config: &EngineConfig, dtype: DType) -> Result<crate::hub::HubOptions> {
    Ok(match &config.hub {
        Some(hub) => crate::hub::HubOptions {
            dtype,
            ..hub.clone()
        },
        None => crate::hub::HubOptions::from_env(dtype)?,
    })
}

/// The local folder of a diffusion model spec, downloading a hub repo into the cache.
#[cfg(feature = "hub")]
fn resolve_dir(config: &EngineConfig, spec: &ModelSpec, dtype: DType) -> Result<PathBuf> {
    crate::hub::resolve(spec, &hub_options(config, dtype)?)
}

/// The local path of a single-file model spec, downloading a hub file into the cache.
#[cfg(feature = "hub")]
fn resolve_file(config: &EngineConfig, spec: &ModelSpec) -> Result<PathBuf> {
    let dtype = config.hub.as_ref().map_or(DType::F32, |h| h.dtype);
    crate::hub::resolve_file(spec, &hub_options(config, dtype)?)
}

/// The local folder of a diffusion model spec; a hub repo is an error (no hub client).
#[cfg(not(feature = "hub"))]
fn resolve_dir(_config: &EngineConfig, spec: &ModelSpec, _dtype: DType) -> Result<PathBuf> {
    match spec {
        ModelSpec::Dir(path) | ModelSpec::File(path) => Ok(path.clone()),
        _ => Err(no_hub(spec)),
    }
}

/// The local path of a single-file model spec; a hub file is an error (no hub client).
#[cfg(not(feature = "hub"))]
fn resolve_file(_config: &EngineConfig, spec: &ModelSpec) -> Result<PathBuf> {
    match spec {
        ModelSpec::File(path) => crate::model_spec::readable_file(path),
        ModelSpec::Dir(path) => Err(Error::ModelSpec {
            spec: spec.to_string(),
            reason: format!(
                "{} is a directory; give a single weights file",
                path.display()
            ),
        }),
        _ => Err(no_hub(spec)),
    }
}

#[cfg(not(feature = "hub"))]
fn no_hub(spec: &ModelSpec) -> Error {
    Error::ModelSpec {
        spec: spec.to_string(),
        reason: "a hub model, and this build of diffsr has no hub client (the `hub` feature); \
                 give a local path"
            .into(),
    }
}
