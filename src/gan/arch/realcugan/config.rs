//! Real-CUGAN's hyper-parameters (spandrel 0.4.2 `architectures/RealCUGAN/__init__.py`: the
//! class `UpCunet2x` / `UpCunet3x` / `UpCunet4x` / `UpCunet2x_fast`, `in_channels`,
//! `out_channels`, `pro`), plus whether the squeeze-and-excitation blocks are there (every
//! PyTorch release has them; realcugan-ncnn-vulkan's `models-nose` model does not), and what
//! tiling and memory planning need of them.

use candle_core::DType;

use super::RealCugan;
use crate::error::Result;
use crate::gan::arch::{ArchConfig, InputPadding, InputSize, SrNet, Weights};

/// Which of spandrel's four Real-CUGAN classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `UpCunet2x`: UNet1 (×2 transposed conv) then UNet2, both on the image channels.
    Up2x,
    /// `UpCunet3x`: as ×2 with UNet1x3's ×3 transposed conv.
    Up3x,
    /// `UpCunet4x`: UNet1 and UNet2 on 64 features, a conv and a ×2 pixel shuffle, plus the
    /// nearest ×4 input.
    Up4x,
    /// `UpCunet2x_fast`: the ×4 network on the pixel-unshuffled input, plus the nearest ×2
    /// input.
    Up2xFast,
}

impl Variant {
    /// Output pixels per input pixel.
    pub fn scale(self) -> usize {
        match self {
            Self::Up2x | Self::Up2xFast => 2,
            Self::Up3x => 3,
            Self::Up4x => 4,
        }
    }

    /// spandrel's class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Up2x => "UpCunet2x",
            Self::Up3x => "UpCunet3x",
            Self::Up4x => "UpCunet4x",
            Self::Up2xFast => "UpCunet2x_fast",
        }
    }

    /// The reflect padding the module adds on every side, and the multiple it brings the
    /// bottom and right up to (the levels of its U-Nets need even sizes, ×3's a multiple of 4).
    pub(super) fn padding(self) -> (usize, usize) {
        match self {
            Self::Up2x => (18, 2),
            Self::Up3x => (14, 4),
            Self::Up4x => (19, 2),
            Self::Up2xFast => (38, 2),
        }
    }

    /// spandrel's `SizeRequirements(minimum, multiple_of)`: inputs are padded up to them.
    pub(super) fn size_requirements(self) -> (usize, usize) {
        match self {
            Self::Up2xFast => (40, 4),
            _ => (32, 1),
        }
    }

    /// Input pixels whose values reach an output pixel through the convolutions (measured on
    /// spandrel's modules with the squeeze-and-excitation removed: perturbing one input pixel
    /// at a time, autograd on float64).
    fn receptive_radius(self) -> usize {
        match self {
            Self::Up2x => 19,
            Self::Up3x => 15,
            Self::Up4x => 20,
            Self::Up2xFast => 38,
        }
    }

    /// Pixels of UNet2's input per input pixel.
    fn unet2_pixels(self) -> usize {
        match self {
            Self::Up2x | Self::Up4x => 4,
            Self::Up3x => 9,
            Self::Up2xFast => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealCuganParams {
    pub variant: Variant,
    pub in_channels: usize,
    pub out_channels: usize,
    /// The pro models map the input to `x·0.7 + 0.15` and the output back; spandrel tells
    /// them by their `pro` tensor.
    pub pro: bool,
    /// Squeeze-and-excitation after UNet1's conv2 and UNet2's conv2–conv4.
    pub se: bool,
}

impl RealCuganParams {
    /// UNet1's output channels: the image's for ×2 / ×3, 64 features for ×4 / fast.
    pub(super) fn unet1_out(&self) -> usize {
        match self.variant {
            Variant::Up2x | Variant::Up3x => self.out_channels,
            Variant::Up4x | Variant::Up2xFast => 64,
        }
    }
}

impl ArchConfig for RealCuganParams {
    fn scale(&self) -> usize {
        self.variant.scale()
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The network pads inside its `forward` (`net.rs`), exactly as spandrel does, so it
    /// takes any size; the multiple is the one its levels need (2; 4 for ×3, whose UNet2 runs
    /// at ×3, and for the fast model, which pixel-unshuffles first: spandrel's
    /// `multiple_of=4`). It is also the shift under which the network is equivariant (its
    /// stride-2 levels), so tiles start on it: off it they would be computed on another grid
    /// than the whole image (measured on a model without squeeze-and-excitation: a tile seam
    /// of 0.27 unaligned, 6e-8 aligned).
    fn input_size(&self) -> InputSize {
        let multiple = match self.variant {
            Variant::Up2xFast | Variant::Up3x => 4,
            Variant::Up2x | Variant::Up4x => 2,
        };
        InputSize {
            multiple,
            padding: InputPadding::Inside,
        }
    }

    /// The convolutions' exact receptive radius. The squeeze-and-excitation gates average
    /// whole feature maps, so every output pixel depends a little on the whole tile: no
    /// overlap makes tiles exact, and a wider one would not shrink that difference (it comes
    /// from the tile's content as a whole), so the overlap covers the convolutions only.
    fn context_radius(&self) -> usize {
        self.variant.receptive_radius()
    }

    fn describe(&self) -> String {
        format!(
            "Real-CUGAN x{} ({}{}{}, {}→{} channels)",
            self.scale(),
            self.variant.class_name(),
            if self.se { ", SE" } else { ", no SE" },
            if self.pro { ", pro" } else { "" },
            self.in_channels,
            self.out_channels
        )
    }

    /// UNet2 dominates: at its last level it holds its first block's output (64 channels,
    /// kept for the skip), the upsampled features, their sum and conv5's output, four
    /// 64-channel maps at UNet2's resolution (4, 9 or 1 pixels per input pixel), while the
    /// caller keeps UNet1's output (the image's channels, or 64 features for ×4 / fast) for
    /// the final residual; the module's own padding (18 to 38 pixels a side) adds a quarter
    /// at the smallest tiles. Measured in f32 (a counting allocator around one forward of the
    /// real models): ×2 5270 / 4750 bytes per input pixel at 128² / 256², ×3 10880 / 10510,
    /// ×4 6510 / 5970; this gives 5500, 12375 and 6720.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let f = self.variant.unet2_pixels();
        let floats = (4 * 64 + self.unet1_out() + 16) * f;
        floats * 5 / 4 * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(RealCugan::new(self, weights)?))
    }
}
