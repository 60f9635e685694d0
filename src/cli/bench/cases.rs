//! What each `diffsr bench` case builds before its runs, and the run itself: random weights on
//! the device for the UNet and VAE (from the x4 upscaler's configs, compiled in, or
//! `--config`), and the engines as `diffsr upscale` loads them for the GAN and the whole
//! upscale.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffsr::engine::{select, EngineChoice, EngineConfig};
use diffsr::image_io::Rgb8;
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffsr::rng::TorchRng;
use diffsr::upscaler::{
    DiffusionSettings, EngineSettings, PlannedMemory, UpscaleParams, UpscaleRequest,
};

use super::super::upscale::usage;
use super::{BenchArgs, BenchCase};

/// The x4 upscaler's configs (stabilityai/stable-diffusion-x4-upscaler).
const UNET_CONFIG: &str = include_str!("../../../assets/x4-upscaler/unet_config.json");
const VAE_CONFIG: &str = include_str!("../../../assets/x4-upscaler/vae_config.json");

/// A case ready to run.
pub struct Prepared {
    pub run: Box<dyn Fn() -> Result<()>>,
    pub dtype: DType,
    /// The working-memory budget the case runs in.
    pub budget: u64,
    /// The engine's plan for the input (gan, upscale).
    pub planned: Option<PlannedMemory>,
    /// What runs, in a few words.
    pub description: String,
}

pub fn prepare(args: &BenchArgs, device: &Device) -> Result<Prepared> {
    let size = args.size as usize;
    let gpu = !device.is_cpu();
    let dtype = args.dtype.map(DType::from);
    match args.case {
        BenchCase::Unet | BenchCase::Vae if args.model.is_some() => Err(usage(
            "--model applies to the gan and upscale cases; unet and vae take --config",
        )),
        BenchCase::Gan | BenchCase::Upscale if args.config.is_some() => Err(usage(
            "--config applies to the unet and vae cases; gan and upscale take --model",
        )),
        BenchCase::Unet | BenchCase::Vae | BenchCase::Upscale if args.pre_pad.is_some() => {
            Err(usage("--pre-pad applies to the gan case"))
        }
        BenchCase::Unet => {
            let dtype = dtype.unwrap_or(if gpu { DType::F16 } else { DType::F32 });
            unet(args, device, size, dtype)
        }
        BenchCase::Vae => vae(args, device, size, dtype.unwrap_or(DType::F32)),
        BenchCase::Gan => engine(args, device, size, EngineChoice::Gan, dtype),
        BenchCase::Upscale => {
            if args.model.is_none() {
                return Err(usage(
                    "the upscale case needs --model: an x4 model folder (hub layout)",
                ));
            }
            engine(args, device, size, EngineChoice::Diffusion, dtype)
        }
    }
}

/// Variables built by `build` with random values (the layers' own initialisations), in f32 on
/// the device, then cast to `dtype` and built again from those: candle draws random numbers
/// on a GPU in f32 only.
fn random_model<T>(
    device: &Device,
    dtype: DType,
    seed: u64,
    build: impl Fn(VarBuilder) -> diffsr::Result<T>,
) -> Result<T> {
    // candle's CPU generator cannot be seeded; the weights' values do not change the times.
    if !device.is_cpu() {
        device.set_seed(seed)?;
    }
    let vars = VarMap::new();
    let model = build(VarBuilder::from_varmap(&vars, DType::F32, device))?;
    if dtype == DType::F32 {
        return Ok(model);
    }
    drop(model);
    let tensors = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("the random weights' lock was poisoned"))?
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    drop(vars);
    Ok(build(VarBuilder::from_tensors(tensors, dtype, device))?)
}

fn read_config<T: serde::de::DeserializeOwned>(
    args: &BenchArgs,
    embedded: &str,
    validate: impl Fn(&T) -> diffsr::Result<()>,
) -> Result<T> {
    let config: T = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("--config {}", path.display()))?
        }
        None => serde_json::from_str(embedded).context("the built-in x4 config")?,
    };
    validate(&config).map_err(|e| usage(format!("--config: {e}")))?;
    Ok(config)
}

fn unet(args: &BenchArgs, device: &Device, size: usize, dtype: DType) -> Result<Prepared> {
    let config: UNet2DConditionConfig =
        read_config(args, UNET_CONFIG, UNet2DConditionConfig::validate)?;
    let unet = random_model(device, dtype, args.seed, |vb| {
        UNet2DConditionModel::new(&config, vb)
    })?;
    let sample =
        Tensor::randn(0f32, 1.0, (2, config.in_channels, size, size), device)?.to_dtype(dtype)?;
    // The text encoder's width: every block attends to the same encoder states.
    let widths = config
        .cross_attention_dim
        .expand(config.block_out_channels.len(), "cross_attention_dim")?;
    let context_width = widths.first().copied().unwrap_or(1024);
    let context = Tensor::randn(0f32, 1.0, (2, 77, context_width), device)?.to_dtype(dtype)?;
    let labels = Tensor::new(&[20u32, 20], device)?;
    Ok(Prepared {
        run: Box::new(move || {
            unet.forward(&sample, 500.0, &context, &labels)?;
            Ok(())
        }),
        dtype,
        budget: diffsr::memory::default_budget(device),
        planned: None,
        description: format!("guided step, latent {size}×{size}, batch 2"),
    })
}

fn vae(args: &BenchArgs, device: &Device, size: usize, dtype: DType) -> Result<Prepared> {
    let config: AutoencoderKLConfig = read_config(args, VAE_CONFIG, AutoencoderKLConfig::validate)?;
    let vae = random_model(device, dtype, args.seed, |vb| {
        AutoencoderKL::new(&config, vb)
    })?;
    let latents = Tensor::randn(0f32, 1.0, (1, config.latent_channels, size, size), device)?
        .to_dtype(dtype)?;
    let factor = 1usize << config.block_out_channels.len().saturating_sub(1);
    Ok(Prepared {
        run: Box::new(move || {
            vae.decode(&latents)?;
            Ok(())
        }),
        dtype,
        budget: diffsr::memory::default_budget(device),
        planned: None,
        description: format!(
            "decode, latent {size}×{size} to {}×{}",
            size * factor,
            size * factor
        ),
    })
}

/// A loaded engine on a random `size` × `size` image, planned as `diffsr upscale` plans it.
fn engine(
    args: &BenchArgs,
    device: &Device,
    size: usize,
    choice: EngineChoice,
    dtype: Option<DType>,
) -> Result<Prepared> {
    let config = EngineConfig {
        choice,
        model: args.model.clone(),
        device: device.clone(),
        dtype,
        max_memory: args.max_memory,
        pre_pad: args.pre_pad,
        ..EngineConfig::default()
    };
    let selected = select(&config)?;
    let upscaler = selected.upscaler;
    let mut rng = TorchRng::new(args.seed);
    let pixels = rng
        .randn(size * size * 3)
        .into_iter()
        .map(|v| (128.0 + 40.0 * v).clamp(0.0, 255.0) as u8)
        .collect();
    let image = Rgb8::new(pixels, size, size)?;
    let params = UpscaleParams {
        max_memory: args.max_memory,
        settings: (choice == EngineChoice::Diffusion).then(|| {
            EngineSettings::Diffusion(DiffusionSettings {
                steps: args.steps as usize,
                seed: args.seed,
                ..DiffusionSettings::default()
            })
        }),
        ..UpscaleParams::default()
    };
    upscaler.check_params(&params)?;
    let planned = upscaler.memory_estimate(size, size, &params)?;
    let budget = planned.as_ref().map_or_else(
        || diffsr::memory::default_budget(device),
        |p| p.budget_bytes,
    );
    let description = format!(
        "{}, {size}×{size} to {}×{}{}",
        upscaler.describe(),
        size * upscaler.scale(),
        size * upscaler.scale(),
        if choice == EngineChoice::Diffusion {
            format!(", {} steps", args.steps)
        } else {
            String::new()
        }
    );
    let dtype = dtype.unwrap_or(if choice == EngineChoice::Gan && !device.is_cpu() {
        DType::F16
    } else {
        DType::F32
    });
    Ok(Prepared {
        run: Box::new(move || {
            let mut on_step = |_| ControlFlow::Continue(());
            upscaler.upscale(UpscaleRequest::new(&image, &params, &mut on_step))?;
            Ok(())
        }),
        dtype,
        budget,
        planned,
        description,
    })
}
