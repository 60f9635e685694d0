//! Running a GAN model over an image: reflect pre-padding, overlapping tiles sized from the
//! memory budget ([`super::memory_plan`], which also refuses what the budget cannot hold) and
//! blended without seams (the shared [`crate::tiling`] routine), f16 on GPUs. Follows
//! Real-ESRGAN's `RealESRGANer` (pre_pad, tile, tile_pad), with blending added. Images are
//! blended straight into the result's host buffer, so the output is held once; or, when the
//! caller takes rows and the output does not fit the budget, band by band with each finished
//! row handed on ([`Upscaler::upscale_rows`]), so it is never held whole.

use std::ops::ControlFlow;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::arch::{GanArch, GanNetwork, InputPadding};
use super::memory_plan::{plan_gan_memory, Budget, Finish, GanFootprint, GanMemoryPlan};
use super::model::GanModel;
use crate::color_fix::ColorFix;
use crate::error::{Error, Result};
use crate::image_io::{Rgb8, RgbF32};
use crate::profile::{self, Phase};
use crate::scale_plan::{PlannedUpscaler, ScalePlan};
use crate::threads;
use crate::tiling::{
    exact_overlap, plan_tiles, run_tiled, run_tiled_interleaved, run_tiled_rows, Interleaved,
    TileOptions,
};
use crate::upscaler::{
    Engine, OnRow, OnStep, PlannedMemory, StepProgress, Streaming, UpscaleParams, UpscaleRequest,
    Upscaler,
};

/// How a GAN model is run.
#[derive(Debug, Clone)]
pub struct GanOptions {
    pub device: Device,
    /// `None`: f16 on CUDA and Metal, f32 on the CPU.
    pub dtype: Option<DType>,
    /// Tile edge in input pixels; `None` chooses it from `max_memory`; `Some(0)` runs the
    /// whole image at once.
    pub tile: Option<usize>,
    /// Memory budget in bytes for a whole run: the weights, the input, one tile's activations,
    /// the output image and writing it ([`super::memory_plan`]); `None`: see
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
    budget: Budget,
    weight_bytes: u64,
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
            budget: Budget {
                bytes: options
                    .max_memory
                    .unwrap_or_else(|| crate::memory::default_budget(&options.device)),
                given: options.max_memory.is_some(),
            },
            weight_bytes: model
                .weights()
                .values()
                .map(|t| (t.elem_count() * dtype.size_in_bytes()) as u64)
                .sum(),
            pre_pad: options.pre_pad,
            threads: options.threads.clone(),
        })
    }

    pub fn arch(&self) -> &GanArch {
        &self.arch
    }

    /// The tile edge used for a `width` × `height` input (0: the whole image in one go); the
    /// smallest automatic tile when the budget cannot hold the run ([`Self::memory_plan`]
    /// says why).
    pub fn tile_for(&self, width: usize, height: usize) -> usize {
        match self.plan_within(
            width,
            height,
            self.budget,
            Finish::default(),
            Streaming::Off,
        ) {
            Ok(plan) => plan.tile,
            Err(_) => self.tile.unwrap_or_else(|| self.footprint().min_tile()),
        }
    }

    /// The tiles and estimated peak memory of a `width` × `height` input under the engine's
    /// budget, or why the budget cannot hold it (naming `--max-memory` or `--tile` and the
    /// size that would do).
    pub fn memory_plan(&self, width: usize, height: usize) -> Result<GanMemoryPlan> {
        self.plan_within(
            width,
            height,
            self.budget,
            Finish::default(),
            Streaming::Off,
        )
    }

    /// [`Self::memory_plan`] for a caller that takes the output in rows (`stream`): the plan
    /// says whether the output is streamed ([`GanMemoryPlan::streamed`]).
    pub fn memory_plan_streaming(
        &self,
        width: usize,
        height: usize,
        stream: Streaming,
    ) -> Result<GanMemoryPlan> {
        self.plan_within(width, height, self.budget, Finish::default(), stream)
    }

    /// What planning needs of the model and options.
    fn footprint(&self) -> GanFootprint {
        let s = self.arch.scale() as u64;
        // The network's activations, the tile's f32 input copy and its f32 output read back,
        // and while it is blended two more output-sized f32 copies: the weighted product and
        // its interleaved copy (measured: without them a streamed run, where nothing else
        // hides them, peaked above its estimate).
        let tile_bytes_per_pixel =
            self.arch.bytes_per_input_pixel(self.dtype) as u64 + 12 + 3 * 12 * s * s;
        GanFootprint {
            model: self.arch.describe(),
            weights: self.weight_bytes,
            tile_bytes_per_pixel,
            scale: self.arch.scale(),
            input_multiple: self.arch.input_multiple(),
            overlap: exact_overlap(self.arch.context_radius()),
            pre_pad: self.pre_pad,
            shared_memory: self.device.is_cpu(),
        }
    }

    fn plan_within(
        &self,
        width: usize,
        height: usize,
        budget: Budget,
        finish: Finish,
        stream: Streaming,
    ) -> Result<GanMemoryPlan> {
        if width == 0 || height == 0 {
            return Err(Error::option(
                "image",
                format!("cannot upscale an empty {width}x{height} image"),
            ));
        }
        if let Some(tile) = self.tile {
            self.check_tile(tile)?;
        }
        plan_gan_memory(
            &self.footprint(),
            width,
            height,
            self.tile,
            budget,
            finish,
            stream,
        )
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

    /// Tiling for an input of this size under `budget`, its output held.
    fn tile_options(&self, width: usize, height: usize, budget: Budget) -> Result<TileOptions> {
        let plan = self.plan_within(width, height, budget, Finish::default(), Streaming::Off)?;
        Ok(self.tiling(plan.tile))
    }

    /// Tiling in tiles of edge `tile` (0: the whole image).
    fn tiling(&self, tile: usize) -> TileOptions {
        let overlap = exact_overlap(self.arch.context_radius());
        TileOptions {
            tile,
            // Wide enough that every kept pixel saw its full context (exact for SRVGG).
            overlap,
            scale: self.arch.scale(),
            align: self.align(tile),
            pad: self.pre_pad,
            batch: 1,
        }
    }

    /// The multiple tiles start on and the padded image is brought to: the network's input
    /// multiple, except for a whole-image run of a network that pads inside its own forward
    /// (Real-CUGAN), which then sees the image exactly as its reference does.
    fn align(&self, tile: usize) -> usize {
        let size = self.arch.input_size();
        if tile == 0 && size.padding == InputPadding::Inside {
            1
        } else {
            size.multiple
        }
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
    /// model's own factor. A budget that cannot hold the run is refused before any work.
    pub fn upscale_image(&self, image: &Rgb8, on_step: OnStep<'_>) -> Result<RgbF32> {
        self.upscale_rgb8(image, self.budget, on_step)
    }

    fn upscale_rgb8(&self, image: &Rgb8, budget: Budget, on_step: OnStep<'_>) -> Result<RgbF32> {
        image.check()?;
        let (width, height) = image.size();
        // Refused here, before the input's tensors and the output are allocated.
        let options = self.tile_options(width, height, budget)?;
        let input = image.to_tensor(&self.device)?;
        let mut on_tile = |done, total| {
            on_step(StepProgress {
                step: done,
                total,
                timestep: 0.0,
            })
        };
        let input = self.network_input(&input)?;
        let Interleaved {
            mut data,
            width,
            height,
            ..
        } = run_tiled_interleaved(&input, &options, &mut self.tile_fn(), &mut on_tile)?;
        drop(input);
        // Clamped in place: the blended buffer is the result, with no copy.
        for v in &mut data {
            *v = v.clamp(0.0, 1.0);
        }
        Ok(RgbF32 {
            data,
            width,
            height,
        })
    }

    /// Upscales an 8-bit RGB image by the model's factor in tiles of `tile`, band by band,
    /// handing each finished output row (clamped to [0, 1]) to `on_row`: the rows of
    /// [`Self::upscale_image`]'s result with the same tiles, bit for bit, without holding it.
    fn stream_rgb8(
        &self,
        image: &Rgb8,
        tile: usize,
        on_step: OnStep<'_>,
        on_row: OnRow<'_>,
    ) -> Result<(usize, usize)> {
        image.check()?;
        let input = self.network_input(&image.to_tensor(&self.device)?)?;
        let mut on_tile = |done, total| {
            on_step(StepProgress {
                step: done,
                total,
                timestep: 0.0,
            })
        };
        let (width, height, _) = run_tiled_rows(
            &input,
            &self.tiling(tile),
            &mut self.tile_fn(),
            &mut on_tile,
            &mut |row: &mut [f32]| {
                for v in row.iter_mut() {
                    *v = v.clamp(0.0, 1.0);
                }
                on_row(row)
            },
        )?;
        Ok((width, height))
    }

    /// What follows the tiles for `params` at a `width` × `height` input.
    fn finish_of(&self, width: usize, height: usize, params: &UpscaleParams) -> Result<Finish> {
        let native = (width * self.scale(), height * self.scale());
        let target = params.size.resolve(width, height, self.scale())?;
        Ok(Finish {
            target: (target != native).then_some(target),
            color_fix: params.color_fix != ColorFix::None,
        })
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
        let (_, _, h, w) = image.dims4()?;
        let options = self.tile_options(w, h, self.budget)?;
        let input = self.network_input(image)?;
        let out = run_tiled(&input, &options, &mut self.tile_fn(), on_tile)?;
        Ok(out.clamp(0f32, 1f32)?)
    }

    /// The tensor the tiles are cut from: one RGB image, f32, on the model's device; its luma
    /// for a grey model.
    fn network_input(&self, image: &Tensor) -> Result<Tensor> {
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
        if self.arch.in_channels() == 1 {
            let weights = Tensor::new(&[0.299f32, 0.587, 0.114], &self.device)?;
            return Ok(image
                .broadcast_mul(&weights.reshape((1, 3, 1, 1))?)?
                .sum_keepdim(1)?);
        }
        Ok(image)
    }

    /// The network over a batch of tiles, in the engine's pool; a grey model's output is
    /// repeated over R, G and B tile by tile, so the blended result is always RGB.
    fn tile_fn(&self) -> impl FnMut(&Tensor) -> Result<Tensor> + '_ {
        let (dtype, network, pool) = (self.dtype, &self.network, self.threads.as_deref());
        let grey = self.arch.out_channels() == 1;
        move |tile: &Tensor| {
            let out = threads::install(pool, || {
                let _network = profile::phase(Phase::GanNetwork);
                network.forward(&tile.to_dtype(dtype)?)
            })?;
            Ok(if grey { out.repeat((1, 3, 1, 1))? } else { out })
        }
    }

    /// The budget a request runs under: its own, else the engine's.
    fn budget_of(&self, params: &UpscaleParams) -> Budget {
        params
            .max_memory
            .map_or(self.budget, |bytes| Budget { bytes, given: true })
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

    /// The tiles and estimated peak of a `width` × `height` input, its output resampled to
    /// `params.size` and colour-fixed as asked; an error naming `--max-memory` (or `--tile`) and
    /// the size that would do when the budget cannot hold it.
    fn memory_estimate(
        &self,
        width: usize,
        height: usize,
        params: &UpscaleParams,
    ) -> Result<Option<PlannedMemory>> {
        let budget = self.budget_of(params);
        let finish = self.finish_of(width, height, params)?;
        let plan = self.plan_within(width, height, budget, finish, params.stream)?;
        Ok(Some(PlannedMemory {
            peak_bytes: plan.estimate.peak(),
            budget_bytes: budget.bytes,
            description: plan.describe(budget.bytes),
        }))
    }

    /// Whether the plan streams: `params.stream` allows it, one pass at the model's factor
    /// with no colour fix, and the whole output does not fit the budget (or
    /// [`Streaming::Always`]).
    fn streams_output(&self, width: usize, height: usize, params: &UpscaleParams) -> Result<bool> {
        let budget = self.budget_of(params);
        let finish = self.finish_of(width, height, params)?;
        let plan = self.plan_within(width, height, budget, finish, params.stream)?;
        Ok(plan.streamed.is_some())
    }

    fn upscale_rows(
        &self,
        request: UpscaleRequest<'_>,
        on_row: OnRow<'_>,
    ) -> Result<(usize, usize)> {
        let params = request.params;
        if let Some(settings) = &params.settings {
            return Err(settings.mismatch(Engine::Gan));
        }
        let (width, height) = request.image.size();
        let budget = self.budget_of(params);
        let finish = self.finish_of(width, height, params)?;
        // Planned before any work: refused here when it cannot fit either way.
        let plan = self.plan_within(width, height, budget, finish, params.stream)?;
        match plan.streamed {
            Some(_) => self.stream_rgb8(request.image, plan.tile, request.on_step, on_row),
            None => {
                let result = self.upscale(request)?;
                for row in result.data.chunks_exact(result.width * 3) {
                    on_row(row)?;
                }
                Ok(result.size())
            }
        }
    }

    fn upscale(&self, request: UpscaleRequest<'_>) -> Result<RgbF32> {
        let params = request.params;
        if let Some(settings) = &params.settings {
            return Err(settings.mismatch(Engine::Gan));
        }
        if !params.is_single_pass() {
            return PlannedUpscaler::new(self, None, ScalePlan::Auto).upscale(request);
        }
        self.upscale_rgb8(request.image, self.budget_of(params), request.on_step)
    }
}
