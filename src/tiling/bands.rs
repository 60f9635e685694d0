//! Tiles run band by band, for an output too large to hold: a band is one row of tiles, the
//! blend goes into a rolling accumulator only as tall as one band (the rows the next band can
//! still touch, since tiles overlap), and each output row is handed on as soon as no later
//! tile can reach it.
//!
//! The rows are bit-identical to [`super::run_tiled_interleaved`]'s: the tiles run in the same
//! row-major order on the same padded image, each is weighted by the same routine
//! ([`TileWeights`]), and every output value starts from zero and receives the same weighted
//! values added in the same order; only where the sum is kept differs.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};

use super::accumulate::{add_rows, Blend, Crop, InterleavedBlend, TileWeights};
use super::{blend, progress, Prepared, Tile, TileOptions};
use crate::error::{Error, Result};

/// Receives the output rows, top to bottom: each `width × channels` interleaved f32 values,
/// the padding already cut off. Mutable so that the receiver can clamp or convert in place.
pub type OnOutputRow<'a> = &'a mut dyn FnMut(&mut [f32]) -> Result<()>;

/// [`super::run_tiled_interleaved`] without holding the result: the same numbers, handed to
/// `on_row` one output row at a time, top to bottom. Returns the output's width, height and
/// channels.
///
/// Memory: the padded image, one band of the padded output (padded output width × one tile's
/// output height × channels f32, allocated fallibly), and one batch of tiles and their
/// outputs. Batches do not cross tile rows. When one tile covers the whole image its output
/// is the result, held once, as the in-memory routine does.
pub fn run_tiled_rows(
    image: &Tensor,
    options: &TileOptions,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    on_row: OnOutputRow<'_>,
) -> Result<(usize, usize, usize)> {
    let prepared = Prepared::new(image, options)?;
    let total = prepared.plan.len();
    if total == 1 {
        let y = f(&prepared.padded)?;
        prepared.check(&y, 1)?;
        let super::Prepared { plan, padded, .. } = prepared;
        drop(padded);
        progress(on_tile, 1, total)?;
        let mut whole = InterleavedBlend::whole(&y, &plan)?;
        drop(y);
        let line = whole.width * whole.channels;
        for row in whole.data.chunks_exact_mut(line) {
            on_row(row)?;
        }
        return Ok((whole.width, whole.height, whole.channels));
    }
    let plan = &prepared.plan;
    let scale = options.scale;
    let (tile_width, tile_height) = plan.tile_size();
    let weights = TileWeights::new(
        &blend::axis_weights(&plan.ys, tile_height, scale)?,
        &blend::axis_weights(&plan.xs, tile_width, scale)?,
        image.device(),
    )?;
    let crop = Crop::of(plan);
    let columns = plan.xs.len();
    let mut band: Option<Band> = None;
    let mut done = 0;
    for (row, (&top, tiles)) in plan.ys.iter().zip(plan.tiles().chunks(columns)).enumerate() {
        for (k, chunk) in tiles.chunks(options.batch).enumerate() {
            let x = prepared.batch(chunk)?;
            let y = f(&x)?;
            drop(x);
            let channels = prepared.check(&y, chunk.len())?;
            let y = y.to_dtype(DType::F32)?;
            let band = match &mut band {
                Some(band) => band,
                None => band.insert(Band::new(crop, channels, prepared.out_height)?),
            };
            if band.channels != channels {
                return Err(candle_core::Error::Msg(format!(
                    "tiled function returned {channels} channels, earlier {}",
                    band.channels
                ))
                .into());
            }
            band.reach((top * scale) + prepared.out_height);
            for (b, tile) in chunk.iter().enumerate() {
                let column = k * options.batch + b;
                band.add(&weights.weigh(&y.get(b)?, row, column)?, tile, scale)?;
            }
            done += chunk.len();
            progress(on_tile, done, total)?;
        }
        // Rows above the next tile row's top are final: no later tile reaches them.
        let finished = plan.ys.get(row + 1).map_or(plan.padded_height, |&y| y) * scale;
        if let Some(band) = &mut band {
            band.emit(finished, on_row)?;
        }
    }
    let channels = band.map_or(0, |b| b.channels);
    Ok((crop.width, crop.height, channels))
}

/// The rolling accumulator: rows `base..base + rows` of the padded output, interleaved.
struct Band {
    data: Vec<f32>,
    /// The padded output row that `data` starts with.
    base: usize,
    /// Values in one padded output row.
    line: usize,
    channels: usize,
    crop: Crop,
}

impl Band {
    /// An empty band, its largest size (`rows` padded output rows: one tile's output height)
    /// reserved up front, fallibly, so it never grows.
    fn new(crop: Crop, channels: usize, rows: usize) -> Result<Self> {
        let line = crop.stride * channels;
        let len = line
            .checked_mul(rows)
            .ok_or_else(|| Error::option("image", "the output is too large to address"))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| {
            Error::option(
                "max-memory",
                format!(
                    "cannot allocate {} MiB for a band of the output: the system has not that \
                     much memory free",
                    (len as u64 * 4) >> 20
                ),
            )
        })?;
        Ok(Self {
            data,
            base: 0,
            line,
            channels,
            crop,
        })
    }

    /// Extends the band with zeroed rows to padded output row `end` (exclusive).
    fn reach(&mut self, end: usize) {
        let len = (end - self.base) * self.line;
        if len > self.data.len() {
            self.data.resize(len, 0.0);
        }
    }

    /// Adds a weighted tile `(th, tw, C)` at its place, as the whole-image accumulator does.
    fn add(&mut self, weighted: &Tensor, tile: &Tile, scale: usize) -> Result<()> {
        let (out_height, out_width, channels) = weighted.dims3()?;
        let first = (tile.y * scale - self.base) * self.line + tile.x * scale * channels;
        let tile_line = out_width * channels;
        add_rows(
            &mut self.data,
            weighted,
            first,
            self.line,
            tile_line,
            out_height,
        )
    }

    /// Hands the rows before padded output row `end` that lie in the image (not the padding)
    /// to `on_row`, then drops them from the band.
    fn emit(&mut self, end: usize, on_row: OnOutputRow<'_>) -> Result<()> {
        let crop = self.crop;
        let (left, width) = (crop.left * self.channels, crop.width * self.channels);
        for p in self.base.max(crop.top)..end.min(crop.top + crop.height) {
            let start = (p - self.base) * self.line + left;
            on_row(&mut self.data[start..start + width])?;
        }
        let gone = ((end - self.base) * self.line).min(self.data.len());
        self.data.copy_within(gone.., 0);
        self.data.truncate(self.data.len() - gone);
        self.base = end;
        Ok(())
    }
}
