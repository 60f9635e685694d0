//! OmniSR's hyper-parameters (spandrel 0.4.2 `architectures/OmniSR/__arch/OmniSR.py`:
//! `OmniSR(num_in_ch, num_out_ch, num_feat, block_num, pe, window_size, res_num, up_scale,
//! bias)`) and what tiling and memory planning need of them.

use candle_core::DType;

use super::OmniSr;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputPadding, InputSize, SrNet, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct OmniSrParams {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_feat: usize,
    /// OSA blocks per OSAG (`residual_layer.N.residual_layer.0 .. block_num - 1`).
    pub block_num: usize,
    /// OSAG groups (`residual_layer.0 .. res_num - 1`).
    pub res_num: usize,
    /// Side of the attention windows (and of the grid's cells).
    pub window_size: usize,
    /// Whether the window attentions add a learned relative position bias.
    pub pe: bool,
    /// The pixel-shuffle factor of the last conv: the model's scale.
    pub up_scale: usize,
    /// Whether the input, output, OSAG-closing and upsampling convs have biases.
    pub bias: bool,
}

/// Heads of every attention: the window attentions use `dim_head = num_feat / 4` (so 4 heads
/// when num_feat is a multiple of 4, which the channel attentions' fixed 4 heads require).
pub const HEADS: usize = 4;

/// The smallest side ESA's strided conv and 7-wide max pool accept (spandrel's
/// `SizeRequirements(minimum=16)`): smaller inputs are reflect-padded to it first, then
/// zero-padded to the window.
pub const MIN_SIDE: usize = 16;

impl OmniSrParams {
    /// Channels of each OSAG's ESA (`max(num_feat // 4, 16)`).
    pub fn esa_channels(&self) -> usize {
        (self.num_feat / 4).max(16)
    }
}

impl ArchConfig for OmniSrParams {
    fn scale(&self) -> usize {
        self.up_scale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// `check_image_size` zero-pads the bottom and right to a multiple of the window
    /// (`pad_to_multiple(x, window_size, mode="constant")`).
    fn input_size(&self) -> InputSize {
        InputSize {
            multiple: self.window_size.max(1),
            padding: InputPadding::Zero,
        }
    }

    /// ESA's stride-2 conv and 7-wide max pool need 15 pixels; spandrel asks for 16.
    fn min_input_side(&self) -> usize {
        MIN_SIDE
    }

    /// OmniSR has no finite receptive radius: the grid channel attention normalises and mixes
    /// values across every window of the image, and each OSAG's ESA gate sees ~20 pixels
    /// around through its strided conv and 7-wide max pool. Most of the influence is local
    /// though (windows, 3×3 depthwise convs, ESA): four windows of context (32 pixels at the
    /// published window of 8) leave seams of ~1e-2 at most in the blended tiles of the random
    /// fixtures (tests/zoo_omnisr.rs).
    fn context_radius(&self) -> usize {
        (4 * self.window_size).clamp(16, 64)
    }

    fn describe(&self) -> String {
        format!(
            "OmniSR x{} (nf {}, {} OSAG × {} OSA, window {}{}{}, {}→{} channels)",
            self.up_scale,
            self.num_feat,
            self.res_num,
            self.block_num,
            self.window_size,
            if self.pe { ", rel-pos bias" } else { "" },
            if self.bias { "" } else { ", no conv bias" },
            self.in_channels,
            self.out_channels
        )
    }

    /// The widest live set is inside an OSA block at input resolution: the block input and
    /// residual stream (2 nf), the qkv projection and its split heads (2 × 3 nf), the
    /// attention scores and their softmax (2 × heads × window² per pixel: each pixel's query
    /// row holds window² scores per head), the channel attention's grouped q, k, v copies and
    /// the depthwise convs' outputs (~6 nf); then the tail: the upsampling conv's output and its pixel shuffle (2 × out · scale²).
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let w2 = self.window_size * self.window_size;
        let s2 = self.up_scale * self.up_scale;
        let floats = 14 * self.num_feat + 2 * HEADS * w2 + 2 * self.out_channels * s2;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(OmniSr::new(self, weights)?))
    }
}
