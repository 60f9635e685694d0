//! SPAN's hyper-parameters (spandrel 0.4.2 `architectures/SPAN/__arch/span.py`:
//! `SPAN(num_in_ch, num_out_ch, feature_channels, upscale, bias, norm, img_range, rgb_mean)`)
//! and what tiling and memory planning need of them.

use candle_core::DType;

use super::Span;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

/// The reference's input normalisation, which the weights cannot tell (spandrel hard-codes
/// them too): `(x - RGB_MEAN) * IMG_RANGE`, with no inverse at the output.
pub const IMG_RANGE: f64 = 255.0;
pub const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];

/// SPAB blocks: the architecture has exactly six (`block_1` ... `block_6`).
pub const BLOCKS: usize = 6;

#[derive(Debug, Clone, PartialEq)]
pub struct SpanParams {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of every feature map (`conv_1.sk.weight`'s outputs): 48 in the released models.
    pub feature_channels: usize,
    /// The pixel shuffle's factor.
    pub upscale: usize,
    /// Whether the input is normalised by [`RGB_MEAN`] and [`IMG_RANGE`] first: true unless
    /// the state dict holds the `no_norm` buffer.
    pub norm: bool,
}

impl ArchConfig for SpanParams {
    fn scale(&self) -> usize {
        self.upscale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The exact receptive radius, one pixel per 3×3 convolution on the way (conv_1, the
    /// blocks' 6 × 3, conv_2, the upsampler's; conv_cat is 1×1): 21, small enough to keep
    /// whole, so tiled output equals untiled output up to rounding.
    fn context_radius(&self) -> usize {
        1 + 3 * BLOCKS + 1 + 1
    }

    fn describe(&self) -> String {
        format!(
            "SPAN x{} ({} feature channels, {}→{} channels{})",
            self.upscale,
            self.feature_channels,
            self.in_channels,
            self.out_channels,
            if self.norm { "" } else { ", no input norm" }
        )
    }

    /// Peak live feature maps (fc channels each) inside the last block: conv_1's output,
    /// block 1's, the block's input, its first conv's output (kept for conv_cat), the
    /// activation feeding the running conv and that conv's output, plus the conv's workspace
    /// (Winograd's transformed input and output tiles, 2 × 36/16 of its channels): about
    /// 10.5 maps; conv_cat's concatenation and output (4 + 4 + 1) stay below. Then the
    /// upsampler's output and its pixel-shuffled copy (out·scale² each), and the input with
    /// its normalised copy.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let shuffled = self.out_channels * self.upscale * self.upscale;
        let floats = 11 * self.feature_channels + 2 * shuffled + 2 * self.in_channels;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Span::new(self, weights)?))
    }
}
