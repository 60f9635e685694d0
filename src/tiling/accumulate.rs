//! Where the blended tiles go: a tensor accumulator on the image's device ([`super::run_tiled`],
//! for model code that goes on with tensors) or an interleaved f32 buffer in host memory
//! ([`super::run_tiled_interleaved`], for an image-sized result, which then needs no
//! tensor-to-image copy). Both add `(tile · row weight) · column weight` in the same order, so
//! they give the same numbers.

use candle_core::{DType, Device, Tensor};

use super::{Tile, TilePlan};
use crate::error::Result;
use crate::tensor_host::{with_f32_values, zeroed_f32};

/// An image in host memory: `height` rows of `width` pixels of `channels` interleaved values.
#[derive(Debug, Clone, PartialEq)]
pub struct Interleaved {
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// A blend of tile outputs into one image.
pub(super) trait Blend: Sized {
    type Output;

    /// The result when one tile covered the padded image: `y` is its output `(1, C, H, W)` at
    /// the padded size, any float dtype.
    fn whole(y: &Tensor, plan: &TilePlan) -> Result<Self::Output>;

    /// An empty blend of `channels`-channel tiles, with the normalised weights of each tile row
    /// and column ([`super::blend::axis_weights`]).
    fn new(
        plan: &TilePlan,
        rows: &[Vec<f32>],
        columns: &[Vec<f32>],
        channels: usize,
        device: &Device,
    ) -> Result<Self>;

    fn channels(&self) -> usize;

    /// Adds the output `y` `(C, th, tw)`, f32, of the tile at grid `row` and `column`.
    fn add(&mut self, y: &Tensor, row: usize, column: usize, tile: &Tile) -> Result<()>;

    /// The blended image, the padding cut off.
    fn finish(self) -> Result<Self::Output>;
}

/// Where the output of the unpadded image lies in the padded output, in output pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crop {
    pub(super) top: usize,
    pub(super) left: usize,
    pub(super) width: usize,
    pub(super) height: usize,
    /// Width of the padded output.
    pub(super) stride: usize,
}

impl Crop {
    pub(super) fn of(plan: &TilePlan) -> Self {
        let scale = plan.scale;
        let (top, _, left, _) = plan.padding();
        let (width, height) = plan.output_size();
        Self {
            top: top * scale,
            left: left * scale,
            width,
            height,
            stride: plan.padded_width * scale,
        }
    }
}

/// The accumulator is laid out (rows, C, columns): then the rows of one tile form a contiguous
/// block, and `slice_set` writes a tile's window back in place with one strided copy (candle has
/// no in-place add into a 2-D window of a (C, H, W) tensor).
pub(super) struct TensorBlend {
    acc: Tensor,
    rows: Vec<Tensor>,
    columns: Vec<Tensor>,
    scale: usize,
    crop: Crop,
}

impl TensorBlend {
    /// Cuts the padding off a `(1, C, H, W)` output; contiguous result.
    fn crop(output: &Tensor, crop: Crop) -> Result<Tensor> {
        let output = output
            .narrow(2, crop.top, crop.height)?
            .narrow(3, crop.left, crop.width)?;
        Ok(output.contiguous()?)
    }
}

impl Blend for TensorBlend {
    type Output = Tensor;

    fn whole(y: &Tensor, plan: &TilePlan) -> Result<Tensor> {
        Self::crop(&y.to_dtype(DType::F32)?, Crop::of(plan))
    }

    fn new(
        plan: &TilePlan,
        rows: &[Vec<f32>],
        columns: &[Vec<f32>],
        channels: usize,
        device: &Device,
    ) -> Result<Self> {
        let scale = plan.scale;
        // Weights shaped to broadcast over the (rows, C, columns) layout of a tile.
        let rows = rows
            .iter()
            .map(|w| Tensor::from_slice(w, (w.len(), 1, 1), device))
            .collect::<candle_core::Result<_>>()?;
        let columns = columns
            .iter()
            .map(|w| Tensor::from_slice(w, (1, 1, w.len()), device))
            .collect::<candle_core::Result<_>>()?;
        let acc = Tensor::zeros(
            (
                plan.padded_height * scale,
                channels,
                plan.padded_width * scale,
            ),
            DType::F32,
            device,
        )?;
        Ok(Self {
            acc,
            rows,
            columns,
            scale,
            crop: Crop::of(plan),
        })
    }

    fn channels(&self) -> usize {
        self.acc.dims()[1]
    }

    fn add(&mut self, y: &Tensor, row: usize, column: usize, tile: &Tile) -> Result<()> {
        let (_, out_height, out_width) = y.dims3()?;
        let weighted = y
            .permute((1, 0, 2))?
            .broadcast_mul(&self.rows[row])?
            .broadcast_mul(&self.columns[column])?;
        let x = tile.x * self.scale;
        let rows = self.acc.narrow(0, tile.y * self.scale, out_height)?;
        let sum = rows.narrow(2, x, out_width)?.add(&weighted)?;
        rows.slice_set(&sum, 2, x)?;
        Ok(())
    }

    fn finish(self) -> Result<Tensor> {
        Self::crop(&self.acc.permute((1, 0, 2))?.unsqueeze(0)?, self.crop)
    }
}

/// The blend weights of every tile row and column as tensors on the tiles' device, for the
/// host accumulators ([`InterleavedBlend`], and the band accumulator of
/// [`super::run_tiled_rows`]): both weigh a tile with this one routine, so they add the same
/// numbers.
pub(super) struct TileWeights {
    /// Row weights shaped (1, rows, 1), column weights (1, 1, columns): they broadcast over a
    /// (C, rows, columns) tile.
    rows: Vec<Tensor>,
    columns: Vec<Tensor>,
}

impl TileWeights {
    pub(super) fn new(rows: &[Vec<f32>], columns: &[Vec<f32>], device: &Device) -> Result<Self> {
        let rows = rows
            .iter()
            .map(|w| Tensor::from_slice(w, (1, w.len(), 1), device))
            .collect::<candle_core::Result<_>>()?;
        let columns = columns
            .iter()
            .map(|w| Tensor::from_slice(w, (1, 1, w.len()), device))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { rows, columns })
    }

    /// The output `y` `(C, th, tw)`, f32, of the tile at grid `row` and `column`, weighted
    /// `(tile · row weight) · column weight` as the tensor blend computes it, laid out
    /// `(th, tw, C)` (interleaved).
    pub(super) fn weigh(&self, y: &Tensor, row: usize, column: usize) -> Result<Tensor> {
        Ok(y.broadcast_mul(&self.rows[row])?
            .broadcast_mul(&self.columns[column])?
            .permute((1, 2, 0))?)
    }
}

/// The host accumulator: the padded output, interleaved, cropped in place at the end. Each
/// tile is weighted and interleaved by tensor ops on its own device (optimised code, and on a
/// GPU the work stays there), then added row by row.
pub(super) struct InterleavedBlend {
    data: Vec<f32>,
    weights: TileWeights,
    channels: usize,
    scale: usize,
    crop: Crop,
}

impl Blend for InterleavedBlend {
    type Output = Interleaved;

    fn whole(y: &Tensor, plan: &TilePlan) -> Result<Interleaved> {
        let (_, channels, padded_height, padded_width) = y.dims4()?;
        let crop = Crop::of(plan);
        let mut data = zeroed_f32(crop.width * crop.height * channels, "the output image")?;
        with_f32_values(y, |planes| {
            let plane = padded_height * padded_width;
            for (i, out_row) in data.chunks_exact_mut(crop.width * channels).enumerate() {
                let start = (crop.top + i) * padded_width + crop.left;
                for (k, source) in planes.chunks_exact(plane).enumerate() {
                    let source = &source[start..start + crop.width];
                    for (out, &v) in out_row.iter_mut().skip(k).step_by(channels).zip(source) {
                        *out = v;
                    }
                }
            }
        })?;
        Ok(Interleaved {
            data,
            width: crop.width,
            height: crop.height,
            channels,
        })
    }

    fn new(
        plan: &TilePlan,
        rows: &[Vec<f32>],
        columns: &[Vec<f32>],
        channels: usize,
        device: &Device,
    ) -> Result<Self> {
        let scale = plan.scale;
        let weights = TileWeights::new(rows, columns, device)?;
        let len = (plan.padded_height * scale)
            .checked_mul(plan.padded_width * scale)
            .and_then(|n| n.checked_mul(channels))
            .ok_or_else(|| crate::Error::option("image", "the output is too large to address"))?;
        Ok(Self {
            data: zeroed_f32(len, "the output image")?,
            weights,
            channels,
            scale,
            crop: Crop::of(plan),
        })
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn add(&mut self, y: &Tensor, row: usize, column: usize, tile: &Tile) -> Result<()> {
        let (channels, out_height, out_width) = y.dims3()?;
        let weighted = self.weights.weigh(y, row, column)?;
        let line = self.crop.stride * channels;
        let first = tile.y * self.scale * line + tile.x * self.scale * channels;
        let tile_line = out_width * channels;
        add_rows(
            &mut self.data,
            &weighted,
            first,
            line,
            tile_line,
            out_height,
        )
    }

    fn finish(self) -> Result<Interleaved> {
        let Self {
            mut data,
            channels,
            crop,
            ..
        } = self;
        // Row i moves from (top + i, left) to (i, 0): never forward of its source, and past
        // the rows still to move, so one front-to-back pass needs no second buffer.
        let (line, stride) = (crop.width * channels, crop.stride * channels);
        for i in 0..crop.height {
            let source = (crop.top + i) * stride + crop.left * channels;
            data.copy_within(source..source + line, i * line);
        }
        data.truncate(crop.height * line);
        Ok(Interleaved {
            data,
            width: crop.width,
            height: crop.height,
            channels,
        })
    }
}

/// Adds the first `rows` lines of `tile_line` values of the interleaved tile `weighted` into
/// `data`, its first value at `first` and one line every `line` values: the whole-image
/// accumulator and the rolling band of [`super::bands`] add tiles alike.
pub(super) fn add_rows(
    data: &mut [f32],
    weighted: &Tensor,
    first: usize,
    line: usize,
    tile_line: usize,
    rows: usize,
) -> Result<()> {
    with_f32_values(weighted, |weighted| {
        for (r, source) in weighted.chunks_exact(tile_line).take(rows).enumerate() {
            let start = first + r * line;
            for (out, &v) in data[start..start + tile_line].iter_mut().zip(source) {
                *out += v;
            }
        }
    })
}
