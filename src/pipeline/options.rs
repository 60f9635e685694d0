//! How the upscaler is loaded and how it tiles large pictures. What one upscale is asked to do
//! is [`crate::upscaler::DiffusionSettings`] (prompt, steps, seed, …).

use std::sync::Arc;

use candle_core::{DType, Device};

use crate::models::vae::VaeTiling;

/// How the models are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// dtype of the UNet and the text encoder; the VAE always runs in f32 because it overflows
    /// in f16 (diffusers' `force_upcast`).
    pub dtype: DType,
    /// How large pictures are cut into tiles (when `max_memory` is `None`).
    pub tiling: TilingOptions,
    /// A memory budget in bytes from which each image's tiles are chosen (see
    /// [`crate::pipeline::plan_memory`]); `None` uses `tiling` as given.
    pub max_memory: Option<u64>,
    /// The thread pool the CPU work runs in, loading included ([`crate::threads::pool`]);
    /// `None`: rayon's global pool.
    pub threads: Option<Arc<rayon::ThreadPool>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            tiling: TilingOptions::default(),
            max_memory: None,
            threads: None,
        }
    }
}

/// Tiled denoising and decoding of latents larger than a tile. A latent that fits in one
/// tile runs untiled, exactly as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilingOptions {
    /// Latent tile edge for the UNet (default 128, the x4 model's trained size).
    pub latent_tile: usize,
    /// Overlap of neighbouring UNet tiles, in latent pixels.
    pub latent_overlap: usize,
    /// UNet tiles denoised together (each is doubled under guidance).
    pub unet_batch: usize,
    /// The VAE decode's tiles.
    pub vae: VaeTiling,
}

impl Default for TilingOptions {
    fn default() -> Self {
        Self {
            latent_tile: 128,
            latent_overlap: 32,
            unet_batch: 1,
            vae: VaeTiling::default(),
        }
    }
}
