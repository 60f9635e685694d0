//! Choosing the diffusion run's tiles from a memory budget (`--max-memory`), and the estimate
//! shown before a long run. The per-pixel costs are measured, not derived: peak resident
//! memory of the full-size x4 model on the CPU (`cargo bench --bench x4_cpu`, f32) minus its
//! weights, divided by the latent pixels, rounded up. A budget that even the smallest tiles
//! cannot meet is refused with the figure that would do, never left to run out of memory.

use crate::error::{Error, Result};
use crate::models::vae::VaeTiling;

use super::TilingOptions;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// UNet activations per latent pixel per batch item in f32. Measured with diffsr's own
/// convolution (no im2col buffer): a 256² latent in 9 tiles of 128, 5 tiles (10 guided items)
/// at once, peaked 2.5 GiB above the weights, ~16 KiB a pixel; 24 leaves a margin.
const UNET_BYTES_PER_PIXEL: u64 = 24 * KIB;
/// VAE decoder activations per latent pixel (16 output pixels), f32 (measured ~120 KiB).
const VAE_BYTES_PER_PIXEL: u64 = 128 * KIB;
/// The chunked attention's score budget ([`crate::models::layers::DEFAULT_MAX_SCORE_BYTES`])
/// plus its softmax temporaries.
const ATTENTION_BYTES: u64 = 512 * MIB;

/// UNet tile edges tried, largest first (128: the model's trained size).
const UNET_TILES: [usize; 7] = [128, 112, 96, 80, 64, 48, 32];
/// VAE tile edges tried, largest first.
const VAE_TILES: [usize; 8] = [128, 96, 80, 64, 48, 32, 24, 16];
/// Most tiles denoised together.
const MAX_UNET_BATCH: usize = 8;

/// The im2col buffer candle's GPU convolution (CUDA, Metal) fills before its GEMM: k·k·C_in
/// values per output pixel, at the convolution where it is largest, in bytes per latent pixel
/// (per batch item for the UNet, in its dtype; the VAE in f32). The measured per-pixel costs
/// above come from diffsr's CPU convolutions, which need no such buffer, so on a GPU the plan
/// adds this. Derived from the configs and candle 0.11's `conv2d`, not measured: the GPU check
/// (scripts/gpu-check.sh) compares the estimate with the device's peak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Im2colBytes {
    pub unet: u64,
    pub vae: u64,
}

impl Im2colBytes {
    /// No buffer: the CPU.
    pub const NONE: Self = Self { unet: 0, vae: 0 };

    /// From the UNet's and the VAE's `block_out_channels` (3×3 convolutions throughout).
    pub fn from_channels(unet: &[usize], unet_dtype_bytes: usize, vae: &[usize]) -> Self {
        const TAPS: u64 = 9;
        // UNet level i runs at 1/4^i of the latent's pixels; its widest convolution is the
        // first of its up block, whose input is the level's skip plus the level below's output.
        let unet_values = (0..unet.len())
            .map(|i| {
                let c_in = (unet[i] + unet[(i + 1).min(unet.len() - 1)]) as u64;
                TAPS * c_in / (1u64 << (2 * i))
            })
            .max()
            .unwrap_or(0);
        // Decoder level j runs at 4^j output pixels per latent pixel; its first convolution
        // (the upsampler's, for j ≥ 1) takes the level above's channels.
        let n = vae.len();
        let vae_values = (0..n)
            .map(|j| TAPS * vae[n - j.max(1)] as u64 * (1u64 << (2 * j)))
            .max()
            .unwrap_or(0);
        Self {
            unet: unet_values * unet_dtype_bytes as u64,
            vae: vae_values * 4,
        }
    }
}

/// What a run is expected to hold at its peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// Extra bytes held while the weights load (a file's mapped pages are counted while its
    /// tensors are copied out): the largest weights file.
    pub loading: u64,
    pub unet: u64,
    pub vae: u64,
    /// Latents, the noised image and the output accumulators.
    pub buffers: u64,
}

impl MemoryEstimate {
    pub fn peak(&self) -> u64 {
        self.weights + (self.unet.max(self.vae) + self.buffers).max(self.loading)
    }
}

/// The tiling and its estimate for an h × w latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub tiling: TilingOptions,
    pub estimate: MemoryEstimate,
    pub unet_tiles: usize,
    pub vae_tiles: usize,
}

fn gib(b: u64) -> String {
    if b < 1 << 30 {
        format!("{} MiB", b.div_ceil(MIB))
    } else {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    }
}

/// The model's widths relative to the full-size x4 upscaler's (UNet first block 256
/// channels, VAE 128 at full resolution), by which the measured per-pixel costs scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelWidths {
    pub unet: f64,
    pub vae: f64,
}

impl ModelWidths {
    pub const X4_UPSCALER: Self = Self {
        unet: 1.0,
        vae: 1.0,
    };

    /// From the first block widths of the UNet and the VAE.
    pub fn from_channels(unet_first: usize, vae_first: usize) -> Self {
        Self {
            unet: unet_first as f64 / 256.0,
            vae: vae_first as f64 / 128.0,
        }
    }
}

impl MemoryPlan {
    /// One line for the user.
    pub fn describe(&self, budget: u64) -> String {
        let t = &self.tiling;
        let unet = if self.unet_tiles <= 1 {
            "UNet untiled".to_string()
        } else {
            format!(
                "UNet in {} tiles of {} (overlap {}, {} at once)",
                self.unet_tiles, t.latent_tile, t.latent_overlap, t.unet_batch
            )
        };
        let vae = if self.vae_tiles <= 1 {
            "VAE untiled".to_string()
        } else {
            format!("VAE in {} tiles of {}", self.vae_tiles, t.vae.tile)
        };
        format!(
            "{unet}, {vae}; estimated peak {} of a {} budget",
            gib(self.estimate.peak()),
            gib(budget)
        )
    }
}

fn tiles_along(len: usize, tile: usize, overlap: usize) -> usize {
    if len <= tile {
        1
    } else {
        (len - overlap).div_ceil(tile - overlap)
    }
}

/// What a loaded model holds and how its activations scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelFootprint {
    /// Bytes of all weights as loaded.
    pub weights: u64,
    /// The largest weights file (held twice for a moment while it loads).
    pub loading: u64,
    pub widths: ModelWidths,
    /// Bytes per element of the UNet's dtype (its activations scale with it).
    pub unet_dtype_bytes: usize,
    /// The GPU convolution's extra buffer ([`Im2colBytes::NONE`] on the CPU).
    pub im2col: Im2colBytes,
}

/// Picks the largest tiles (and UNet batch) whose estimate fits `budget` for an
/// `height` × `width` latent of `model`.
pub fn plan_memory(
    height: usize,
    width: usize,
    budget: u64,
    model: &ModelFootprint,
    guidance: bool,
) -> Result<MemoryPlan> {
    let scaled = |bytes: u64, ratio: f64| (bytes as f64 * ratio).ceil() as u64;
    let ModelFootprint {
        weights,
        loading,
        widths,
        unet_dtype_bytes,
        im2col,
    } = *model;
    let copies: u64 = if guidance { 2 } else { 1 };
    let pixels = (height * width) as u64;
    // Latents, image, noise, prediction, and the f32 output with its accumulator (16 output
    // pixels per latent pixel, 3 channels, twice).
    let buffers = pixels * 4 * 16 + pixels * 16 * 3 * 4 * 2;
    let unet_per_px =
        scaled(UNET_BYTES_PER_PIXEL, widths.unet) * unet_dtype_bytes as u64 / 4 + im2col.unet;
    let vae_per_px = scaled(VAE_BYTES_PER_PIXEL, widths.vae) + im2col.vae;
    let attention = scaled(ATTENTION_BYTES, widths.unet.min(1.0));
    let fixed = weights + buffers + attention;
    if weights + loading > budget {
        return Err(Error::option(
            "max_memory",
            format!(
                "{} is too little to load the model: about {} is needed",
                gib(budget),
                gib(weights + loading)
            ),
        ));
    }
    let unet_cost = |tile: usize, batch: usize| {
        let side = |len: usize| len.min(tile) as u64;
        side(height) * side(width) * unet_per_px * copies * batch as u64
    };
    let vae_cost = |tile: usize| {
        let side = |len: usize| len.min(tile) as u64;
        side(height) * side(width) * vae_per_px
    };
    let fits = |cost: u64| fixed + cost <= budget;
    let unet_tile = UNET_TILES.iter().copied().find(|&t| fits(unet_cost(t, 1)));
    let vae_tile = VAE_TILES.iter().copied().find(|&t| fits(vae_cost(t)));
    let (Some(unet_tile), Some(vae_tile)) = (unet_tile, vae_tile) else {
        let need = fixed
            + unet_cost(*UNET_TILES.last().unwrap_or(&32), 1)
                .max(vae_cost(*VAE_TILES.last().unwrap_or(&16)));
        return Err(Error::option(
            "max_memory",
            format!(
                "{} is too little for a {width}x{height} latent even in the smallest tiles: \
                 about {} is needed ({} of it weights)",
                gib(budget),
                gib(need),
                gib(weights)
            ),
        ));
    };
    let overlap = unet_tile / 4;
    let unet_tiles =
        tiles_along(width, unet_tile, overlap) * tiles_along(height, unet_tile, overlap);
    let batch = (1..=MAX_UNET_BATCH.min(unet_tiles))
        .rev()
        .find(|&b| fits(unet_cost(unet_tile, b)))
        .unwrap_or(1);
    let vae_overlap = vae_tile / 4;
    let vae_tiles =
        tiles_along(width, vae_tile, vae_overlap) * tiles_along(height, vae_tile, vae_overlap);
    let tiling = TilingOptions {
        latent_tile: unet_tile,
        latent_overlap: overlap,
        unet_batch: batch,
        vae: VaeTiling {
            tile: vae_tile,
            overlap: vae_overlap,
            batch: 1,
        },
    };
    Ok(MemoryPlan {
        tiling,
        estimate: MemoryEstimate {
            weights,
            loading,
            unet: unet_cost(unet_tile, batch) + attention,
            vae: vae_cost(vae_tile),
            buffers,
        },
        unet_tiles,
        vae_tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full-size x4 upscaler's model on a GPU, f16 UNet.
    fn x4_gpu() -> ModelFootprint {
        ModelFootprint {
            weights: 2_000_000_000,
            loading: 1_000_000_000,
            widths: ModelWidths::X4_UPSCALER,
            unet_dtype_bytes: 2,
            im2col: Im2colBytes::from_channels(&[256, 512, 512, 1024], 2, &[128, 256, 512]),
        }
    }

    #[test]
    fn the_x4_models_im2col_buffers_are_its_widest_convolutions() {
        let b = Im2colBytes::from_channels(&[256, 512, 512, 1024], 2, &[128, 256, 512]);
        // UNet: the full-resolution up block's first conv, 256 + 512 channels in, f16.
        assert_eq!(b.unet, 9 * 768 * 2);
        // VAE: the last up block's first conv, 256 channels at 16 output pixels a latent pixel.
        assert_eq!(b.vae, 9 * 256 * 16 * 4);
        assert_eq!(Im2colBytes::from_channels(&[], 4, &[]), Im2colBytes::NONE);
    }

    #[test]
    fn a_gpu_plan_counts_the_im2col_buffers_and_still_fits() -> Result<()> {
        let gpu = x4_gpu();
        let cpu = ModelFootprint {
            im2col: Im2colBytes::NONE,
            ..gpu
        };
        let budget = 8 << 30;
        let (on_gpu, on_cpu) = (
            plan_memory(128, 128, budget, &gpu, true)?,
            plan_memory(128, 128, budget, &cpu, true)?,
        );
        assert!(on_gpu.estimate.vae > on_cpu.estimate.vae);
        assert!(on_gpu.estimate.peak() <= budget);
        // The bigger per-pixel cost can only shrink the tiles.
        assert!(on_gpu.tiling.vae.tile <= on_cpu.tiling.vae.tile);
        assert!(on_gpu.tiling.latent_tile <= on_cpu.tiling.latent_tile);
        Ok(())
    }
}
