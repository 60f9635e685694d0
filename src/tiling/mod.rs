//! The one shared tiling routine: an image is cut into equal, overlapping tiles, a function runs
//! on batches of them, and the outputs are blended back into one (possibly larger) image.
//!
//! Used by the GAN upscaler (a Real-ESRGAN network per tile), and meant for the VAE decode
//! (scale 8) and tiled latent denoising (scale 1). References: Real-ESRGAN's `tile_process`
//! (`tile_pad` context discarded around each tile, `pre_pad` reflect padding cropped after),
//! stable-diffusion.cpp's `sd_tiling` (equal-sized tiles, the last one ending at the image edge)
//! and MultiDiffusion (overlaps averaged with weights). [`context_margin`] states the weighting
//! rule and [`exact_overlap`] the overlap at which the tiled result equals the untiled one.

mod accumulate;
mod bands;
mod blend;
mod pad;
mod plan;

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};

pub use accumulate::Interleaved;
use accumulate::{Blend, InterleavedBlend, TensorBlend};
pub use bands::{run_tiled_rows, OnOutputRow};
pub use blend::{context_margin, exact_overlap};
pub use pad::reflect_pad;
pub use plan::{plan_tiles, Tile, TilePlan};

use crate::error::{Error, Result};

/// How to tile; [`Default`] runs the whole image at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile edge in input pixels, context included (clamped to the image). 0 = one tile (no tiling).
    pub tile: usize,
    /// Minimum overlap between neighbouring tiles, in input pixels. With an operator of receptive
    /// radius `r`, an overlap of [`exact_overlap`]`(r)` (about `8r/3`) makes tiling exact.
    pub overlap: usize,
    /// Output pixels per input pixel (1 for latent-space denoising, 4 for an x4 model, 8 for a VAE decode).
    pub scale: usize,
    /// Tile sides (and the padded image) are made multiples of this (pixel-unshuffle models need 2 or 4; a VAE 1).
    pub align: usize,
    /// Reflect padding added around the whole image before tiling and cropped after (Real-ESRGAN's pre_pad), input pixels.
    pub pad: usize,
    /// How many tiles go through `f` at once (stacked on the batch dimension); the last batch
    /// may be smaller.
    pub batch: usize,
}

impl Default for TileOptions {
    fn default() -> Self {
        Self {
            tile: 0,
            overlap: 0,
            scale: 1,
            align: 1,
            pad: 0,
            batch: 1,
        }
    }
}

/// Runs `f` over the tiles of `image` `(1, C, H, W)` and blends the results into an f32 tensor
/// `(1, C_out, H * scale, W * scale)` on the image's device.
///
/// `f` maps `(B, C, th, tw)` tiles (in the image's dtype) to `(B, C_out, th * scale, tw * scale)`
/// in any float dtype. `on_tile(done, total)` is called after each batch; `Break` stops the run
/// with [`Error::Cancelled`]. When one tile covers the padded image, `f` runs once on the whole
/// padded image, and with no padding the result is exactly `f(image)` (cast to f32).
///
/// Memory: the padded image, the f32 output accumulator (padded size) and its cropped copy, plus
/// one batch of tiles and their outputs.
pub fn run_tiled(
    image: &Tensor,
    options: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Tensor> {
    drive::<TensorBlend>(image, options, f, on_tile)
}

/// [`run_tiled`], blending into host memory in an image's layout instead: the result is
/// `(H * scale) x (W * scale)` pixels of `C_out` interleaved f32 values, the same numbers as
/// [`run_tiled`] gives.
///
/// Memory: the padded image, one f32 output buffer (padded size, allocated fallibly: a size the
/// system cannot give is an error, not an abort), cropped in place, and one batch of tiles and
/// their outputs. What an image-sized result needs, without a tensor-to-image copy after.
pub fn run_tiled_interleaved(
    image: &Tensor,
    options: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Interleaved> {
    drive::<InterleavedBlend>(image, options, f, on_tile)
}

/// The tiles of an image, ready to run: the plan, the padded image they are cut from, and the
/// checks every driver makes of `f`'s outputs.
struct Prepared {
    plan: TilePlan,
    padded: Tensor,
    /// Output tile width and height.
    out_width: usize,
    out_height: usize,
}

impl Prepared {
    fn new(image: &Tensor, options: &TileOptions) -> Result<Self> {
        let (n, _, height, width) = image.dims4()?;
        if n != 1 {
            return Err(Error::option(
                "image",
                format!(
                    "tiling takes one image (1, C, H, W), got shape {:?}",
                    image.dims()
                ),
            ));
        }
        let plan = plan_tiles(width, height, options)?;
        let (top, bottom, left, right) = plan.padding();
        // Two steps, as Real-ESRGAN: the pre-padding on all sides, then the alignment padding
        // mirrors the pre-padded image at the bottom and right. One expression, so the first
        // step's image is freed before the tiles run.
        let padded = reflect_pad(
            &reflect_pad(image, top, top, left, left)?,
            0,
            bottom - top,
            0,
            right - left,
        )?;
        let (tile_width, tile_height) = plan.tile_size();
        Ok(Self {
            out_width: tile_width * options.scale,
            out_height: tile_height * options.scale,
            plan,
            padded,
        })
    }

    /// The channel count of `f`'s output `y` for `count` tiles, or why it has the wrong shape.
    fn check(&self, y: &Tensor, count: usize) -> Result<usize> {
        let (out_width, out_height) = (self.out_width, self.out_height);
        match y.dims() {
            &[b, c, h, w] if b == count && h == out_height && w == out_width => Ok(c),
            dims => Err(candle_core::Error::Msg(format!(
                "tiled function returned {dims:?} for {count} tiles, expected ({count}, C, \
                 {out_height}, {out_width})"
            ))
            .into()),
        }
    }

    /// The tiles of `chunk` cut from the padded image and stacked on the batch dimension.
    fn batch(&self, chunk: &[Tile]) -> Result<Tensor> {
        let inputs = chunk
            .iter()
            .map(|t| {
                self.padded
                    .narrow(2, t.y, t.height)?
                    .narrow(3, t.x, t.width)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&inputs, 0)?)
    }
}

/// Reports `done` of `total` tiles; `Break` becomes [`Error::Cancelled`].
fn progress(
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    done: usize,
    total: usize,
) -> Result<()> {
    match on_tile(done, total) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(Error::Cancelled),
    }
}

/// The shared driver: plan, pad, run `f` batch by batch and hand the outputs to a blend.
fn drive<B: Blend>(
    image: &Tensor,
    options: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<B::Output> {
    let prepared = Prepared::new(image, options)?;
    let total = prepared.plan.len();
    if total == 1 {
        // One tile is the whole padded image: no copy, no blend, nothing to normalise.
        let y = f(&prepared.padded)?;
        prepared.check(&y, 1)?;
        let Prepared { plan, padded, .. } = prepared;
        drop(padded);
        progress(on_tile, 1, total)?;
        return B::whole(&y, &plan);
    }
    let plan = &prepared.plan;
    let scale = options.scale;
    let (tile_width, tile_height) = plan.tile_size();

    let rows = blend::axis_weights(&plan.ys, tile_height, scale)?;
    let columns = blend::axis_weights(&plan.xs, tile_width, scale)?;
    let mut blend: Option<B> = None;
    let indexed: Vec<(usize, &Tile)> = plan.tiles().iter().enumerate().collect();
    let mut done = 0;
    for chunk in indexed.chunks(options.batch) {
        let tiles: Vec<Tile> = chunk.iter().map(|&(_, &t)| t).collect();
        let x = prepared.batch(&tiles)?;
        let y = f(&x)?;
        drop(x);
        let channels = prepared.check(&y, chunk.len())?;
        let y = y.to_dtype(DType::F32)?;
        let blend = match &mut blend {
            Some(blend) => blend,
            None => blend.insert(B::new(plan, &rows, &columns, channels, image.device())?),
        };
        if blend.channels() != channels {
            return Err(candle_core::Error::Msg(format!(
                "tiled function returned {channels} channels, earlier {}",
                blend.channels()
            ))
            .into());
        }
        for (b, &(index, tile)) in chunk.iter().enumerate() {
            let (column, row) = (index % plan.xs.len(), index / plan.xs.len());
            blend.add(&y.get(b)?, row, column, tile)?;
        }
        done += chunk.len();
        progress(on_tile, done, total)?;
    }
    blend
        .ok_or_else(|| Error::option("tile", "no tiles to run"))?
        .finish()
}
