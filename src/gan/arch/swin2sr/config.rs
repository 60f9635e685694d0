//! Swin2SR's hyper-parameters (spandrel 0.4.2 `architectures/Swin2SR/__arch/Swin2SR.py`
//! `Swin2SR(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size,
//! mlp_ratio, qkv_bias, ape, patch_norm, upscale, img_range, upsampler, resi_connection)`)
//! and what tiling and memory planning need of them.

use candle_core::DType;

use super::Swin2Sr;
use crate::error::Result;
use crate::gan::arch::swin::{ResiConnection, Upsampler};
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

/// Swin2SR's reconstruction: the tails it shares with SwinIR, or its own `pixelshuffle_aux`
/// (the compressed-input model: a bicubic-upscaled input branch and an auxiliary image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swin2SrUpsampler {
    Shared(Upsampler),
    PixelShuffleAux,
}

impl Swin2SrUpsampler {
    /// The reference's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared(u) => u.name(),
            Self::PixelShuffleAux => "pixelshuffle_aux",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Swin2SrParams {
    /// Image channels, in and out.
    pub in_channels: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    /// The MLP's hidden width (`int(embed_dim · mlp_ratio)`).
    pub mlp_hidden: usize,
    /// The training resolution as spandrel infers it (it turns the shift off when not above
    /// the window).
    pub img_size: usize,
    /// 255 for window 7 (the JPEG models), else 1, as spandrel infers it.
    pub img_range: f64,
    /// `q_bias` and `v_bias`.
    pub qkv_bias: bool,
    /// An absolute position embedding (then the input must be the training size).
    pub ape: bool,
    /// A LayerNorm after the patch embedding.
    pub patch_norm: bool,
    pub upsampler: Swin2SrUpsampler,
    pub resi_connection: ResiConnection,
    /// Channels of the pixelshuffle / nearest+conv / aux tails (64 in every released model).
    pub num_feat: usize,
    pub upscale: usize,
}

impl Swin2SrParams {
    /// spandrel's `mlp_ratio`: hidden width / embed_dim.
    pub fn mlp_ratio(&self) -> f64 {
        self.mlp_hidden as f64 / self.embed_dim as f64
    }

    fn max_heads(&self) -> usize {
        self.num_heads.iter().copied().max().unwrap_or(1)
    }
}

impl ArchConfig for Swin2SrParams {
    /// f32: spandrel marks it `supports_half = False` (its attention overflows f16).
    fn gpu_dtype(&self) -> DType {
        DType::F32
    }

    fn scale(&self) -> usize {
        self.upscale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.in_channels
    }

    /// The reference reflect-pads to a multiple of the window (`check_image_size`). The aux
    /// model's bicubic branch resizes the padded input to the unpadded size × scale, so it
    /// needs to know that size: it pads itself and takes any input.
    fn input_size(&self) -> InputSize {
        match self.upsampler {
            Swin2SrUpsampler::PixelShuffleAux => InputSize::ANY,
            Swin2SrUpsampler::Shared(_) => InputSize::reflect_to(self.window_size),
        }
    }

    /// Tiles on the window grid, so that a tile's windows are the whole image's.
    fn tile_alignment(&self) -> usize {
        self.window_size
    }

    /// As SwinIR's (the same windows and shifts): two windows and the convolutions' pixels.
    fn context_radius(&self) -> usize {
        2 * self.window_size + 4
    }

    fn describe(&self) -> String {
        format!(
            "Swin2SR x{} (embed {}, depths {:?}, heads {:?}, window {}, mlp ratio {}, {}, {}, \
             {} channels)",
            self.upscale,
            self.embed_dim,
            self.depths,
            self.num_heads,
            self.window_size,
            self.mlp_ratio(),
            match self.upsampler {
                Swin2SrUpsampler::Shared(Upsampler::None) => "no upsampler",
                other => other.name(),
            },
            self.resi_connection.name(),
            self.in_channels,
        )
    }

    /// As SwinIR's estimate (see `SwinIrParams`), the aux tail holding its bicubic branch too.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let c = self.embed_dim;
        let n = self.window_size * self.window_size;
        let body = 21 * c + self.mlp_hidden + 2 * self.max_heads() * n;
        let up = self.upscale * self.upscale;
        let tail = match self.upsampler {
            Swin2SrUpsampler::Shared(Upsampler::PixelShuffleDirect) => 3 * self.in_channels * up,
            Swin2SrUpsampler::Shared(Upsampler::None) => 3 * self.in_channels,
            Swin2SrUpsampler::Shared(_) => 11 * self.num_feat * up.max(1),
            Swin2SrUpsampler::PixelShuffleAux => 13 * self.num_feat * up,
        };
        (body + tail) * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Swin2Sr::new(self, weights)?))
    }
}
