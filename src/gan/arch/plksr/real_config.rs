//! RealPLKSR's hyper-parameters (spandrel 0.4.2 `architectures/PLKSR/__arch/RealPLKSR.py`:
//! `RealPLKSR(dim, n_blocks, upscaling_factor, kernel_size, split_ratio, use_ea, norm_groups,
//! dysample, layer_norm)`; `norm_groups` is not in the weights and spandrel fixes it to 4) and
//! what tiling and memory planning need of them.

use candle_core::DType;

use super::config::{block_floats, context};
use super::RealPlksr;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

/// GroupNorm's groups in the blocks without layer norm (spandrel: "un-detectable", 4).
pub(crate) const NORM_GROUPS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct RealPlksrParams {
    pub dim: usize,
    pub n_blocks: usize,
    /// `upscaling_factor`.
    pub scale: usize,
    /// The large kernel's side.
    pub kernel_size: usize,
    /// Channels the large kernel convolves, `int(dim · split_ratio)`: the first `pdim`.
    pub pdim: usize,
    /// Element-wise attention (`attn.f.0`) in every block.
    pub use_ea: bool,
    /// A channel-wise layer norm before each block's mixer (`layer_norm`), in place of the
    /// GroupNorm after its refinement (`norm`).
    pub layer_norm: bool,
    /// DySample (`to_img.offset`, `to_img.init_pos`, ...) in place of the pixel shuffle.
    pub dysample: bool,
}

impl RealPlksrParams {
    /// spandrel's `split_ratio`, read back as `pdim / dim`.
    pub fn split_ratio(&self) -> f64 {
        self.pdim as f64 / self.dim as f64
    }

    /// DySample's sampling groups, as RealPLKSR chooses them: 3 for odd scales, else 4.
    pub fn dysample_groups(&self) -> usize {
        if self.scale % 2 == 1 {
            3
        } else {
            4
        }
    }

    /// Whether spandrel lets the model run in f16 (`supports_half`): only with layer norm
    /// (the GroupNorm models overflow); bf16 always.
    pub fn supports_half(&self) -> bool {
        self.layer_norm
    }

    /// Pixels one block reaches beyond its input: the mixer's two 3×3 convs, the large
    /// kernel, EA's 3×3.
    fn block_radius(&self) -> usize {
        2 + self.kernel_size / 2 + usize::from(self.use_ea)
    }
}

impl ArchConfig for RealPlksrParams {
    /// f16 only where spandrel allows it ([`Self::supports_half`]: layer-norm models).
    fn gpu_dtype(&self) -> DType {
        if self.supports_half() {
            DType::F16
        } else {
            DType::F32
        }
    }

    fn scale(&self) -> usize {
        self.scale
    }

    fn in_channels(&self) -> usize {
        3
    }

    fn out_channels(&self) -> usize {
        3
    }

    /// The exact receptive radius up to [`super::config::CONTEXT_CAP`]; DySample samples
    /// about a pixel around each source position (its offsets are bounded by the sigmoid's
    /// 0.5 times the offset conv), counted as 2 more.
    fn context_radius(&self) -> usize {
        context(
            self.n_blocks,
            self.block_radius(),
            if self.dysample { 2 } else { 0 },
        )
    }

    fn describe(&self) -> String {
        format!(
            "RealPLKSR x{} (dim {}, {} blocks, kernel {}, split {}, {}, {}, {})",
            self.scale,
            self.dim,
            self.n_blocks,
            self.kernel_size,
            self.split_ratio(),
            if self.use_ea { "EA" } else { "no EA" },
            if self.layer_norm {
                "layer norm"
            } else {
                "GroupNorm"
            },
            if self.dysample {
                "DySample"
            } else {
                "pixel shuffle"
            },
        )
    }

    /// [`block_floats`] with the output stage: a pixel shuffle's 9·s² (see PLKSR), or
    /// DySample's: its 3·s²-channel input, the offset and scope convs and the offsets
    /// (2·g·s² each, g groups), their shuffled f32 copy and coordinates (about 6 more of
    /// g·s²), the four gathered neighbours and their running sum (3·s² each), the result
    /// and its channel-first copy, and the end conv's output.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let s2 = self.scale * self.scale;
        let tail = if self.dysample {
            let g = self.dysample_groups();
            3 * s2 * 9 + 2 * g * s2 * 3 + 6 * g * s2 + 3 * s2
        } else {
            9 * s2
        };
        let taps = self.kernel_size * self.kernel_size;
        let floats = block_floats(self.dim, self.pdim, taps, self.layer_norm, tail);
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(RealPlksr::new(self, weights)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pretrain() -> RealPlksrParams {
        RealPlksrParams {
            dim: 64,
            n_blocks: 28,
            scale: 4,
            kernel_size: 17,
            pdim: 16,
            use_ea: true,
            layer_norm: false,
            dysample: false,
        }
    }

    #[test]
    fn answers_for_the_published_pretrain() {
        let p = pretrain();
        assert_eq!(p.context_radius(), super::super::config::CONTEXT_CAP);
        let one = RealPlksrParams {
            n_blocks: 1,
            ..pretrain()
        };
        // 2 + 8 + 1 per block, head and tail 2.
        assert_eq!(one.context_radius(), 13);
        let ds = RealPlksrParams {
            dysample: true,
            ..one.clone()
        };
        assert_eq!(ds.context_radius(), 15);
        assert_eq!(ds.dysample_groups(), 4);
        assert_eq!(RealPlksrParams { scale: 3, ..ds }.dysample_groups(), 3);
        // The 17² unfolded 16 channels dominate: 64 + 64 + 32 + 289·16 + 64.
        assert_eq!(
            p.bytes_per_input_pixel(DType::F32),
            4 * (64 + 64 + 32 + 289 * 16 + 64)
        );
        assert!(!p.supports_half());
        assert_eq!(
            p.describe(),
            "RealPLKSR x4 (dim 64, 28 blocks, kernel 17, split 0.25, EA, GroupNorm, pixel \
             shuffle)"
        );
    }
}
