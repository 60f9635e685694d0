//! SAFMN's hyper-parameters (spandrel 0.4.2 `architectures/SAFMN/__arch/safmn.py`:
//! `SAFMN(dim, n_blocks, ffn_scale, upscaling_factor)`, RGB in and out) and what tiling and
//! memory planning need of them.

use candle_core::DType;

use super::Safmn;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

/// SAFM's pyramid: level i max-pools by 2^i, so the input sides must be multiples of 2^3
/// (spandrel's `SizeRequirements(multiple_of=8)`).
pub const LEVELS: usize = 4;
pub const MULTIPLE: usize = 1 << (LEVELS - 1);

/// The tile context: SAFMN's exact receptive radius is 16 pixels a block (the 1/8-scale
/// path's 3×3 conv reaches 2·8 − 1 = 15, the CCM's 3×3 conv 1 more), 130 for the 8-block
/// presets, which would force tiles of 700 pixels. Measured on the preset with random
/// weights (scripts/fixtures/zoo_safmn.py's x2 dim-36 model, 32² centre of a 240 × 200
/// photo mosaic), input beyond 48 pixels changes the output by 1e-4 of its range, beyond
/// 64 by 1e-6: 48 (three blocks' exact reach) leaves no visible seam once tiles are blended.
const MAX_CONTEXT: usize = 48;

#[derive(Debug, Clone, PartialEq)]
pub struct SafmnParams {
    pub dim: usize,
    pub n_blocks: usize,
    /// The CCM's inner width (`feats.0.ccm.ccm.0.weight`'s outputs), `dim · ffn_scale`.
    pub hidden_dim: usize,
    pub upscale: usize,
}

impl SafmnParams {
    /// spandrel's `ffn_scale`: the CCM's width over `dim`.
    pub fn ffn_scale(&self) -> f64 {
        self.hidden_dim as f64 / self.dim as f64
    }
}

impl ArchConfig for SafmnParams {
    fn scale(&self) -> usize {
        self.upscale
    }

    /// RGB, hard-coded in the architecture.
    fn in_channels(&self) -> usize {
        3
    }

    fn out_channels(&self) -> usize {
        3
    }

    /// Multiples of 8, other sizes reflect-padded at the bottom and right as spandrel pads
    /// them.
    fn input_size(&self) -> InputSize {
        InputSize::reflect_to(MULTIPLE)
    }

    /// See [`MAX_CONTEXT`]: the exact radius where it is smaller (up to 2 blocks).
    fn context_radius(&self) -> usize {
        (16 * self.n_blocks + 2).min(MAX_CONTEXT)
    }

    fn describe(&self) -> String {
        format!(
            "SAFMN x{} (dim {}, {} blocks, ffn scale {})",
            self.upscale,
            self.dim,
            self.n_blocks,
            self.ffn_scale()
        )
    }

    /// Peak live maps, in the CCM: to_feat's output (kept for the global residual), the
    /// block's input, its norm, the 3×3 conv's output and its GELU (hidden channels each),
    /// and the conv's Winograd workspace (36/16 of its input and output channels): about
    /// 5.25·dim + 4.25·hidden; SAFM's maps (dim each: norm, pyramid, aggregation, GELU)
    /// stay below. Then to_img's output and its pixel-shuffled copy (3·scale² each), and the
    /// input with its padded copy.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let shuffled = 3 * self.upscale * self.upscale;
        let floats = 6 * self.dim + 5 * self.hidden_dim + 2 * shuffled + 6;
        floats * dtype.size_in_bytes()
    }

    /// f32: spandrel marks SAFMN `supports_half = False` (unverified there, so not risked).
    fn gpu_dtype(&self) -> DType {
        DType::F32
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Safmn::new(self, weights)?))
    }
}
