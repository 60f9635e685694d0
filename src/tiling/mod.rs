//! The one shared tiling routine: an image is cut into equal, overlapping tiles, a function runs
//! on batches of them, and the outputs are blended back into one (possibly larger) image.
//!
//! Used by the GAN upscaler (a Real-ESRGAN network per tile), and meant for the VAE decode
//! (scale 8) and tiled latent denoising (scale 1). References: Real-ESRGAN's `tile_process`
//! (`tile_pad` context discarded around each tile, `pre_pad` reflect padding cropped after),
//! stable-diffusion.cpp's `sd_tiling` (equal-sized tiles, the last one ending at the image edge)
//! and MultiDiffusion (overlaps averaged with weights). [`context_margin`] states the weighting
//! rule and [`exact_overlap`] the overlap at which the tiled result equals the untiled one.

mod blend;
mod pad;
mod plan;

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};

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
/// Memory: the f32 output accumulator plus one batch of tiles and their outputs.
pub fn run_tiled(
    image: &Tensor,
    options: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Tensor> {
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
    let scale = options.scale;
    let (top, bottom, left, right) = plan.padding();
    // Two steps, as Real-ESRGAN: the pre-padding on all sides, then the alignment padding
    // mirrors the pre-padded image at the bottom and right.
    let padded = reflect_pad(image, top, top, left, left)?;
    let padded = reflect_pad(&padded, 0, bottom - top, 0, right - left)?;
    let (tile_width, tile_height) = plan.tile_size();
    let (out_width, out_height) = (tile_width * scale, tile_height * scale);
    let total = plan.len();

    let check = |y: &Tensor, count: usize| -> Result<usize> {
        match y.dims() {
            &[b, c, h, w] if b == count && h == out_height && w == out_width => Ok(c),
            dims => Err(candle_core::Error::Msg(format!(
                "tiled function returned {dims:?} for {count} tiles, expected ({count}, C, \
                 {out_height}, {out_width})"
            ))
            .into()),
        }
    };
    let progress =
        |on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>, done| match on_tile(done, total)
        {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Cancelled),
        };

    if total == 1 {
        // One tile is the whole padded image: no copy, no blend, nothing to normalise.
        let y = f(&padded)?;
        check(&y, 1)?;
        progress(on_tile, 1)?;
        let y = y.to_dtype(DType::F32)?;
        return crop(&y, &plan, scale);
    }

    let wxs = blend::axis_weights(&plan.xs, tile_width, scale)?;
    let wys = blend::axis_weights(&plan.ys, tile_height, scale)?;
    let device = image.device();
    // Weights shaped to broadcast over the (rows, C, columns) layout of a tile below.
    let to_tensor = |w: &Vec<f32>, shape: (usize, usize, usize)| -> Result<Tensor> {
        Ok(Tensor::from_slice(w, shape, device)?)
    };
    let wxs: Vec<Tensor> = wxs
        .iter()
        .map(|w| to_tensor(w, (1, 1, out_width)))
        .collect::<Result<_>>()?;
    let wys: Vec<Tensor> = wys
        .iter()
        .map(|w| to_tensor(w, (out_height, 1, 1)))
        .collect::<Result<_>>()?;

    // The accumulator is laid out (rows, C, columns): then the rows of one tile form a
    // contiguous block, and `slice_set` writes a tile's window back in place with one strided
    // copy (candle has no in-place add into a 2-D window of an (C, H, W) tensor).
    let (padded_width, padded_height) = plan.padded_size();
    let mut acc: Option<Tensor> = None;
    let indexed: Vec<(usize, &Tile)> = plan.tiles().iter().enumerate().collect();
    let mut done = 0;
    for chunk in indexed.chunks(options.batch) {
        let inputs = chunk
            .iter()
            .map(|(_, t)| padded.narrow(2, t.y, t.height)?.narrow(3, t.x, t.width))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = Tensor::cat(&inputs, 0)?;
        drop(inputs);
        let y = f(&x)?;
        drop(x);
        let channels = check(&y, chunk.len())?;
        let y = y.to_dtype(DType::F32)?;
        let acc = match &acc {
            Some(acc) => acc,
            None => acc.insert(Tensor::zeros(
                (padded_height * scale, channels, padded_width * scale),
                DType::F32,
                device,
            )?),
        };
        if acc.dim(1)? != channels {
            return Err(candle_core::Error::Msg(format!(
                "tiled function returned {channels} channels, earlier {}",
                acc.dim(1)?
            ))
            .into());
        }
        for (b, &(index, tile)) in chunk.iter().enumerate() {
            let (column, row) = (index % plan.xs.len(), index / plan.xs.len());
            let weighted = y
                .get(b)?
                .permute((1, 0, 2))?
                .broadcast_mul(&wys[row])?
                .broadcast_mul(&wxs[column])?;
            let rows = acc.narrow(0, tile.y * scale, out_height)?;
            let sum = rows.narrow(2, tile.x * scale, out_width)?.add(&weighted)?;
            rows.slice_set(&sum, 2, tile.x * scale)?;
        }
        done += chunk.len();
        progress(on_tile, done)?;
    }
    let acc = acc.ok_or_else(|| Error::option("tile", "no tiles to run"))?;
    crop(&acc.permute((1, 0, 2))?.unsqueeze(0)?, &plan, scale)
}

/// Cuts the padding (times the scale) off a `(1, C, H, W)` output; contiguous result.
fn crop(output: &Tensor, plan: &TilePlan, scale: usize) -> Result<Tensor> {
    let (top, _, left, _) = plan.padding();
    let (width, height) = plan.output_size();
    let output = output
        .narrow(2, top * scale, height)?
        .narrow(3, left * scale, width)?;
    Ok(output.contiguous()?)
}
