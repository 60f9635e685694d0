//! RGT's hyper-parameters (spandrel 0.4.2 `architectures/RGT/__arch/rgt.py`: `RGT(in_chans,
//! embed_dim, depth, num_heads, mlp_ratio, qkv_bias, upscale, img_range, resi_connection,
//! split_size, c_ratio)`, 64 features before the upsampler) and what tiling and memory
//! planning need of them.

use candle_core::DType;

use super::Rgt;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

/// The reconstruction's width, fixed in the reference (`num_feat = 64`).
pub const NUM_FEAT: usize = 64;
/// The RGB mean subtracted from 3-channel inputs (`rgb_mean`); other inputs subtract 0.
pub const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];
/// `img_range`: not in the weights; every released model uses 1.
pub const IMG_RANGE: f64 = 1.0;
/// The smallest side the reference takes (spandrel's `SizeRequirements(minimum=16)`): RG-SA
/// divides the side by 16 before taking its logarithm. Smaller inputs are padded up to it.
pub const MIN_SIDE: usize = 16;
/// The tile context's floor, in pixels (see [`RgtParams::context_radius`]).
const MIN_CONTEXT: usize = 32;

/// The convolution at the end of each residual group and of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResiConnection {
    /// One 3×3 conv (`conv`, `conv_after_body`).
    OneConv,
    /// 3×3 to dim/4, leaky ReLU 0.2, 1×1, leaky ReLU 0.2, 3×3 back (`conv.0/2/4`).
    ThreeConv,
}

impl ResiConnection {
    /// spandrel's name, `1conv` / `3conv`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneConv => "1conv",
            Self::ThreeConv => "3conv",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RgtParams {
    /// Image channels in and out (`in_chans`).
    pub in_chans: usize,
    pub embed_dim: usize,
    /// Blocks per residual group; blocks alternate Rwin-SA (even) and RG-SA (odd).
    pub depth: Vec<usize>,
    /// Heads per residual group: RG-SA's; each Rwin-SA branch has half.
    pub num_heads: Vec<usize>,
    /// `fc1.out / fc1.in` as spandrel reads it; the MLP is `int(embed_dim · mlp_ratio)` wide.
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub upscale: usize,
    pub resi_connection: ResiConnection,
    /// The rectangle window `[split_size[0], split_size[1]]` (height × width in the first
    /// Rwin-SA branch, transposed in the second).
    pub split_size: [usize; 2],
    /// RG-SA's channel reduction as spandrel reads it (`conv.out / conv.in`, 0.5 where no
    /// group has an RG-SA block); its width is `int(embed_dim · c_ratio)`.
    pub c_ratio: f64,
}

impl RgtParams {
    /// The MLP's hidden width, `int(dim · mlp_ratio)` as the reference computes it.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// RG-SA's reduced width `cr`, `int(dim · c_ratio)` as the reference computes it.
    pub fn reduced_dim(&self) -> usize {
        (self.embed_dim as f64 * self.c_ratio) as usize
    }

    /// Tokens per window.
    pub fn window_tokens(&self) -> usize {
        self.split_size[0] * self.split_size[1]
    }
}

impl ArchConfig for RgtParams {
    fn scale(&self) -> usize {
        self.upscale
    }

    fn in_channels(&self) -> usize {
        self.in_chans
    }

    fn out_channels(&self) -> usize {
        self.in_chans
    }

    /// Any size: the reference pads nothing before the network (sides below 16 aside, which
    /// the network pads itself); each Rwin-SA block zero-pads its q, k, v to a multiple of the
    /// longer window side and crops its output, as the reference does.
    fn input_size(&self) -> InputSize {
        InputSize::ANY
    }

    /// Two long window sides (64 pixels for RGT's 8 × 32 windows), at least 32. No overlap
    /// makes tiles exact: every RG-SA block attends from each pixel to a 16×-reduced copy of
    /// the whole input it is given, and the window grid starts at each tile's corner. Two long
    /// sides keep every kept pixel's own windows, shifted or not and in both orientations,
    /// inside its tile; what is left is RG-SA's summary of the rest of the tile. Measured with
    /// random weights (tests/zoo_rgt.rs `measure_context`, a 16² centre against the whole
    /// 144 × 120 mosaic): the tiny model's outputs move by 9e-2 of their range with 32 pixels
    /// of context, 3e-2 with 48; random-weight RGT-S mixes globally in all 18 RG-SA blocks
    /// (1e0 at any context), which trained weights are not known to do. Tiles blended with
    /// this overlap stay within 7e-2 of the whole image on the tiny model.
    fn context_radius(&self) -> usize {
        (2 * self.split_size[0].max(self.split_size[1])).max(MIN_CONTEXT)
    }

    fn describe(&self) -> String {
        let depth: Vec<String> = self.depth.iter().map(|d| d.to_string()).collect();
        format!(
            "RGT x{} (dim {}, depths [{}], heads {:?}, window {}x{}, mlp ratio {}, c ratio {}, {})",
            self.upscale,
            self.embed_dim,
            depth.join(", "),
            self.num_heads,
            self.split_size[0],
            self.split_size[1],
            self.mlp_ratio,
            self.c_ratio,
            self.resi_connection.name()
        )
    }

    /// Peak live maps per input pixel. Throughout the body: the shallow features, the
    /// residual group's input and the block's input (3·dim). In a Rwin-SA block: its norm,
    /// the qkv projection (3·dim), the first branch's output (dim / 2), the second branch's
    /// gathered q, k, v (3·dim / 2) and a chunk of scores, biased scores and probabilities
    /// ([`SCORE_FLOATS_PER_PIXEL`] each; RG-SA's chunks are bounded the same way). In the
    /// MLP: the attention's output, the skip, the norm, fc1's output (hidden), the gate's norm
    /// and output (hidden / 2 each) and fc2's output. The reconstruction, as RRDBNet counts
    /// it: 64 channels at up to scale² pixels twice (a conv's input and output) plus a conv's
    /// unfolded input (9 × 64) where candle convolves by im2col. Tiles much larger than the
    /// window are assumed (the zero padding to a multiple of the long side adds its share).
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let d = self.embed_dim;
        let window = 6 * d + 3 * SCORE_FLOATS_PER_PIXEL;
        let mlp = 4 * d + 2 * self.mlp_hidden();
        let body = 3 * d + window.max(mlp);
        let tail = 11 * NUM_FEAT * (self.upscale * self.upscale).max(1);
        body.max(tail) * dtype.size_in_bytes()
    }

    /// f32: spandrel marks RGT `supports_half = False` (unverified there, so not risked).
    fn gpu_dtype(&self) -> DType {
        DType::F32
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Rgt::new(self, weights)?))
    }
}

/// Score values per input pixel that one chunk of the attention may hold (scores, biased
/// scores, probabilities: three such tensors at most are alive). The window attention and
/// RG-SA work through their windows / queries in chunks of at most this many scores per
/// pixel of the input (at least one window: heads · window² values), so the estimate holds
/// whatever the window and the head count.
pub(crate) const SCORE_FLOATS_PER_PIXEL: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_widths_truncate_as_the_reference() {
        let p = RgtParams {
            in_chans: 3,
            embed_dim: 180,
            depth: vec![6; 6],
            num_heads: vec![6; 6],
            mlp_ratio: 2.0,
            qkv_bias: true,
            upscale: 2,
            resi_connection: ResiConnection::OneConv,
            split_size: [8, 32],
            c_ratio: 0.5,
        };
        assert_eq!((p.mlp_hidden(), p.reduced_dim()), (360, 90));
        assert_eq!(p.context_radius(), 64);
        assert!(
            p.describe().starts_with("RGT x2 (dim 180"),
            "{}",
            p.describe()
        );
        assert_eq!(p.gpu_dtype(), DType::F32);
        // x2: the reconstruction (11 · 64 · 4 floats) outweighs the body (3 · 180 + 6 · 180
        // + 384).
        assert_eq!(p.bytes_per_input_pixel(DType::F32), 4 * 2816);
        let wide = RgtParams {
            embed_dim: 360,
            upscale: 1,
            ..p.clone()
        };
        // x1 at width 360: the MLP (4 · 360 + 2 · 720) over the skip maps (3 · 360).
        assert_eq!(
            wide.bytes_per_input_pixel(DType::F16),
            2 * (3 * 360 + 4 * 360 + 2 * 720)
        );
        // 63 / 64: int(64 · 0.984375) = 63.
        let q = RgtParams {
            embed_dim: 64,
            mlp_ratio: 63.0 / 64.0,
            ..p
        };
        assert_eq!(q.mlp_hidden(), 63);
    }
}
