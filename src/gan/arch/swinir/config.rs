//! SwinIR's hyper-parameters (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`
//! `SwinIR(in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, upscale,
//! img_range, upsampler, resi_connection, start_unshuffle)`, plus the training `img_size`
//! its shift rule depends on) and what tiling and memory planning need of them.

use candle_core::DType;

use super::SwinIr;
use crate::error::Result;
use crate::gan::arch::swin::{ResiConnection, Upsampler};
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct SwinIrParams {
    /// Image channels (before any pixel unshuffle).
    pub in_channels: usize,
    pub out_channels: usize,
    pub embed_dim: usize,
    /// Swin blocks per residual stage (RSTB).
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    /// The MLP's hidden width (`int(embed_dim · mlp_ratio)`).
    pub mlp_hidden: usize,
    /// The training resolution: the shift is off when it is not above the window.
    pub img_size: usize,
    /// 255 for the JPEG models (window 7), else 1, as spandrel infers it.
    pub img_range: f64,
    pub upsampler: Upsampler,
    pub resi_connection: ResiConnection,
    /// Channels of the pixelshuffle / nearest+conv tails (64 in every released model).
    pub num_feat: usize,
    /// The tail's factor (spandrel's `upscale`); the model's scale is `upscale /
    /// start_unshuffle`.
    pub upscale: usize,
    /// The input's pixel-unshuffle factor (models saved with `conv_first.1`).
    pub start_unshuffle: usize,
    /// Whether the first conv is saved as `conv_first.1` (after a `PixelUnshuffle` at index
    /// 0), which is how spandrel recognises `start_unshuffle`.
    pub first_conv_nested: bool,
}

impl SwinIrParams {
    /// spandrel's `mlp_ratio`: hidden width / embed_dim.
    pub fn mlp_ratio(&self) -> f64 {
        self.mlp_hidden as f64 / self.embed_dim as f64
    }

    /// The first conv's name.
    pub(crate) fn first_conv(&self) -> &'static str {
        if self.first_conv_nested {
            "conv_first.1"
        } else {
            "conv_first"
        }
    }

    /// The most heads of any stage.
    fn max_heads(&self) -> usize {
        self.num_heads.iter().copied().max().unwrap_or(1)
    }
}

impl ArchConfig for SwinIrParams {
    /// f32: spandrel marks it `supports_half = False` (its attention overflows f16).
    fn gpu_dtype(&self) -> DType {
        DType::F32
    }

    fn scale(&self) -> usize {
        self.upscale / self.start_unshuffle.max(1)
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The reference reflect-pads to a multiple of the window (`check_image_size`); the
    /// unshuffled models need the window to divide the unshuffled size too, so their multiple
    /// is window · factor (the same padding whenever the reference's own runs at all).
    fn input_size(&self) -> InputSize {
        InputSize::reflect_to(self.window_size * self.start_unshuffle.max(1))
    }

    /// Every block moves information up to a window across (shifted windows chain), so the
    /// theoretical radius is blocks × window: hundreds of pixels. Measured on the fixtures
    /// (`tests/zoo_swinir.rs`, SwinIR-light, tiles blended): a context of one window left seams
    /// of 1e-1, 1.5 windows 8e-3, 2 windows 1.5e-4, 2 windows + 4 (the convolutions' pixels)
    /// 2e-5. The last is the choice: an overlap of 54 pixels for window 8.
    fn context_radius(&self) -> usize {
        (2 * self.window_size + 4) * self.start_unshuffle.max(1)
    }

    fn describe(&self) -> String {
        let unshuffle = if self.start_unshuffle > 1 {
            format!(", unshuffle {}", self.start_unshuffle)
        } else {
            String::new()
        };
        format!(
            "SwinIR x{} (embed {}, depths {:?}, heads {:?}, window {}, mlp ratio {}, {}, {}{}, \
             {}→{} channels)",
            self.scale(),
            self.embed_dim,
            self.depths,
            self.num_heads,
            self.window_size,
            self.mlp_ratio(),
            match self.upsampler {
                Upsampler::None => "no upsampler",
                other => other.name(),
            },
            self.resi_connection.name(),
            unshuffle,
            self.in_channels,
            self.out_channels
        )
    }

    /// Per unshuffled pixel, what a block holds at its peak: the stage's residual, the block's
    /// input, norm output, qkv (3C), the attention output and the MLP's hidden layer; the
    /// tensor-op path's q, k, v copies (6C) and two score tensors of heads · window² per token
    /// (windows × heads × n² over windows × n tokens); a 3×3 conv's unfolded input (9C). The
    /// tail holds num_feat channels at up to scale² pixels a few times, as RRDBNet's.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let c = self.embed_dim;
        let n = self.window_size * self.window_size;
        let s2 = self.start_unshuffle.max(1).pow(2);
        let body = (21 * c + self.mlp_hidden + 2 * self.max_heads() * n).div_ceil(s2);
        let up = self.upscale * self.upscale / s2;
        let tail = match self.upsampler {
            Upsampler::PixelShuffleDirect => 3 * self.out_channels * up,
            Upsampler::None => 3 * self.out_channels,
            _ => 11 * self.num_feat * up.max(1),
        };
        (body + tail) * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(SwinIr::new(self, weights)?))
    }
}
