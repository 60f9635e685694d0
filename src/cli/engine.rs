//! Choosing and loading the engine of `diffsr upscale`: the latent-diffusion upscaler, a GAN
//! model file (local, or `owner/repo:file` from the hub), or the GAN model built into the
//! binary. `--engine auto` runs diffusion when its weights are there or can be downloaded and
//! otherwise falls back to the GAN path, saying why in one line; `--engine diffusion` never
//! falls back.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::ValueEnum;
use diffsr::gan::{embedded, GanModel, GanOptions, GanUpscaler};
use diffsr::hub::{resolve, resolve_file, HubOptions, ModelSpec};
use diffsr::pipeline::{LoadOptions, UpscalePipeline};
use diffsr::upscaler::Upscaler;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// Diffusion when its model is available or downloadable, else the GAN path.
    Auto,
    /// The latent-diffusion upscaler only.
    Diffusion,
    /// A Real-ESRGAN-family model (the built-in one unless --model names a file).
    Gan,
}

/// What the engine needs from the command line.
pub struct EngineRequest<'a> {
    pub engine: EngineArg,
    /// `--model` as given.
    pub model: Option<&'a str>,
    pub device: Device,
    /// `--dtype` as given (`None`: each engine's default).
    pub dtype: Option<DType>,
    pub gan: GanOptions,
    /// `--denoise` (realesr-general-x4v3's denoise strength) and the `-wdn` model to blend.
    pub denoise: Option<f64>,
    pub denoise_model: Option<&'a str>,
    pub hub: HubOptions,
}

/// The loaded engine and how to name its model in the outputs' metadata.
pub struct LoadedEngine {
    pub upscaler: Box<dyn Upscaler>,
    /// The GAN for second passes beyond the diffusion model's factor (the built-in model).
    pub second_pass: Option<Box<dyn Upscaler>>,
    pub model: String,
    pub revision: Option<String>,
}

pub fn load_engine(request: EngineRequest<'_>) -> Result<LoadedEngine> {
    let spec = request.model.map(ModelSpec::parse).transpose()?;
    let single_file = spec.as_ref().is_some_and(ModelSpec::is_single_file);
    match request.engine {
        EngineArg::Gan => load_gan(&request, spec.as_ref()),
        EngineArg::Diffusion => {
            if single_file {
                bail!(
                    "--model {}: a single weights file is not a diffusion model; give the \
                     model directory (diffusers layout) or a hub repo id, or use --engine gan",
                    request.model.unwrap_or_default()
                );
            }
            load_diffusion(&request, spec.unwrap_or_default())
        }
        EngineArg::Auto if single_file => load_gan(&request, spec.as_ref()),
        EngineArg::Auto => match load_diffusion(&request, spec.clone().unwrap_or_default()) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                let reason = format!("{e:#}");
                let reason = reason.lines().next().unwrap_or_default();
                eprintln!(
                    "warning: diffusion cannot run ({reason}); falling back to the GAN \
                         engine ({}); use --engine diffusion to make this an error",
                    embedded::EMBEDDED_NAME
                );
                load_gan(&request, None)
            }
        },
    }
}

fn load_diffusion(request: &EngineRequest<'_>, spec: ModelSpec) -> Result<LoadedEngine> {
    if request.denoise.is_some() {
        bail!("--denoise applies to the GAN engine (realesr-general-x4v3), not to diffusion");
    }
    let load = LoadOptions {
        device: request.device.clone(),
        dtype: request.dtype.unwrap_or(DType::F32),
        max_memory: Some(
            request
                .gan
                .max_memory
                .unwrap_or_else(|| diffsr::memory::default_budget(&request.device)),
        ),
        ..LoadOptions::default()
    };
    let hub = HubOptions {
        dtype: load.dtype,
        ..request.hub.clone()
    };
    let model_dir = resolve(&spec, &hub)?;
    let pipeline = UpscalePipeline::load(&model_dir, &load)
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    let gan = GanUpscaler::new(&embedded::embedded_model()?, &request.gan)?;
    Ok(LoadedEngine {
        upscaler: Box::new(pipeline),
        second_pass: Some(Box::new(gan)),
        revision: match &spec {
            ModelSpec::Hub { .. } => model_dir
                .file_name()
                .map(|commit| commit.to_string_lossy().into_owned()),
            _ => None,
        },
        model: spec.to_string(),
    })
}

fn load_gan(request: &EngineRequest<'_>, spec: Option<&ModelSpec>) -> Result<LoadedEngine> {
    let (model, name) = match spec {
        None => (
            embedded::embedded_model()?,
            embedded::EMBEDDED_NAME.to_string(),
        ),
        Some(spec) if spec.is_single_file() => {
            let path = resolve_file(spec, &request.hub)?;
            (GanModel::load(&path)?, spec.to_string())
        }
        Some(spec) => bail!(
            "--model {spec}: the GAN engine takes one model file (.safetensors, .pth, ncnn \
             .param/.bin), locally or as owner/repo:file on the hub, not a model directory"
        ),
    };
    let model = match request.denoise {
        None => model,
        Some(strength) => {
            let twin = denoise_twin(request, spec)?;
            let twin_path = resolve_file(&twin, &request.hub)
                .with_context(|| format!("--denoise needs the -wdn model {twin}"))?;
            let twin_model = GanModel::load(&twin_path)?;
            model.interpolate(&twin_model, strength)?
        }
    };
    let options = GanOptions {
        dtype: request.dtype.or(request.gan.dtype),
        ..request.gan.clone()
    };
    let upscaler = GanUpscaler::new(&model, &options)?;
    eprintln!("engine: gan, {}", upscaler.describe());
    let revision = match spec {
        Some(ModelSpec::HubFile { revision, .. }) => Some(revision.clone()),
        _ => None,
    };
    Ok(LoadedEngine {
        upscaler: Box::new(upscaler),
        second_pass: None,
        model: name,
        revision,
    })
}

/// The `-wdn` model blended in by `--denoise`: `--denoise-model`, or realesr-general-x4v3's
/// twin named as Real-ESRGAN names it (`realesr-general-wdn-x4v3`), beside the model.
fn denoise_twin(request: &EngineRequest<'_>, spec: Option<&ModelSpec>) -> Result<ModelSpec> {
    if let Some(twin) = request.denoise_model {
        return Ok(ModelSpec::parse(twin)?);
    }
    let Some(spec) = spec else {
        bail!(
            "--denoise blends realesr-general-x4v3 with realesr-general-wdn-x4v3; give them \
             with --model and --denoise-model (the built-in model has no denoise twin)"
        );
    };
    let text = spec.to_string();
    if !text.contains("realesr-general-x4v3") {
        bail!(
            "--denoise: cannot tell the -wdn twin of {text}; name it with --denoise-model \
             (for realesr-general-x4v3 it is realesr-general-wdn-x4v3)"
        );
    }
    let twin = text.replace("realesr-general-x4v3", "realesr-general-wdn-x4v3");
    Ok(ModelSpec::parse(&twin)?)
}
