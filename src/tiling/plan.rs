//! Where the tiles go: validated options, the padded image size and the tile grid, computed
//! without touching a tensor so that callers can size progress bars and estimate memory first.
//!
//! Unlike Real-ESRGAN's `tile_process`, whose tiles shrink at the right and bottom edges, every
//! tile here has the same size, as in stable-diffusion.cpp's `sd_tiling`: the tiles on an axis are
//! spread evenly from the first edge to the last, so several of them stack into one batch and a
//! model sees the same input shape everywhere.

use super::TileOptions;
use crate::error::{Error, Result};

/// One tile: a window of the padded image, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Left column in the padded image.
    pub x: usize,
    /// Top row in the padded image.
    pub y: usize,
    /// Width, the same for every tile of a plan.
    pub width: usize,
    /// Height, the same for every tile of a plan.
    pub height: usize,
}

/// The tiling of one image: padding, tile size and tile positions (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlan {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) pad: usize,
    pub(crate) padded_width: usize,
    pub(crate) padded_height: usize,
    pub(crate) scale: usize,
    pub(crate) batch: usize,
    pub(crate) xs: Vec<usize>,
    pub(crate) ys: Vec<usize>,
    pub(crate) tiles: Vec<Tile>,
}

impl TilePlan {
    /// The tiles, row by row, in the order they are run.
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }
    /// Number of tiles (at least 1).
    pub fn len(&self) -> usize {
        self.tiles.len()
    }
    /// Always false: a plan has at least one tile.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
    /// Number of calls of the tiled function: tiles grouped by the batch size.
    pub fn batches(&self) -> usize {
        self.tiles.len().div_ceil(self.batch)
    }
    /// Tile width and height in input pixels, context included.
    pub fn tile_size(&self) -> (usize, usize) {
        (self.tiles[0].width, self.tiles[0].height)
    }
    /// Width and height of the padded image that the tiles cover.
    pub fn padded_size(&self) -> (usize, usize) {
        (self.padded_width, self.padded_height)
    }
    /// Width and height of the blended output: the input size times the scale.
    pub fn output_size(&self) -> (usize, usize) {
        (self.width * self.scale, self.height * self.scale)
    }
    /// Reflect padding `(top, bottom, left, right)` applied to the input image.
    pub fn padding(&self) -> (usize, usize, usize, usize) {
        let bottom = self.padded_height - self.height - self.pad;
        let right = self.padded_width - self.width - self.pad;
        (self.pad, bottom, self.pad, right)
    }
}

/// Plans the tiles of a `width` x `height` image; errors name the offending option.
pub fn plan_tiles(width: usize, height: usize, options: &TileOptions) -> Result<TilePlan> {
    let TileOptions {
        tile,
        overlap,
        scale,
        align,
        pad,
        batch,
    } = *options;
    if width == 0 || height == 0 {
        return Err(Error::option(
            "image",
            format!("cannot tile an empty {width}x{height} image"),
        ));
    }
    for (name, value) in [("scale", scale), ("align", align), ("batch", batch)] {
        if value == 0 {
            return Err(Error::option(name, "must be at least 1"));
        }
    }
    if tile > 0 && overlap >= tile {
        return Err(Error::option(
            "overlap",
            format!("{overlap} must be smaller than the tile size {tile}"),
        ));
    }
    if tile > 0 && tile < align {
        return Err(Error::option(
            "tile",
            format!("{tile} is smaller than the alignment {align}"),
        ));
    }
    let padded_width = padded_len(width, pad, align)?;
    let padded_height = padded_len(height, pad, align)?;
    // The output must be addressable too: its element count is checked again when allocating.
    for len in [padded_width, padded_height] {
        if len.checked_mul(scale).is_none_or(|n| n > u32::MAX as usize) {
            return Err(Error::option(
                "scale",
                format!("output side {len}x{scale} is too large"),
            ));
        }
    }
    let tile_width = tile_len(tile, padded_width, align);
    let tile_height = tile_len(tile, padded_height, align);
    let xs = axis_starts(padded_width, tile_width, overlap, align)?;
    let ys = axis_starts(padded_height, tile_height, overlap, align)?;
    let tiles = ys
        .iter()
        .flat_map(|&y| {
            xs.iter().map(move |&x| Tile {
                x,
                y,
                width: tile_width,
                height: tile_height,
            })
        })
        .collect();
    Ok(TilePlan {
        width,
        height,
        pad,
        padded_width,
        padded_height,
        scale,
        batch,
        xs,
        ys,
        tiles,
    })
}

/// `len` plus the pre-padding on both sides, rounded up to a multiple of `align`.
fn padded_len(len: usize, pad: usize, align: usize) -> Result<usize> {
    pad.checked_mul(2)
        .and_then(|p| p.checked_add(len))
        .and_then(|n| n.checked_next_multiple_of(align))
        .ok_or_else(|| Error::option("pad", format!("padding {len} by {pad} overflows")))
}

/// The tile side: the requested size clamped to the padded side (0 meaning the whole side), then
/// rounded down to the alignment. Both are multiples of `align`, so the result is at least `align`.
fn tile_len(tile: usize, padded: usize, align: usize) -> usize {
    let len = if tile == 0 { padded } else { tile.min(padded) };
    len / align * align
}

/// Tile starts on one axis: as few tiles as keep every overlap at least `overlap`, spread evenly
/// (Real-ESRGAN steps by a fixed stride and leaves the remainder to the last tile; spreading
/// makes the overlaps nearly equal instead), each start a multiple of `align`.
fn axis_starts(len: usize, tile: usize, overlap: usize, align: usize) -> Result<Vec<usize>> {
    if tile >= len {
        return Ok(vec![0]);
    }
    // The longest aligned step that still leaves `overlap` shared pixels.
    let step = tile.saturating_sub(overlap) / align * align;
    if step == 0 {
        return Err(Error::option(
            "overlap",
            format!("{overlap} leaves no room to step {tile}-pixel tiles in multiples of {align}"),
        ));
    }
    // `len` and `tile` are multiples of `align`, so the span is a whole number of align units.
    let units = (len - tile) / align;
    let gaps = (len - tile).div_ceil(step);
    // Consecutive starts differ by at most ceil(units / gaps) <= step / align units, so every
    // overlap is at least `overlap`; the last start is exactly `len - tile`.
    Ok((0..=gaps)
        .map(|k| (k as u128 * units as u128 / gaps as u128) as usize * align)
        .collect())
}
