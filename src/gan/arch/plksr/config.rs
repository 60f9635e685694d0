//! PLKSR's hyper-parameters (spandrel 0.4.2 `architectures/PLKSR/__arch/PLKSR.py`:
//! `PLKSR(dim, n_blocks, upscaling_factor, ccm_type, kernel_size, split_ratio, lk_type,
//! use_ea)`; `with_idt`, `use_max_kernel` and the sparse kernels / dilations are not in the
//! weights and spandrel fixes them to their defaults) and what tiling and memory planning need
//! of them. The receptive-radius and memory arithmetic RealPLKSR shares lives here too.

use candle_core::DType;

use super::Plksr;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

/// The block's channel mixer (`channe_mixer`): two convolutions around a GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcmType {
    /// 3×3 (dim → 2·dim), GELU, 1×1 (2·dim → dim).
    Ccm,
    /// 1×1, GELU, 3×3 ("inverted").
    Iccm,
    /// 3×3, GELU, 3×3 ("doubled"; the official PLKSR models).
    Dccm,
}

impl CcmType {
    /// spandrel's name: `CCM`, `ICCM` or `DCCM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ccm => "CCM",
            Self::Iccm => "ICCM",
            Self::Dccm => "DCCM",
        }
    }

    /// Kernel sides of the mixer's first and second convolutions (`channe_mixer.0` / `.2`).
    pub fn kernels(self) -> (usize, usize) {
        match self {
            Self::Ccm => (3, 1),
            Self::Iccm => (1, 3),
            Self::Dccm => (3, 3),
        }
    }
}

/// The block's large-kernel convolution (`lk`) over the first `pdim` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LkType {
    /// One `kernel_size`² convolution (`lk.conv`; the official models).
    Plk,
    /// Four 5×5 convolutions dilated 1, 2, 3, 4, summed (`lk.convs.0-3`, RepLKNet style).
    SparsePlk,
    /// m×n, n×m and n×n convolutions summed, m = `kernel_size`, n = m / 3 (`lk.mn_conv`,
    /// `lk.nm_conv`, `lk.nn_conv`, SLaK style).
    RectSparsePlk,
}

impl LkType {
    /// spandrel's name: `PLK`, `SparsePLK` or `RectSparsePLK`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plk => "PLK",
            Self::SparsePlk => "SparsePLK",
            Self::RectSparsePlk => "RectSparsePLK",
        }
    }
}

/// SparsePLK's kernels and dilations: not in the weights; spandrel builds these defaults.
pub(crate) const SPARSE_KERNEL: usize = 5;
pub(crate) const SPARSE_DILATIONS: [usize; 4] = [1, 2, 3, 4];
/// The `kernel_size` spandrel reports for SparsePLK, whose weights do not hold one (its
/// default; it only sizes the `use_max_kernel` conv, which spandrel never builds).
pub(crate) const SPARSE_REPORTED_KERNEL: usize = 17;

#[derive(Debug, Clone, PartialEq)]
pub struct PlksrParams {
    pub dim: usize,
    pub n_blocks: usize,
    /// `upscaling_factor`.
    pub scale: usize,
    pub ccm_type: CcmType,
    pub lk_type: LkType,
    /// spandrel's `kernel_size`: the PLK kernel's side, RectSparsePLK's long side, and for
    /// SparsePLK the default 17 spandrel reports.
    pub kernel_size: usize,
    /// Channels the large kernel convolves, `int(dim · split_ratio)`: the first `pdim`.
    pub pdim: usize,
    /// Element-wise attention (`attn.f.0`) in every block.
    pub use_ea: bool,
}

impl PlksrParams {
    /// spandrel's `split_ratio`, read back as `pdim / dim`.
    pub fn split_ratio(&self) -> f64 {
        self.pdim as f64 / self.dim as f64
    }

    /// Whether spandrel lets the model run in f16 (`supports_half`): PLKSR always does.
    pub fn supports_half(&self) -> bool {
        true
    }

    /// Pixels one block reaches beyond its input: the mixer's convs, the large kernel, EA's 3×3.
    fn block_radius(&self) -> usize {
        let (k0, k1) = self.ccm_type.kernels();
        let lk = match self.lk_type {
            LkType::Plk | LkType::RectSparsePlk => self.kernel_size / 2,
            LkType::SparsePlk => (SPARSE_KERNEL / 2) * SPARSE_DILATIONS[3],
        };
        k0 / 2 + k1 / 2 + lk + usize::from(self.use_ea)
    }

    /// Taps of the widest large-kernel convolution (its unfolded input on the GPU).
    fn lk_taps(&self) -> usize {
        match self.lk_type {
            LkType::Plk => self.kernel_size * self.kernel_size,
            LkType::SparsePlk => SPARSE_KERNEL * SPARSE_KERNEL,
            LkType::RectSparsePlk => self.kernel_size * (self.kernel_size / 3),
        }
    }
}

/// The tile context both networks use: the exact receptive radius (head and tail 3×3 convs,
/// `block_radius` per block, `extra` for an output stage that reads further) up to
/// [`CONTEXT_CAP`].
pub(crate) fn context(n_blocks: usize, block_radius: usize, extra: usize) -> usize {
    let exact = n_blocks
        .saturating_mul(block_radius)
        .saturating_add(2 + extra);
    exact.min(CONTEXT_CAP)
}

/// Tile context for deep models. A 28-block, kernel-17 model reaches 300+ pixels in theory;
/// as for RRDBNet (hundreds of pixels in theory, 16 of context in practice) the effective
/// reach of a trained network is a small share of that. 32 pixels is about three blocks'
/// full reach at kernel 17, twice RRDBNet's context, and keeps the overlap of a 256-pixel
/// tile at 1.56× its area. Models shallower than that get their exact radius, so that
/// tiled and whole-image outputs agree (up to RealPLKSR's GroupNorm, which normalises each
/// tile with its own statistics, as it does in spandrel when chaiNNer tiles).
pub(crate) const CONTEXT_CAP: usize = 32;

/// Peak activations per input pixel, in floats, of one block and the network around it:
/// the block input kept for the residual (`dim`) plus the widest of
/// - the mixer's activation: its input and output, 2·dim each (4·dim), plus a layer norm's
///   output kept beside them (`dim` when `layer_norm`);
/// - the mixer's second conv: its 2·dim input, unfolded 9× where the device's conv does so
///   (candle's CUDA / Metal im2col; the CPU pads a copy instead), and its dim output;
/// - the large kernel: the mixer's output (dim), the sliced channels and the conv's output
///   (pdim each), the unfolded input (`lk_taps`·pdim) and the re-assembled map (dim);
/// - EA: its gate and product (dim each) beside the attended map (dim);
///
/// and `tail` for the output stage (the last conv, the repeated input, the shuffled output).
pub(crate) fn block_floats(
    dim: usize,
    pdim: usize,
    lk_taps: usize,
    layer_norm: bool,
    tail: usize,
) -> usize {
    let ln = if layer_norm { dim } else { 0 };
    let mixer = 4 * dim + ln;
    let second_conv = 2 * dim * 9 + dim;
    let large_kernel = dim + 2 * pdim + lk_taps * pdim + dim;
    let ea = 3 * dim;
    let block = dim + mixer.max(second_conv).max(large_kernel).max(ea);
    block.max(dim + tail)
}

impl ArchConfig for PlksrParams {
    fn scale(&self) -> usize {
        self.scale
    }

    fn in_channels(&self) -> usize {
        3
    }

    fn out_channels(&self) -> usize {
        3
    }

    /// The exact receptive radius up to [`CONTEXT_CAP`] (see there).
    fn context_radius(&self) -> usize {
        context(self.n_blocks, self.block_radius(), 0)
    }

    fn describe(&self) -> String {
        format!(
            "PLKSR x{} (dim {}, {} blocks, {}, {} kernel {}, split {}, {})",
            self.scale,
            self.dim,
            self.n_blocks,
            self.ccm_type.name(),
            self.lk_type.name(),
            self.kernel_size,
            self.split_ratio(),
            if self.use_ea { "EA" } else { "no EA" },
        )
    }

    /// [`block_floats`] with a pixel-shuffle tail: the last conv's 3·s² output, the shuffled
    /// output (3·s²) and, off the CPU, the repeated input (3·s²).
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let s2 = self.scale * self.scale;
        let floats = block_floats(self.dim, self.pdim, self.lk_taps(), false, 9 * s2);
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Plksr::new(self, weights)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PlksrParams {
        PlksrParams {
            dim: 64,
            n_blocks: 12,
            scale: 4,
            ccm_type: CcmType::Dccm,
            lk_type: LkType::Plk,
            kernel_size: 13,
            pdim: 16,
            use_ea: false,
        }
    }

    #[test]
    fn context_is_the_receptive_radius_up_to_the_cap() {
        let one = PlksrParams {
            n_blocks: 1,
            ..tiny()
        };
        // DCCM 1 + 1, kernel 13: 6, head and tail: 2.
        assert_eq!(one.context_radius(), 10);
        assert_eq!(tiny().context_radius(), CONTEXT_CAP);
        let sparse = PlksrParams {
            n_blocks: 1,
            ccm_type: CcmType::Ccm,
            lk_type: LkType::SparsePlk,
            use_ea: true,
            ..tiny()
        };
        // CCM 1, dilation-4 5×5: 8, EA: 1, head and tail: 2.
        assert_eq!(sparse.context_radius(), 12);
    }

    #[test]
    fn memory_counts_the_unfolded_large_kernel() {
        // PLKSR-tiny: the 13² unfolded 16 channels (2704) dominate the 2·64·9 mixer unfold.
        let p = tiny();
        let floats = 64 + 64 + 32 + 169 * 16 + 64;
        assert_eq!(p.bytes_per_input_pixel(DType::F32), 4 * floats);
        assert_eq!(p.bytes_per_input_pixel(DType::F16), 2 * floats);
        assert!(p
            .describe()
            .starts_with("PLKSR x4 (dim 64, 12 blocks, DCCM, PLK kernel 13, split 0.25, no EA)"));
        assert_eq!(p.split_ratio(), 0.25);
    }
}
