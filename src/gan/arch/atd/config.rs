//! ATD's hyper-parameters (spandrel 0.4.2 `architectures/ATD/__arch/atd_arch.py`
//! `ATD(in_chans, embed_dim, depths, num_heads, window_size, category_size, num_tokens,
//! reducted_dim, convffn_kernel_size, mlp_ratio, qkv_bias, patch_norm, upscale, img_range,
//! upsampler, resi_connection, norm)`) and what tiling and memory planning need of them.

use candle_core::DType;

use super::Atd;
use crate::error::Result;
use crate::gan::arch::swin::{ResiConnection, Upsampler};
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct AtdParams {
    /// Image channels in and out (the reference builds them equal).
    pub in_channels: usize,
    pub embed_dim: usize,
    /// Transformer layers per group (ATDB).
    pub depths: Vec<usize>,
    /// Attention heads per group.
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    /// Tokens per group of the category attention: not in the weights; spandrel's heuristic,
    /// 128 for ATD-light (pixelshuffledirect at embed 48), else 256.
    pub category_size: usize,
    /// Entries of each group's token dictionary.
    pub num_tokens: usize,
    /// Width of the dictionary attention's queries and keys.
    pub reducted_dim: usize,
    pub convffn_kernel_size: usize,
    /// The ConvFFN's hidden width (`int(embed_dim · mlp_ratio)`).
    pub mlp_hidden: usize,
    pub qkv_bias: bool,
    /// A LayerNorm after the patch embedding (`patch_embed.norm`).
    pub patch_norm: bool,
    pub upscale: usize,
    /// Not in the weights: spandrel's 1.
    pub img_range: f64,
    pub upsampler: Upsampler,
    pub resi_connection: ResiConnection,
    /// Mean subtraction and range scaling (off when the dict holds the `no_norm` buffer).
    pub norm: bool,
}

/// The pixelshuffle / nearest+conv tails' width, fixed in the reference.
pub(crate) const NUM_FEAT: usize = 64;

impl AtdParams {
    /// spandrel's `mlp_ratio`: hidden width / embed_dim.
    pub fn mlp_ratio(&self) -> f64 {
        self.mlp_hidden as f64 / self.embed_dim as f64
    }

    /// spandrel's `is_light` tag.
    pub fn is_light(&self) -> bool {
        self.upsampler == Upsampler::PixelShuffleDirect && self.embed_dim == 48
    }

    fn max_heads(&self) -> usize {
        self.num_heads.iter().copied().max().unwrap_or(1)
    }
}

impl ArchConfig for AtdParams {
    /// f32: spandrel marks ATD `supports_half = False` (bf16 is allowed there).
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

    /// ATD mirror-pads inside its forward (flip and concatenate, which repeats the edge row:
    /// not the reflect padding of `InputSize`), so the network takes any size and pads itself.
    fn input_size(&self) -> InputSize {
        InputSize::ANY
    }

    /// spandrel's `SizeRequirements(minimum=8)`; the flip-and-concatenate padding also needs
    /// half a window.
    fn min_input_side(&self) -> usize {
        8usize.max(self.window_size.div_ceil(2))
    }

    /// Tiles start on the window grid, so that their windows are the whole image's.
    fn tile_alignment(&self) -> usize {
        self.window_size.max(1)
    }

    /// ATD has no finite receptive radius: the token dictionaries are refined from every token
    /// of the image and the category attention groups tokens from anywhere by category. The
    /// local part (shifted windows, the ConvFFN's depthwise convs) reaches a few windows; two
    /// windows plus 4 pixels is SwinIR's choice and is kept here. With random weights a larger
    /// context does not help: tiled against whole-image output (tests/zoo_atd.rs) the tiny
    /// fixture differs by a mean of 2.5e-2 (max 0.75) for tiles of 64, 80 and 96 alike, the
    /// difference spread over the image rather than at the seams.
    fn context_radius(&self) -> usize {
        2 * self.window_size + 4
    }

    fn describe(&self) -> String {
        format!(
            "ATD{} x{} (embed {}, depths {:?}, heads {:?}, window {}, category {}, {} tokens, \
             reducted {}, ConvFFN kernel {}, mlp ratio {}, {}, {}{}, {} channels)",
            if self.is_light() { "-light" } else { "" },
            self.upscale,
            self.embed_dim,
            self.depths,
            self.num_heads,
            self.window_size,
            self.category_size,
            self.num_tokens,
            self.reducted_dim,
            self.convffn_kernel_size,
            self.mlp_ratio(),
            match self.upsampler {
                Upsampler::None => "no upsampler",
                other => other.name(),
            },
            self.resi_connection.name(),
            if self.norm { "" } else { ", no norm" },
            self.in_channels,
        )
    }

    /// Per input pixel (one token), at a layer's peak: the group's input, the layer's input,
    /// its norm, qkv (3C), the three attention outputs, the category attention's sorted and
    /// padded qkv and its q, k, v (9C), the ConvFFN's hidden map thrice; the dictionary
    /// similarity (tokens) four times (scores, softmax, transposed, normalised); two score
    /// tensors of the window attention (heads · window² per token) and of the category
    /// attention (heads · category per token); a 3×3 conv's unfolded input (9C). The tail
    /// holds 64 channels at up to scale² pixels a few times, as SwinIR's.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let c = self.embed_dim;
        let heads = self.max_heads();
        let attn = 2 * heads * (self.window_size * self.window_size + self.category_size);
        let body = 27 * c + 3 * self.mlp_hidden + 4 * self.num_tokens + attn;
        let up = self.upscale * self.upscale;
        let tail = match self.upsampler {
            Upsampler::PixelShuffleDirect => 3 * self.in_channels * up,
            Upsampler::None => 3 * self.in_channels,
            _ => 11 * NUM_FEAT * up,
        };
        (body + tail) * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Atd::new(self, weights)?))
    }
}
