//! RRDBNet's hyper-parameters (basicsr's `RRDBNet(num_in_ch, num_out_ch, scale, num_feat,
//! num_block, num_grow_ch)`, plus the ×8 models' third upsampling conv) and what tiling and
//! memory planning need of them.

use candle_core::DType;

use super::RrdbNet;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct RrdbNetParams {
    /// Image channels (before pixel unshuffle).
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_feat: usize,
    pub num_block: usize,
    pub num_grow_ch: usize,
    /// Output pixels per input pixel: 2^num_upsample / unshuffle.
    pub scale: usize,
    /// Pixel-unshuffle factor of the input: 1, 2 (x2 models) or 4 (x1 models).
    pub unshuffle: usize,
    /// Number of ×2 upsampling convs (2, or 3 for ×8 models).
    pub num_upsample: usize,
}

impl ArchConfig for RrdbNetParams {
    fn scale(&self) -> usize {
        self.scale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The x2 / x1 models pixel-unshuffle their input; Real-ESRGAN reflect-pads it to a
    /// multiple of the factor (`mod_pad`).
    fn input_size(&self) -> InputSize {
        InputSize::reflect_to(self.unshuffle.max(1))
    }

    /// The theoretical receptive radius is hundreds of pixels (70 convs for x4plus) but the
    /// effective one is small: Real-ESRGAN tiles it with 10 pixels of context; 16 leaves no
    /// measurable seam with blending.
    fn context_radius(&self) -> usize {
        16 * self.unshuffle.max(1)
    }

    fn describe(&self) -> String {
        format!(
            "RRDBNet x{} (nf {}, nb {}, gc {}, {}→{} channels)",
            self.scale,
            self.num_feat,
            self.num_block,
            self.num_grow_ch,
            self.in_channels,
            self.out_channels
        )
    }

    /// The dense blocks hold x, x1..x4 and their concatenation (nf + 4 gc channels, twice) at
    /// input resolution; the tail holds nf channels at up to scale² pixels twice (input and
    /// output of a conv) plus the conv's unfolded input (9 × nf).
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let low = 4 * (self.num_feat + 4 * self.num_grow_ch) / (self.unshuffle * self.unshuffle);
        let s = self.scale * self.scale;
        let floats = low + 11 * self.num_feat * s.max(1);
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(RrdbNet::new(self, weights)?))
    }
}
