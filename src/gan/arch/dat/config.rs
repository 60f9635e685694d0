//! DAT's hyper-parameters (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`, `DAT(img_size,
//! in_chans, embed_dim, split_size, depth, num_heads, expansion_factor, qkv_bias, upscale,
//! img_range, resi_connection, upsampler)`), the published presets they make, and what tiling
//! and memory planning need of them.

use candle_core::DType;

use super::net::Dat;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputSize, SrNet, Weights};

/// The convolutions closing each residual group and the body (`resi_connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResiConnection {
    /// One 3×3 convolution (`"1conv"`).
    OneConv,
    /// 3×3 to a quarter of the channels, 1×1, 3×3 back, leaky ReLU 0.2 between (`"3conv"`).
    ThreeConv,
}

impl ResiConnection {
    /// spandrel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneConv => "1conv",
            Self::ThreeConv => "3conv",
        }
    }
}

/// The reconstruction at the end of the network (`upsampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatUpsampler {
    /// A 3×3 conv to `num_feat`, leaky ReLU, ×2 (or one ×3) conv + pixel-shuffle steps, a 3×3
    /// conv to the image (`"pixelshuffle"`, the classical-SR models).
    PixelShuffle,
    /// One 3×3 conv to scale² · channels and a pixel shuffle (`"pixelshuffledirect"`,
    /// DAT-light).
    PixelShuffleDirect,
}

impl DatUpsampler {
    /// spandrel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PixelShuffle => "pixelshuffle",
            Self::PixelShuffleDirect => "pixelshuffledirect",
        }
    }
}

/// DAT's hyper-parameters, as spandrel's `DATArch.load` reads them from a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct DatParams {
    /// Image channels in and out (`in_chans`; DAT's output has as many).
    pub in_channels: usize,
    /// Token width of the whole body (`embed_dim`).
    pub embed_dim: usize,
    /// Blocks per residual group (`depth`); blocks alternate spatial-window (even index) and
    /// channel (odd index) attention.
    pub depth: Vec<usize>,
    /// Attention heads per residual group (`num_heads`); a spatial block gives half of them to
    /// each window orientation.
    pub num_heads: Vec<usize>,
    /// The window, rows × columns, of the first orientation (`split_size`); the second
    /// orientation uses it transposed.
    pub split_size: [usize; 2],
    /// `expansion_factor` as spandrel reads it: the SGFN hidden width over `embed_dim`.
    pub expansion_factor: f64,
    /// The SGFN hidden width, `int(embed_dim · expansion_factor)`.
    pub ffn_hidden: usize,
    /// Whether the q, k, v projections have a bias (`qkv_bias`).
    pub qkv_bias: bool,
    pub resi_connection: ResiConnection,
    pub upsampler: DatUpsampler,
    /// Width of the pixel-shuffle reconstruction (DAT fixes it at 64; `embed_dim` for
    /// `pixelshuffledirect`), as spandrel reports it.
    pub num_feat: usize,
    /// Output pixels per input pixel (`upscale`).
    pub upscale: usize,
    /// `img_range`: not stored in the weights; spandrel always uses 1.
    pub img_range: f64,
    /// The training patch size the stored shift masks were made for (`img_size`; 64 when the
    /// file holds no mask). Informational: the masks are rebuilt for every input size.
    pub img_size: usize,
}

/// The RGB mean DAT subtracts from a 3-channel input (and adds back to its output).
pub(super) const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];

impl DatParams {
    /// Number of residual groups.
    pub fn num_layers(&self) -> usize {
        self.depth.len()
    }

    /// The published configuration these parameters are, if any (the DAT repository's
    /// options: DAT-light, DAT-S, DAT, DAT-2), whatever the scale.
    pub fn preset(&self) -> Option<&'static str> {
        let six = |v: &[usize]| v == [6; 6];
        let classical = self.embed_dim == 180
            && six(&self.depth)
            && six(&self.num_heads)
            && self.resi_connection == ResiConnection::OneConv
            && self.upsampler == DatUpsampler::PixelShuffle;
        match (self.split_size, self.ffn_hidden) {
            ([8, 32], 120)
                if self.embed_dim == 60
                    && self.depth == [18]
                    && self.num_heads == [6]
                    && self.resi_connection == ResiConnection::ThreeConv
                    && self.upsampler == DatUpsampler::PixelShuffleDirect =>
            {
                Some("DAT-light")
            }
            ([8, 16], 360) if classical => Some("DAT-S"),
            ([8, 32], 720) if classical => Some("DAT"),
            ([8, 32], 360) if classical => Some("DAT-2"),
            _ => None,
        }
    }

    /// spandrel's size tag: `light` under 4 groups, `small` for 8×16 windows, else `medium`.
    pub fn size_tag(&self) -> &'static str {
        if self.depth.len() < 4 {
            "light"
        } else if self.split_size == [8, 16] {
            "small"
        } else {
            "medium"
        }
    }

    /// The side the spatial attention pads its q, k, v to a multiple of: the larger split.
    pub fn window_multiple(&self) -> usize {
        self.split_size[0].max(self.split_size[1])
    }

    /// Tokens in one attention window.
    pub fn window_tokens(&self) -> usize {
        self.split_size[0] * self.split_size[1]
    }

    /// Whether block `b_idx` of group `rg_idx` attends in shifted windows (only the spatial,
    /// even-index blocks attend in windows): `Adaptive_Spatial_Attention`'s rule.
    pub fn shifted(rg_idx: usize, b_idx: usize) -> bool {
        (rg_idx % 2 == 0 && b_idx % 4 == 2) || (rg_idx % 2 == 1 && b_idx % 4 == 0)
    }
}

impl ArchConfig for DatParams {
    /// f32: spandrel marks it `supports_half = False` (its attention overflows f16).
    fn gpu_dtype(&self) -> DType {
        DType::F32
    }

    /// Tiles start on the window grid (the longer side of the split windows): DAT pads its
    /// attention, not the image, so a whole image needs no multiple, but tiles cut off the grid
    /// would see windows the whole image does not.
    fn tile_alignment(&self) -> usize {
        self.split_size[0].max(self.split_size[1])
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

    /// Any size: as in the reference, the spatial attention zero-pads its q, k and v (after
    /// the projection) to a multiple of the larger split size inside the network and crops
    /// its output back; the image itself is never padded. (A multiple here would make the
    /// tiler reflect-pad the image, which changes the output near the bottom and right edges;
    /// it would also put tile origins on the window grid, which tiled output wants: see
    /// [`Self::context_radius`].)
    fn input_size(&self) -> InputSize {
        InputSize::ANY
    }

    /// DAT has no finite receptive radius: its channel attention and the interaction
    /// module's average pool see the whole tile, and the shifted windows chain across up to
    /// 18 blocks. The radius given is the one past which a tile's edge stops mattering: the
    /// longer window side (at least 16). Measured on DAT-light with random weights (crops of a
    /// photo mosaic against the whole): an output pixel 16 input pixels inside a crop differs
    /// by up to 0.19, 24 pixels inside by 0.06, 32 by 0.04, which is the floor the whole-tile
    /// terms leave; the blend discards exactly `radius` pixels at each inner tile edge.
    /// Tiled against whole-image output on a 288×224 mosaic: max 1.6e-2, mean 8.5e-4 for
    /// DAT-light in 192-pixel tiles that start on the 32-pixel window grid; tiles off the grid
    /// cut the windows differently from the whole image (max 0.95, mean 0.05 with random
    /// weights; trained models are far less sensitive to where windows fall).
    /// `tests/zoo_dat.rs` checks the same on the tiny model.
    fn context_radius(&self) -> usize {
        self.window_multiple().max(16)
    }

    fn describe(&self) -> String {
        let preset = self.preset().map_or_else(String::new, |p| format!("{p}: "));
        format!(
            "DAT x{} ({preset}embed {}, depth {:?}, heads {:?}, split {}x{}, ffn {} (x{}), {}, \
             {}{}, {}→{} channels)",
            self.upscale,
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.split_size[0],
            self.split_size[1],
            self.ffn_hidden,
            self.expansion_factor,
            self.resi_connection.name(),
            self.upsampler.name(),
            if self.qkv_bias { "" } else { ", no qkv bias" },
            self.in_channels,
            self.in_channels,
        )
    }

    /// The widest moment of the body is a spatial block's attention (per input pixel, in
    /// elements): the residual stream, its norm, the q, k, v projection, the conv branch's
    /// input and output (7 C); the zero-padded q, k, v (3 C); one orientation's rolled and
    /// window-partitioned q, k, v (2 · 3 C/2); the window outputs (3 · C/2); and the window
    /// scores with their softmax (2 · heads/2 · window tokens: every token scores every token
    /// of its window, per head), which dominate. Padding to the window multiple adds a
    /// fraction of that for small tiles. A 3×3 conv of the body holds its input, its 9-tap
    /// unfolding and its output (11 C); the SGFN C + 2.5 hidden. The reconstruction counts at
    /// the output resolution as RRDBNet's tail does: pixel-shuffle a 64-wide map twice and a
    /// conv's unfolding (11 · 64 per output pixel); pixel-shuffle-direct one conv at the input
    /// resolution (11 C) and the image twice. Measured peak over the weights, DAT-light at
    /// 128² in f32: 9.9 KB per input pixel with all scores at once (the estimate, 10.0 KB, is
    /// that path's: other devices), 5.5 KB on the CPU, which holds only the scores of the
    /// chunks in flight.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let c = self.embed_dim;
        let heads = self.num_heads.iter().copied().max().unwrap_or(2) / 2;
        let attention = 15 * c + 2 * heads * self.window_tokens();
        let conv = 11 * c;
        let ffn = 2 * c + 5 * self.ffn_hidden / 2;
        let s2 = self.upscale * self.upscale;
        let tail = match self.upsampler {
            DatUpsampler::PixelShuffle => 11 * self.num_feat * s2,
            DatUpsampler::PixelShuffleDirect => 11 * c + 2 * self.in_channels * s2,
        };
        // The body's input features (the long skip around it) stay alive throughout.
        let floats = c + attention.max(conv).max(ffn).max(tail);
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Dat::new(self, weights)?))
    }
}
