//! Running a GAN model over an image: reflect pre-padding, overlapping tiles sized from the
//! memory budget and blended without seams (the shared [`crate::tiling`] routine), f16 on
//! GPUs. Follows Real-ESRGAN's `RealESRGANer` (pre_pad, tile, tile_pad), with blending added.

use std::ops::ControlFlow;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::arch::{GanArch, GanNetwork};
use super::model::GanModel;
use crate::error::{Error, Result};
use crate::image_io::{Rgb8, RgbF32};
use crate::profile::{self, Phase};
use crate::scale_plan::{PlannedUpscaler, ScalePlan};
use crate::threads;
use crate::tiling::{exact_overlap, plan_tiles, run_tiled, TileOptions};
use crate::upscaler::{Engine, OnStep, StepProgress, UpscaleParams, UpscaleRequest, Upscaler};

/// Smallest automatic tile edge: below it the overlap dominates the work.
const MIN_AUTO_TILE: usize = 64;
/// Largest automatic tile edge: beyond it the CPU gains nothing and a GPU little.
const MAX_AUTO_TILE: usize = 512;

/// How a GAN model is run.
#[derive(Debug, Clone)]
pub struct GanOptions {
    pub device: Device,
    /// `None`: f16 on CUDA and Metal, f32 on the CPU.
    pub dtype: Option<DType>,
    /// Tile edge in input pixels; `None` chooses it from `max_memory`; `Some(0)` runs the
    /// whole image at once.
    pub tile: Option<usize>,
    /// Working-memory budget in bytes for the activations; `None`: see
    /// [`crate::memory::default_budget`].
    pub max_memory: Option<u64>,
    /// Reflect padding around the image, in input pixels (Real-ESRGAN's `pre_pad`), so the
    /// borders see plausible context instead of zeros.
    pub pre_pad: usize,
    /// The thread pool the CPU work runs in ([`crate::threads::pool`]); `None`: rayon's global
    /// pool.
    pub threads: Option<Arc<rayon::ThreadPool>>,
}

impl Default for GanOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            tile: None,
            max_memory: None,
            pre_pad: 10,
            threads: None,
        }
    }
}

/// A loaded GAN model, upscaling many images.
pub struct GanUpscaler {
    arch: GanArch,
    network: GanNetwork,
    name: String,
    device: Device,
    dtype: DType,
    tile: Option<usize>,
    budget: u64,
    pre_pad: usize,
    threads: Option<Arc<rayon::ThreadPool>>,
}

impl GanUpscaler {
    /// Builds the network of `model` on the options' device.
    pub fn new(model: &GanModel, options: &GanOptions) -> Result<Self> {
        let arch = model.arch().clone();
        if !matches!(arch.in_channels(), 1 | 3) || arch.in_channels() != arch.out_channels() {
            return Err(Error::Weights {
                path: model.source().to_path_buf(),
                message: format!(
                    "{}: only 3-channel (RGB) or 1-channel (grey) models are run",
                    arch.describe()
                ),
            });
        }
        let dtype = options.dtype.unwrap_or(match options.device {
            Device::Cpu => DType::F32,
            _ => DType::F16,
        });
        let network = threads::install(options.threads.as_deref(), || {
            GanNetwork::new(
                &arch,
                model.weights(),
                dtype,
                &options.device,
                model.source(),
            )
        })?;
        Ok(Self {
            name: model
                .source()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            arch,
            network,
            device: options.device.clone(),
            dtype,
            tile: options.tile,
            budget: options
                .max_memory
                .unwrap_or_else(|| crate::memory::default_budget(&options.device)),
            pre_pad: options.pre_pad,
            threads: options.threads.clone(),
        })
    }

    pub fn arch(&self) -> &GanArch {
        &self.arch
    }

    /// The tile edge used for a `width` × `height` input (0: the whole image in one go).
    pub fn tile_for(&self, width: usize, height: usize) -> usize {
        self.tile_within(width, height, self.budget)
    }

    /// The tile edge for an input of this size under `budget` bytes.
    fn tile_within(&self, width: usize, height: usize, budget: u64) -> usize {
        if let Some(tile) = self.tile {
            return tile;
        }
        let per_pixel = self.arch.bytes_per_input_pixel(self.dtype) as u64;
        let padded = (width + 2 * self.pre_pad) as u64 * (height + 2 * self.pre_pad) as u64;
        if padded * per_pixel <= budget && width.max(height) <= MAX_AUTO_TILE {
            return 0;
        }
        let edge = ((budget / per_pixel.max(1)) as f64).sqrt() as usize;
        let align = 8 * self.arch.input_multiple();
        (edge / align * align).clamp(MIN_AUTO_TILE, MAX_AUTO_TILE)
    }

    /// Tiling for an input of this size under `budget` bytes.
    fn tile_options(&self, width: usize, height: usize, budget: u64) -> Result<TileOptions> {
        let overlap = exact_overlap(self.arch.context_radius());
        let tile = self.tile_within(width, height, budget);
        self.check_tile(tile)?;
        Ok(TileOptions {
            tile,
            // Wide enough that every kept pixel saw its full context (exact for SRVGG).
            overlap,
            scale: self.arch.scale(),
            align: self.arch.input_multiple(),
            pad: self.pre_pad,
            batch: 1,
        })
    }

    /// Refuses a tile edge too small for the network's overlap (0, no tiling, is fine).
    fn check_tile(&self, tile: usize) -> Result<()> {
        let overlap = exact_overlap(self.arch.context_radius());
        if tile > 0 && tile < 2 * overlap {
            return Err(Error::option(
                "tile",
                format!(
                    "{tile} is too small for {}: its tiles overlap by {overlap} pixels; use at \
                     least {} (or 0 for no tiling)",
                    self.arch.describe(),
                    2 * overlap
                ),
            ));
        }
        Ok(())
    }

    /// How many tiles an input of this size is cut into.
    pub fn tile_count(&self, width: usize, height: usize) -> Result<usize> {
        Ok(plan_tiles(
            width,
            height,
            &self.tile_options(width, height, self.budget)?,
        )?
        .len())
    }

    /// Upscales an 8-bit RGB image by the model's factor: one pass, tiled as the budget says.
    /// `on_step` runs after each tile and may cancel. The same as [`Upscaler::upscale`] at the
    /// model's own factor.
    pub fn upscale_image(&self, image: &Rgb8, on_step: OnStep<'_>) -> Result<RgbF32> {
        self.upscale_rgb8(image, self.budget, on_step)
    }

    fn upscale_rgb8(&self, image: &Rgb8, budget: u64, on_step: OnStep<'_>) -> Result<RgbF32> {
        let input = image.to_tensor(&self.device)?;
        let out = self.run(&input, budget, &mut |done, total| {
            on_step(StepProgress {
                step: done,
                total,
                timestep: 0.0,
            })
        })?;
        RgbF32::from_tensor(&out)
    }

    /// Upscales a (1, 3, h, w) image in [0, 1] by the model's factor; result clamped to
    /// [0, 1], f32, on the model's device. `on_tile(done, total)` may cancel. The tensor-level
    /// entry point (float inputs, parity tests); images go through [`Self::upscale_image`] or
    /// [`Upscaler::upscale`].
    pub fn upscale_tensor(
        &self,
        image: &Tensor,
        on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Tensor> {
        self.run(image, self.budget, on_tile)
    }

    fn run(
        &self,
        image: &Tensor,
        budget: u64,
        on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Tensor> {
        let (n, c, h, w) = image.dims4()?;
        if n != 1 || c != 3 || h == 0 || w == 0 {
            return Err(Error::option(
                "image",
                format!(
                    "expected one RGB image (1, 3, h, w), got {:?}",
                    image.dims()
                ),
            ));
        }
        let image = image.to_device(&self.device)?.to_dtype(DType::F32)?;
        // Grey models see the luma and their output is repeated over R, G and B.
        let input = if self.arch.in_channels() == 1 {
            let weights = Tensor::new(&[0.299f32, 0.587, 0.114], &self.device)?;
            image
                .broadcast_mul(&weights.reshape((1, 3, 1, 1))?)?
                .sum_keepdim(1)?
        } else {
            image
        };
        let options = self.tile_options(w, h, budget)?;
        let dtype = self.dtype;
        let network = &self.network;
        let pool = self.threads.as_deref();
        let out = run_tiled(
            &input,
            &options,
            &mut |tile: &Tensor| {
                threads::install(pool, || {
                    let _network = profile::phase(Phase::GanNetwork);
                    network.forward(&tile.to_dtype(dtype)?)
                })
            },
            on_tile,
        )?;
        let out = if self.arch.out_channels() == 1 {
            out.repeat((1, 3, 1, 1))?
        } else {
            out
        };
        Ok(out.to_dtype(DType::F32)?.clamp(0f32, 1f32)?)
    }
}

impl Upscaler for GanUpscaler {
    fn engine(&self) -> Engine {
        Engine::Gan
    }

    fn scale(&self) -> usize {
        self.arch.scale()
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.name, self.arch.describe())
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// The model-free checks and a fixed `tile` against the network's overlap.
    fn check_params(&self, params: &UpscaleParams) -> Result<()> {
        if let Some(settings) = &params.settings {
            return Err(settings.mismatch(Engine::Gan));
        }
        params.validate()?;
        self.tile.map_or(Ok(()), |tile| self.check_tile(tile))
    }

    fn upscale(&self, request: UpscaleRequest<'_>) -> Result<RgbF32> {
        let params = request.params;
        if let Some(settings) = &params.settings {
            return Err(settings.mismatch(Engine::Gan));
        }
        if !params.is_single_pass() {
            return PlannedUpscaler::new(self, None, ScalePlan::Auto).upscale(request);
        }
        let budget = params.max_memory.unwrap_or(self.budget);
        self.upscale_rgb8(request.image, budget, request.on_step)
    }
}
