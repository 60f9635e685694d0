//! The upscale loop: prompt encoding, noise augmentation of the low-resolution image, latent
//! initialisation, the guided denoising loop and the VAE decode, in the reference's order so
//! that a seed gives diffusers' image.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use diffsr_schedulers::{
    build_from_config, NoiseSchedule, Scheduler, SchedulerConfig, SolverOptions,
};

use super::memory_plan::{plan_memory, Im2colBytes, MemoryPlan, ModelFootprint, ModelWidths};
use super::options::{LoadOptions, TilingOptions};
use super::preprocess::pil_bicubic_resize_rgb8;
use super::prompt_cache::PromptCache;
use crate::error::{Error, Result};
use crate::image_io::{Rgb8, RgbF32};
use crate::model_dir::{with_weights, ModelDir};
use crate::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::profile::{self, Phase};
use crate::rng::TorchRng;
use crate::scale_plan::{PlannedUpscaler, ScalePlan};
use crate::threads;
use crate::tiling::{plan_tiles, run_tiled, TileOptions};
use crate::tokenizer::ClipTokenizer;
use crate::upscaler::{
    DiffusionSettings, Engine, EngineSettings, OnStep, PlannedMemory, StepProgress, UpscaleParams,
    UpscaleRequest, Upscaler,
};

/// The pipeline forces this VAE scaling factor whatever the config says (as diffusers does).
const VAE_SCALING_FACTOR: f64 = 0.08333;

/// The x4 upscaler, loaded once, upscaling many images.
pub struct UpscalePipeline {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    low_res_schedule: NoiseSchedule,
    max_noise_level: u32,
    /// 2^(VAE levels - 1): the input is floored to a multiple of it.
    vae_scale_factor: usize,
    device: Device,
    dtype: DType,
    tiling: TilingOptions,
    max_memory: Option<u64>,
    /// Bytes of the loaded weights (from the files), for memory plans.
    weight_bytes: u64,
    /// The largest weights file, held twice for a moment while it loads.
    largest_file: u64,
    widths: ModelWidths,
    /// The GPU convolution's extra buffer per latent pixel (none on the CPU).
    im2col: Im2colBytes,
    /// The last prompts' embeddings: a batch with one prompt encodes it once.
    prompts: PromptCache,
    /// What an upscale does when a request carries no settings of its own.
    settings: DiffusionSettings,
    /// Where the CPU work runs (`None`: rayon's global pool).
    threads: Option<Arc<rayon::ThreadPool>>,
}

impl UpscalePipeline {
    /// Loads every component from a model directory in the hub's diffusers layout.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        threads::install(options.threads.as_deref(), || Self::load_here(dir, options))
    }

    fn load_here(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let model = ModelDir::open(dir)?;
        let device = &options.device;
        let dtype = options.dtype;

        let tokenizer = ClipTokenizer::from_dir(&model.component("tokenizer")?)?;

        let text_config = ClipTextConfig::from_file(&model.file("text_encoder", "config.json")?)?;
        let mut weight_bytes = 0u64;
        let mut largest_file = 0u64;
        let mut count = |files: &crate::model_dir::WeightFiles, loaded: DType| {
            // File sizes, scaled when a half-precision file is loaded in f32 (or back).
            for f in &files.files {
                let len = std::fs::metadata(f).map_or(0, |m| m.len());
                let name = f.to_string_lossy();
                let stored = if name.contains(".fp16.") { 2 } else { 4 };
                weight_bytes += len * loaded.size_in_bytes() as u64 / stored;
                largest_file = largest_file.max(len);
            }
        };
        let (vb, files) = model.var_builder("text_encoder", "model", dtype, device)?;
        count(&files, dtype);
        let text_encoder = with_weights(&files, || ClipTextModel::new(&text_config, vb))?;

        let unet_config = UNet2DConditionConfig::from_file(&model.file("unet", "config.json")?)?;
        let (vb, files) = model.var_builder("unet", "diffusion_pytorch_model", dtype, device)?;
        count(&files, dtype);
        let unet = with_weights(&files, || UNet2DConditionModel::new(&unet_config, vb))?;

        let vae_config = AutoencoderKLConfig::from_file(&model.file("vae", "config.json")?)?;
        let (vb, files) =
            model.var_builder("vae", "diffusion_pytorch_model", DType::F32, device)?;
        count(&files, DType::F32);
        let vae = with_weights(&files, || AutoencoderKL::new(&vae_config, vb))?;

        let scheduler_config =
            SchedulerConfig::from_file(&model.file("scheduler", "scheduler_config.json")?)?;
        let low_res_path = model.file("low_res_scheduler", "scheduler_config.json")?;
        let low_res_config = SchedulerConfig::from_file(&low_res_path)?;
        let low_res_schedule = NoiseSchedule::from_config(&low_res_config)?;

        check_cross_config(
            &model,
            &tokenizer,
            &text_config,
            &unet_config,
            &low_res_schedule,
        )?;

        let levels = vae_config.block_out_channels.len();
        let latent_channels = vae_config.latent_channels;
        let in_channels = unet_config.in_channels;
        if latent_channels + 3 != in_channels {
            return Err(Error::Config {
                path: model.file("unet", "config.json")?,
                message: format!(
                    "in_channels is {in_channels}, but the upscaler feeds the UNet \
                     {latent_channels} latent channels plus 3 image channels"
                ),
            });
        }
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            low_res_schedule,
            max_noise_level: model.index().max_noise_level.unwrap_or(350),
            vae_scale_factor: 1 << levels.saturating_sub(1),
            device: device.clone(),
            dtype,
            tiling: options.tiling,
            max_memory: options.max_memory,
            weight_bytes,
            largest_file,
            widths: ModelWidths::from_channels(
                unet_config
                    .block_out_channels
                    .first()
                    .copied()
                    .unwrap_or(256),
                vae_config
                    .block_out_channels
                    .first()
                    .copied()
                    .unwrap_or(128),
            ),
            im2col: if device.is_cpu() {
                Im2colBytes::NONE
            } else {
                Im2colBytes::from_channels(
                    &unet_config.block_out_channels,
                    dtype.size_in_bytes(),
                    &vae_config.block_out_channels,
                )
            },
            prompts: PromptCache::default(),
            settings: DiffusionSettings::default(),
            threads: options.threads.clone(),
        })
    }

    /// Runs `work` in the pipeline's thread pool.
    fn in_pool<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        threads::install(self.threads.as_deref(), work)
    }

    /// The pipeline with `settings` as what an upscale does when its request carries none.
    pub fn with_settings(mut self, settings: DiffusionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// What an upscale does when its request carries no settings.
    pub fn settings(&self) -> &DiffusionSettings {
        &self.settings
    }

    /// Changes what an upscale does when its request carries no settings.
    pub fn set_settings(&mut self, settings: DiffusionSettings) {
        self.settings = settings;
    }

    /// The tiles and memory estimate of an upscale of a `width` × `height` input with
    /// `settings` under the memory budget; `None` without one (the fixed tiling applies).
    pub fn memory_plan(
        &self,
        width: usize,
        height: usize,
        settings: &DiffusionSettings,
    ) -> Result<Option<MemoryPlan>> {
        self.plan_within(width, height, settings.guided(), self.max_memory)
    }

    /// [`Self::memory_plan`] under `budget` (`None`: no plan).
    fn plan_within(
        &self,
        width: usize,
        height: usize,
        guided: bool,
        budget: Option<u64>,
    ) -> Result<Option<MemoryPlan>> {
        let Some(budget) = budget else {
            return Ok(None);
        };
        let f = self.vae_scale_factor;
        let (w, h) = ((width / f * f).max(f), (height / f * f).max(f));
        let model = ModelFootprint {
            weights: self.weight_bytes,
            loading: self.largest_file,
            widths: self.widths,
            unet_dtype_bytes: self.dtype.size_in_bytes(),
            im2col: self.im2col,
        };
        plan_memory(h, w, budget, &model, guided).map(Some)
    }

    /// The settings a request asks for: its own, else the pipeline's.
    fn settings_of<'a>(&'a self, params: &'a UpscaleParams) -> &'a DiffusionSettings {
        match &params.settings {
            None => &self.settings,
            Some(EngineSettings::Diffusion(settings)) => settings,
        }
    }

    /// The memory budget, if one was given.
    pub fn max_memory(&self) -> Option<u64> {
        self.max_memory
    }

    /// The tiling in use.
    pub fn tiling(&self) -> &TilingOptions {
        &self.tiling
    }

    /// Changes the tiling (e.g. after [`crate::pipeline::plan_memory`] chose one).
    pub fn set_tiling(&mut self, tiling: TilingOptions) {
        self.tiling = tiling;
    }

    /// UNet tile options.
    fn unet_tiles(tiling: &TilingOptions) -> TileOptions {
        TileOptions {
            tile: tiling.latent_tile,
            overlap: tiling.latent_overlap,
            scale: 1,
            align: 1,
            pad: 0,
            batch: tiling.unet_batch.max(1),
        }
    }

    /// UNet forward passes per denoising step for an h × w latent (1: untiled).
    pub fn unet_batches_per_step(&self, height: usize, width: usize) -> Result<usize> {
        let t = &self.tiling;
        if t.latent_tile == 0 || (height <= t.latent_tile && width <= t.latent_tile) {
            return Ok(1);
        }
        Ok(plan_tiles(width, height, &Self::unet_tiles(t))?.batches())
    }

    /// The largest `noise_level` the model accepts.
    pub fn max_noise_level(&self) -> u32 {
        self.max_noise_level
    }

    /// The factor between input and output size (4 for the x4 upscaler).
    pub fn scale(&self) -> usize {
        self.vae_scale_factor
    }

    /// Builds the solver a run uses (the model's own, or the one asked for).
    pub fn scheduler(&self, settings: &DiffusionSettings) -> Result<Box<dyn Scheduler>> {
        let solver_options = SolverOptions { eta: settings.eta };
        Ok(match settings.scheduler {
            Some(kind) => kind.build(&self.scheduler_config, settings.steps, &solver_options)?,
            None => build_from_config(&self.scheduler_config, settings.steps, &solver_options)?,
        })
    }

    /// Checks `settings` against the loaded model without an image: the model-free checks
    /// ([`DiffusionSettings::validate`]), the noise level against `max_noise_level`, and the
    /// solver built for the step count and η. What fails here would fail for every image, so a
    /// batch checks it once before the first.
    pub fn check_settings(&self, settings: &DiffusionSettings) -> Result<()> {
        self.check_noise_level(settings)?;
        self.scheduler(settings).map(drop)
    }

    /// [`DiffusionSettings::validate`] and the noise level against `max_noise_level`.
    fn check_noise_level(&self, settings: &DiffusionSettings) -> Result<()> {
        settings.validate()?;
        if settings.noise_level > self.max_noise_level {
            return Err(Error::option(
                "noise_level",
                format!(
                    "{} is above the model's max_noise_level {}; expected 0..={}",
                    settings.noise_level, self.max_noise_level, self.max_noise_level
                ),
            ));
        }
        Ok(())
    }

    /// Upscales an 8-bit RGB image with `settings`: one pass, the (4h, 4w) result where h × w
    /// is the input floored to a multiple of the scale (bicubic, as the reference). `on_step`
    /// runs after every step; returning `Break` cancels the run. The same as
    /// [`Upscaler::upscale`] with these settings and the model's own factor.
    pub fn upscale_with(
        &self,
        image: &Rgb8,
        settings: &DiffusionSettings,
        on_step: OnStep<'_>,
    ) -> Result<RgbF32> {
        let out = self.upscale_rgb8(image, settings, self.max_memory, on_step)?;
        RgbF32::from_tensor(&out)
    }

    /// [`Self::upscale_with`] under `budget`, as a (1, 3, H, W) tensor.
    fn upscale_rgb8(
        &self,
        image: &Rgb8,
        settings: &DiffusionSettings,
        budget: Option<u64>,
        on_step: OnStep<'_>,
    ) -> Result<Tensor> {
        image.check()?;
        let (width, height) = image.size();
        let f = self.vae_scale_factor;
        let (w, h) = (width - width % f, height - height % f);
        if w == 0 || h == 0 {
            return Err(Error::option(
                "image",
                format!(
                    "{width}x{height} is too small: the upscaler needs at least {f}x{f} pixels"
                ),
            ));
        }
        let floored = Rgb8 {
            data: pil_bicubic_resize_rgb8(&image.data, width, height, w, h),
            width: w,
            height: h,
        };
        let tensor = floored.to_tensor(&self.device)?;
        self.denoise_and_decode(&tensor, settings, budget, on_step)
    }

    /// Upscales a (1, 3, h, w) image in [0, 1] whose sides are multiples of the scale, with
    /// `settings`; the (1, 3, 4h, 4w) result in [0, 1]. The tensor-level entry point (float
    /// inputs, parity tests); images go through [`Self::upscale_with`] or [`Upscaler::upscale`].
    pub fn upscale_tensor(
        &self,
        image: &Tensor,
        settings: &DiffusionSettings,
        on_step: OnStep<'_>,
    ) -> Result<Tensor> {
        self.denoise_and_decode(image, settings, self.max_memory, on_step)
    }

    fn denoise_and_decode(
        &self,
        image: &Tensor,
        options: &DiffusionSettings,
        budget: Option<u64>,
        on_step: OnStep<'_>,
    ) -> Result<Tensor> {
        self.check_noise_level(options)?;
        let (batch, channels, height, width) = image.dims4()?;
        if batch != 1 || channels != 3 {
            return Err(Error::option(
                "image",
                format!(
                    "expected one RGB image (1, 3, h, w), got {:?}",
                    image.dims()
                ),
            ));
        }
        let f = self.vae_scale_factor;
        if height % f != 0 || width % f != 0 || height == 0 || width == 0 {
            return Err(Error::option(
                "image",
                format!("{width}x{height} is not a non-zero multiple of {f} on each side"),
            ));
        }
        let guidance = options.guided();
        let mut scheduler = self.scheduler(options)?;
        let mut rng = TorchRng::new(options.seed);

        // 1. Prompt: [negative, positive] under guidance, encoded as one batch.
        let embeddings = self.in_pool(|| {
            if guidance {
                self.encode_prompts(&[&options.negative_prompt, &options.prompt])
            } else {
                self.encode_prompts(&[&options.prompt])
            }
        })?;

        // 2-3. The image in [-1, 1], noised to `noise_level` with the low-res DDPM schedule.
        // The image noise is drawn first, then the latents, as the reference does.
        let image = image
            .to_device(&self.device)?
            .to_dtype(DType::F32)?
            .affine(2.0, -1.0)?;
        let noise = rng.randn_tensor(image.shape(), DType::F32, &self.device)?;
        let image =
            self.low_res_schedule
                .add_noise(&image, &noise, options.noise_level as usize)?;

        // 4. Latents at the low-resolution size.
        let latent_channels = self.vae.config().latent_channels;
        let mut latents = rng
            .randn_tensor(
                (1, latent_channels, height, width),
                DType::F32,
                &self.device,
            )?
            .affine(scheduler.init_noise_sigma(), 0.0)?;

        // 5. The denoising loop. Latents larger than a tile are denoised in overlapping
        // tiles whose noise predictions are blended (MultiDiffusion); the latents, the image
        // and the noise are whole-picture tensors, so the tiling never changes what is drawn.
        let total = scheduler.num_inference_steps();
        let tiling = match self.plan_within(width, height, guidance, budget)? {
            Some(plan) => plan.tiling,
            None => self.tiling,
        };
        let tiled =
            tiling.latent_tile > 0 && (height > tiling.latent_tile || width > tiling.latent_tile);
        for i in 0..total {
            let t = scheduler.timesteps()[i];
            let scaled = scheduler.scale_model_input(&latents, i)?;
            let unet_input = Tensor::cat(&[&scaled, &image], 1)?;
            let prediction = self.in_pool(|| {
                let _step = profile::phase(Phase::UnetStep);
                let mut predict = |x: &Tensor| -> Result<Tensor> {
                    self.guided_prediction(x, t, &embeddings, options)
                };
                if tiled {
                    run_tiled(
                        &unet_input,
                        &Self::unet_tiles(&tiling),
                        &mut predict,
                        &mut |_, _| ControlFlow::Continue(()),
                    )
                } else {
                    predict(&unet_input)
                }
            })?;
            let step_noise = if scheduler.needs_noise(i) {
                Some(rng.randn_tensor(latents.shape(), DType::F32, &self.device)?)
            } else {
                None
            };
            latents = scheduler
                .step(i, &prediction, &latents, step_noise.as_ref())?
                .prev_sample;
            let progress = StepProgress {
                step: i + 1,
                total,
                timestep: t,
            };
            if on_step(progress).is_break() {
                return Err(Error::Cancelled);
            }
        }

        // 6. Decode in f32 (in tiles when large) and map to [0, 1].
        let latents = latents.affine(1.0 / VAE_SCALING_FACTOR, 0.0)?;
        let decoded = self.in_pool(|| {
            let _decode = profile::phase(Phase::VaeDecode);
            self.vae
                .decode_tiled(&latents, &tiling.vae, &mut |_, _| ControlFlow::Continue(()))
        })?;
        Ok(decoded.affine(0.5, 0.5)?.clamp(0f32, 1f32)?)
    }

    /// The guided noise prediction for a batch of (latent ‖ image) tiles (B, 7, h, w): under
    /// guidance each tile is run unconditioned and conditioned (one UNet batch of 2B, the
    /// unconditioned half first, as the reference orders it) and combined.
    fn guided_prediction(
        &self,
        x: &Tensor,
        t: f64,
        embeddings: &Tensor,
        options: &DiffusionSettings,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        let guidance = options.guided();
        let copies = if guidance { 2 } else { 1 };
        let input = Tensor::cat(&vec![x; copies], 0)?.to_dtype(self.dtype)?;
        // embeddings is (copies, 77, d): repeat each row over the B tiles of its half.
        let (_, seq, dim) = embeddings.dims3()?;
        let context = embeddings
            .unsqueeze(1)?
            .broadcast_as((copies, b, seq, dim))?
            .reshape((copies * b, seq, dim))?;
        let class_labels = Tensor::new(vec![options.noise_level; copies * b], &self.device)?;
        let prediction = self
            .unet
            .forward(&input, t, &context, &class_labels)?
            .to_dtype(DType::F32)?;
        if !guidance {
            return Ok(prediction);
        }
        let uncond = prediction.narrow(0, 0, b)?;
        let cond = prediction.narrow(0, b, b)?;
        Ok((&uncond + (cond - &uncond)?.affine(options.guidance_scale, 0.0)?)?)
    }

    /// The text encoder's last hidden state for each prompt, (prompts, 77, hidden) in the model
    /// dtype: one encoder run over all of them (diffusers runs one per prompt; the rows do
    /// not interact), or none when they are the last ones encoded.
    fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        self.prompts.get_or_encode(prompts, || {
            let mut ids = Vec::new();
            for prompt in prompts {
                ids.extend(self.tokenizer.encode(prompt)?);
            }
            let ids = Tensor::new(ids.as_slice(), &self.device)?
                .reshape((prompts.len(), self.tokenizer.max_length()))?;
            let _encode = profile::phase(Phase::TextEncoder);
            Ok(self.text_encoder.forward(&ids)?.to_dtype(self.dtype)?)
        })
    }
}

/// The checks that span two config files: the tokenizer's length within the text encoder's
/// positions, and `max_noise_level` (model_index.json) within the low-res scheduler's
/// training timesteps and the UNet's class embeddings (the noise level indexes both).
fn check_cross_config(
    model: &ModelDir,
    tokenizer: &ClipTokenizer,
    text_config: &ClipTextConfig,
    unet_config: &UNet2DConditionConfig,
    low_res_schedule: &NoiseSchedule,
) -> Result<()> {
    let positions = text_config.max_position_embeddings;
    if tokenizer.max_length() > positions {
        return Err(Error::Config {
            path: model.component("tokenizer")?.join("tokenizer_config.json"),
            message: format!(
                "`model_max_length` {} is more than the text encoder's max_position_embeddings                  {positions}; expected at most {positions}",
                tokenizer.max_length()
            ),
        });
    }
    let max = model.index().max_noise_level.unwrap_or(350) as usize;
    let mut limits = vec![(
        low_res_schedule.len(),
        "low_res_scheduler's num_train_timesteps",
    )];
    if let Some(classes) = unet_config.num_class_embeds {
        limits.push((classes, "UNet's num_class_embeds"));
    }
    for (limit, what) in limits {
        if max >= limit {
            return Err(Error::Config {
                path: model.root().join("model_index.json"),
                message: format!(
                    "`max_noise_level` {max} must be below the {what} ({limit}); expected                      0..={}",
                    limit - 1
                ),
            });
        }
    }
    Ok(())
}

impl Upscaler for UpscalePipeline {
    fn engine(&self) -> Engine {
        Engine::Diffusion
    }

    fn scale(&self) -> usize {
        self.vae_scale_factor
    }

    fn describe(&self) -> String {
        format!("latent-diffusion x{} upscaler", self.vae_scale_factor)
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn memory_estimate(
        &self,
        width: usize,
        height: usize,
        params: &UpscaleParams,
    ) -> Result<Option<PlannedMemory>> {
        let budget = params.max_memory.or(self.max_memory);
        let guided = self.settings_of(params).guided();
        Ok(self
            .plan_within(width, height, guided, budget)?
            .zip(budget)
            .map(|(plan, budget)| PlannedMemory {
                peak_bytes: plan.estimate.peak(),
                budget_bytes: budget,
                description: plan.describe(budget),
            }))
    }

    fn check_params(&self, params: &UpscaleParams) -> Result<()> {
        params.validate()?;
        self.check_settings(self.settings_of(params))
    }

    fn upscale(&self, request: UpscaleRequest<'_>) -> Result<RgbF32> {
        if !request.params.is_single_pass() {
            return PlannedUpscaler::new(self, None, ScalePlan::Auto).upscale(request);
        }
        let params = request.params;
        let budget = params.max_memory.or(self.max_memory);
        let out = self.upscale_rgb8(
            request.image,
            self.settings_of(params),
            budget,
            request.on_step,
        )?;
        RgbF32::from_tensor(&out)
    }
}
