//! SRResNet's hyper-parameters (BasicSR's `MSRResNet(num_in_ch, num_out_ch, num_feat,
//! num_block, upscale)`) and what tiling and memory planning need of them.

use candle_core::DType;

use super::SrResNet;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct SrResNetParams {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_feat: usize,
    pub num_block: usize,
    /// 2, 3 (one pixel-shuffle conv) or 4 (two ×2 convs).
    pub upscale: usize,
}

/// The largest tile context: the exact radius of the released 16-block models is 35 input
/// pixels, but the weight of residual blocks' far taps falls off quickly, as RRDBNet's does
/// (Real-ESRGAN tiles that 70-conv network with 10 pixels of context).
const MAX_CONTEXT: usize = 24;

impl SrResNetParams {
    /// The exact receptive radius in input pixels: conv_first, two convs per block and upconv1
    /// at input size, then at most one more input pixel for the convs at ×2 / full size
    /// (upconv2 at ×2 reads ½, conv_hr and conv_last 2/scale); the bilinear base, added in
    /// parallel, reads one.
    pub fn receptive_radius(&self) -> usize {
        3 + 2 * self.num_block
    }
}

impl ArchConfig for SrResNetParams {
    fn scale(&self) -> usize {
        self.upscale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The exact receptive radius (tiled output equals untiled) for shallow nets, capped at
    /// [`MAX_CONTEXT`] for deep ones.
    fn context_radius(&self) -> usize {
        self.receptive_radius().min(MAX_CONTEXT)
    }

    fn describe(&self) -> String {
        format!(
            "SRResNet x{} (MSRResNet: nf {}, nb {}, {}→{} channels)",
            self.upscale, self.num_feat, self.num_block, self.in_channels, self.out_channels
        )
    }

    /// At input size the residual stream, a block's intermediate and its output (3 nf, plus
    /// 9 nf of a conv's unfolded input); at full size conv_hr's input and output (2 nf · s²),
    /// the unfolded input of conv_last (9 nf · s²), the upsampled base and the output.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let s2 = self.upscale * self.upscale;
        let floats = 12 * self.num_feat + 11 * self.num_feat * s2 + 2 * self.out_channels * s2;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(SrResNet::new(self, weights)?))
    }
}
