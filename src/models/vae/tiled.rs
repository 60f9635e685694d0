//! Tiled VAE decoding for latents too large to decode at once: overlapping latent tiles
//! decoded one batch at a time and blended by the shared [`crate::tiling`] routine, with
//! every GroupNorm using statistics recorded once on a subsampled copy of the whole latent
//! ([`crate::models::layers::group_norm_stats`]) and handed to each tile's decode, so no
//! tile's tone drifts from its neighbours'. One tile covering the latent is a plain
//! [`AutoencoderKL::decode`].

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::AutoencoderKL;
use crate::models::layers::{GroupNormMode, GroupNormStats};
use crate::tiling::{plan_tiles, run_tiled, TileOptions};
use crate::Result;

/// How a latent is cut for decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Tile edge in latent pixels (0: never tile).
    pub tile: usize,
    /// Overlap between tiles in latent pixels.
    pub overlap: usize,
    /// Tiles decoded together.
    pub batch: usize,
}

impl Default for VaeTiling {
    fn default() -> Self {
        // 64 latent pixels decode to 256 (x4 VAE) in about 1 GiB of f32 activations; a
        // quarter of a tile of overlap leaves nothing of the mid-block attention's reach
        // visible at the seams.
        Self {
            tile: 64,
            overlap: 16,
            batch: 1,
        }
    }
}

impl VaeTiling {
    fn options(&self, scale: usize) -> TileOptions {
        TileOptions {
            tile: self.tile,
            overlap: self.overlap,
            scale,
            align: 1,
            pad: 0,
            batch: self.batch.max(1),
        }
    }
}

impl AutoencoderKL {
    /// Output pixels per latent pixel.
    pub fn scale_factor(&self) -> usize {
        1 << self.config().block_out_channels.len().saturating_sub(1)
    }

    /// How many tile batches a (h, w) latent is decoded in (1: untiled).
    pub fn decode_batches(&self, height: usize, width: usize, tiling: &VaeTiling) -> Result<usize> {
        if tiling.tile == 0 || (height <= tiling.tile && width <= tiling.tile) {
            return Ok(1);
        }
        Ok(plan_tiles(width, height, &tiling.options(self.scale_factor()))?.batches())
    }

    /// [`AutoencoderKL::decode`] of one latent (1, C, h, w) in tiles; `on_tile(done, total)`
    /// may cancel.
    pub fn decode_tiled(
        &self,
        latents: &Tensor,
        tiling: &VaeTiling,
        on_tile: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = latents.dims4()?;
        if tiling.tile == 0 || (h <= tiling.tile && w <= tiling.tile) {
            let out = self.decode(latents)?;
            if on_tile(1, 1).is_break() {
                return Err(crate::Error::Cancelled);
            }
            return Ok(out);
        }
        // Statistics from the whole picture, subsampled to fit one tile.
        let k = h.max(w).div_ceil(tiling.tile);
        let small = latents.upsample_nearest2d(h.div_ceil(k), w.div_ceil(k))?;
        let mut stats = GroupNormStats::default();
        self.decode_with_stats(&small, &mut GroupNormMode::record(&mut stats))?;
        run_tiled(
            latents,
            &tiling.options(self.scale_factor()),
            &mut |tile: &Tensor| self.decode_with_stats(tile, &mut GroupNormMode::replay(&stats)),
            on_tile,
        )
    }
}
