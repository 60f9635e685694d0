//! DRCT's hyper-parameters (spandrel 0.4.2 `architectures/DRCT/__arch/drct_arch.py`,
//! `DRCT(img_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias,
//! ape, patch_norm, upscale, img_range, upsampler, resi_connection, gc)`), the sizes of each
//! group's five blocks they imply, and what tiling and memory planning need of them.

use candle_core::DType;

use super::Drct;
use crate::error::Result;
use crate::gan::arch::swin::geometry::block_shift;
use crate::gan::arch::swin::{BlockDims, Upsampler};
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

/// The multiple spandrel pads DRCT's input to (`SizeRequirements(multiple_of=16)`), whatever
/// the window.
pub const SPANDREL_MULTIPLE: usize = 16;

/// The convolution closing the body (`resi_connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrctResi {
    /// One 3×3 convolution (`"1conv"`).
    OneConv,
    /// None (`"identity"`): the body's features are added as they are.
    Identity,
}

impl DrctResi {
    /// spandrel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneConv => "1conv",
            Self::Identity => "identity",
        }
    }
}

/// DRCT's hyper-parameters, as spandrel's `DRCTArch.load` reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct DrctParams {
    /// Image channels in and out (`in_chans`).
    pub in_channels: usize,
    pub embed_dim: usize,
    /// Per group, as spandrel reports them: always 6 (unused by the network: a group has
    /// five blocks).
    pub depths: Vec<usize>,
    /// Heads per group (of its first block; the later, wider blocks drop heads until they
    /// divide their width).
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    /// The first block's MLP width, `int(embed_dim · mlp_ratio)`.
    pub mlp_hidden: usize,
    /// Channels each block adds to the dense concatenation (`gc`).
    pub gc: usize,
    /// The training size: blocks 2 and 4 shift only when it is above the window.
    pub img_size: usize,
    /// Not in the weights; spandrel uses 1.
    pub img_range: f64,
    /// `PixelShuffle` (classical SR) or `None` (spandrel's `""`: the network returns its
    /// input).
    pub upsampler: Upsampler,
    pub resi_connection: DrctResi,
    /// The tail's factor (`upscale`; 1 without upsampler).
    pub upscale: usize,
    /// The tail's width: DRCT hard-codes 64.
    pub num_feat: usize,
    pub qkv_bias: bool,
    /// A LayerNorm after the patch embedding (`patch_embed.norm`).
    pub patch_norm: bool,
    /// An absolute position embedding (`absolute_pos_embed`, img_size² tokens): inputs must
    /// then be img_size square once padded.
    pub ape: bool,
}

impl DrctParams {
    /// spandrel's `mlp_ratio`: the first block's MLP width over embed_dim.
    pub fn mlp_ratio(&self) -> f64 {
        self.mlp_hidden as f64 / self.embed_dim as f64
    }

    /// spandrel's tags: `large` from 10 groups, `s{img_size}w{window}`, `{embed}dim`, the
    /// residual connection.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = Vec::with_capacity(4);
        if self.depths.len() >= 10 {
            tags.push("large".to_string());
        }
        tags.push(format!("s{}w{}", self.img_size, self.window_size));
        tags.push(format!("{}dim", self.embed_dim));
        tags.push(self.resi_connection.name().to_string());
        tags
    }

    /// The five blocks of group `layer`: widths embed + k·gc, heads cut by width mod heads,
    /// MLP ratio `mlp_ratio` for the first three and 1 for the last two, blocks 2 and 4 shifted.
    pub fn block_dims(&self, layer: usize) -> [BlockDims; 5] {
        let heads = self.num_heads.get(layer).copied().unwrap_or(1).max(1);
        let ratio = self.mlp_ratio();
        std::array::from_fn(|k| {
            let dim = self.embed_dim + k * self.gc;
            BlockDims {
                dim,
                heads: heads - dim % heads,
                window: self.window_size,
                shift: block_shift(k, self.window_size, self.img_size),
                // Python's int(dim * mlp_ratio), in the same double arithmetic.
                hidden: if k < 3 {
                    (dim as f64 * ratio) as usize
                } else {
                    dim
                },
            }
        })
    }

    /// The side inputs are padded to a multiple of: spandrel's 16, and the window (16, 8 or 4
    /// in every model, so 16).
    pub fn multiple(&self) -> usize {
        let w = self.window_size.max(1);
        let gcd = (1..=w.min(SPANDREL_MULTIPLE))
            .rev()
            .find(|d| w % d == 0 && SPANDREL_MULTIPLE % d == 0)
            .unwrap_or(1);
        SPANDREL_MULTIPLE / gcd * w
    }
}

impl ArchConfig for DrctParams {
    /// f32: spandrel marks DRCT `supports_half = False` (bf16 allowed).
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

    /// The network itself does not pad (its window partition needs multiples of the window);
    /// spandrel's `pad_tensor` brings the input to a multiple of 16, reflecting up to side − 1
    /// pixels and replicating the rest, and crops the output.
    fn input_size(&self) -> InputSize {
        InputSize::reflect_to(self.multiple())
    }

    /// The multiple again: sides below it are padded up to it first by spandrel's rule (the
    /// reflection capped at side − 1, then replication), which a plain reflect-pad to the
    /// multiple would not do for sides under half of it.
    fn min_input_side(&self) -> usize {
        self.multiple()
    }

    /// As SwinIR (the same shifted windows, chained over five blocks per group, so the
    /// theoretical radius is hundreds of pixels): two windows plus the 3×3 convolutions'
    /// pixels, 36 for window 16 (a 96-pixel overlap). Measured on the window-16 fixture
    /// (`tests/zoo_drct.rs`, random weights, 288×208, blended tiles against the whole image):
    /// context window + 4 (tiles of 112) left seams of 4.1e-4, 1.5 windows + 4 (tiles of 160)
    /// 1.9e-5, 2 windows + 4 (tiles of 192) 1.8e-5. The larger is kept: released DRCTs chain
    /// 30 to 60 blocks, against this fixture's 10.
    fn context_radius(&self) -> usize {
        2 * self.window_size + 4
    }

    fn describe(&self) -> String {
        format!(
            "DRCT x{} (embed {}, {} groups, heads {:?}, window {}, gc {}, mlp ratio {}, {}, {}, \
             s{}w{}{}{}{}, {} channels)",
            self.upscale,
            self.embed_dim,
            self.num_heads.len(),
            self.num_heads,
            self.window_size,
            self.gc,
            self.mlp_ratio(),
            match self.upsampler {
                Upsampler::None => "no upsampler",
                other => other.name(),
            },
            self.resi_connection.name(),
            self.img_size,
            self.window_size,
            if self.qkv_bias { "" } else { ", no qkv bias" },
            if self.patch_norm {
                ""
            } else {
                ", no patch norm"
            },
            if self.ape { ", ape" } else { "" },
            self.in_channels,
        )
    }

    /// Per input pixel (one token) at a group's peak, in the last block: the group input and
    /// four gc-wide outputs, their concatenation (width d = embed + 4·gc), the block's norm,
    /// qkv (3d), attention output, residual sum and MLP hidden layer, the tensor-op path's q,
    /// k, v copies (3d) and two score tensors of heads · window² per token; the 3×3 convs'
    /// unfolded input (9·embed). The tail holds num_feat channels at up to scale² pixels a few
    /// times, as SwinIR's.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let c = self.embed_dim;
        let d = c + 4 * self.gc;
        let n = self.window_size * self.window_size;
        let heads = self.num_heads.iter().copied().max().unwrap_or(1);
        let body = 2 * d + 10 * d + self.mlp_hidden.max(d) + 2 * heads * n + 9 * c + 2 * c;
        let tail = match self.upsampler {
            Upsampler::None => 3 * self.in_channels,
            _ => 11 * self.num_feat * (self.upscale * self.upscale).max(1),
        };
        (body + tail) * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Drct::new(self, weights)?))
    }
}
