//! What every architecture's typed hyper-parameters tell the rest of diffsr: scale, channels,
//! the input sizes the network takes, the context a tile needs, a memory estimate, and how to
//! build the network. [`GanArch`] (one variant per registry entry) answers through it, so the
//! upscaler, `diffsr info` and `diffsr convert` never match on the architecture. The size
//! requirement follows spandrel's `SizeRequirements` (`multiple_of`) and the padding that
//! Real-ESRGAN (`mod_pad`) and SwinIR (`check_image_size`) apply to meet it.

use candle_core::{DType, Tensor};

use super::{GanArch, SrNet, Weights};
use crate::error::Result;
use crate::tiling::reflect_pad;

/// How an input whose sides are not a multiple of [`InputSize::multiple`] is brought to one:
/// padded at the bottom and right before the network, the extra output cropped after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPadding {
    /// Mirrored about the edge (PyTorch's `mode="reflect"`, replicate where a side is too
    /// short to mirror), as Real-ESRGAN and the window-attention networks pad.
    Reflect,
    /// The edge pixels repeated (PyTorch's `mode="replicate"`).
    Replicate,
    /// Zeros (PyTorch's `mode="constant"`), as OmniSR's `check_image_size` pads.
    Zero,
    /// None from outside: the network pads inside its own forward, as its reference module
    /// does (Real-CUGAN's reflect padding of 14 to 38 pixels plus the rest of the multiple),
    /// and takes any size. The multiple then only aligns tiles, so that the network's strided
    /// levels see every tile on the whole image's grid.
    Inside,
}

/// The input sides a network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    /// Both sides must be multiples of this: the pixel-unshuffle factor of an x2 / x1
    /// RRDBNet, the attention window of a transformer network. 1 takes any size.
    pub multiple: usize,
    /// How other sizes are padded to a multiple.
    pub padding: InputPadding,
}

impl InputSize {
    /// Any size, no padding.
    pub const ANY: Self = Self {
        multiple: 1,
        padding: InputPadding::Reflect,
    };

    /// Sides multiples of `multiple`, others reflect-padded.
    pub const fn reflect_to(multiple: usize) -> Self {
        Self {
            multiple,
            padding: InputPadding::Reflect,
        }
    }

    /// The multiple the tiler may bring an image to by mirroring: the input multiple when the
    /// network reflect-pads, else 1 (the network pads by its own policy).
    pub fn mirrored_multiple(&self) -> usize {
        match self.padding {
            InputPadding::Reflect => self.multiple.max(1),
            InputPadding::Replicate | InputPadding::Zero | InputPadding::Inside => 1,
        }
    }

    /// The multiple tiles start on and span by default: the input multiple where the network
    /// reflect-pads to it or pads inside its own forward (its strided levels must see every
    /// tile on the whole image's grid), else 1.
    pub fn tile_multiple(&self) -> usize {
        match self.padding {
            InputPadding::Reflect | InputPadding::Inside => self.multiple.max(1),
            InputPadding::Replicate | InputPadding::Zero => 1,
        }
    }

    /// Whether an `h` × `w` input needs no padding.
    pub fn fits(&self, h: usize, w: usize) -> bool {
        let m = self.multiple.max(1);
        self.padding == InputPadding::Inside || (h % m == 0 && w % m == 0)
    }

    /// Pads the bottom and right of `x` (B, C, H, W) up to the next multiples, by the policy.
    pub fn pad(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let m = self.multiple.max(1);
        let (pad_h, pad_w) = (h.next_multiple_of(m) - h, w.next_multiple_of(m) - w);
        Ok(match self.padding {
            InputPadding::Reflect => reflect_pad(x, 0, pad_h, 0, pad_w)?,
            InputPadding::Replicate => x.pad_with_same(2, 0, pad_h)?.pad_with_same(3, 0, pad_w)?,
            InputPadding::Zero => x.pad_with_zeros(2, 0, pad_h)?.pad_with_zeros(3, 0, pad_w)?,
            InputPadding::Inside => x.clone(),
        })
    }
}

/// Pads the bottom and right of `x` (B, C, H, W) so that both sides are at least `min`, as
/// spandrel's `pad_tensor` does for `SizeRequirements.minimum`: reflected by up to side − 1
/// pixels, the rest replicated.
pub fn pad_to_minimum(x: &Tensor, min: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (pad_h, pad_w) = (min.saturating_sub(h), min.saturating_sub(w));
    let (rh, rw) = (
        pad_h.min(h.saturating_sub(1)),
        pad_w.min(w.saturating_sub(1)),
    );
    let x = reflect_pad(x, 0, rh, 0, rw)?;
    Ok(x.pad_with_same(2, 0, pad_h - rh)?
        .pad_with_same(3, 0, pad_w - rw)?)
}

/// An architecture's detected hyper-parameters (`RrdbNetParams`, `SrvggParams`, ...).
pub trait ArchConfig: std::fmt::Debug + Send + Sync {
    /// Output pixels per input pixel.
    fn scale(&self) -> usize;

    /// Image channels in (3 RGB, 1 grey, 4 RGBA).
    fn in_channels(&self) -> usize;

    /// Image channels out.
    fn out_channels(&self) -> usize;

    /// The input sides the network takes; [`InputSize::ANY`] unless it downsamples its input
    /// or attends within fixed windows.
    fn input_size(&self) -> InputSize {
        InputSize::ANY
    }

    /// The smallest side the network takes: smaller inputs are first padded up to it as
    /// spandrel's `pad_tensor` pads to `SizeRequirements.minimum` (reflected as far as the side
    /// allows, the rest replicated), before any padding to [`Self::input_size`]. 1 for most.
    fn min_input_side(&self) -> usize {
        1
    }

    /// The multiple tiles start at and span, and that the tiler brings the image to by
    /// mirroring its bottom and right: the input multiple when the network itself reflect-pads
    /// (Real-ESRGAN's `mod_pad`, SwinIR's `check_image_size`), else 1, leaving
    /// [`super::GanNetwork::forward`] to pad each tile by the network's own policy (OmniSR's
    /// zeros), as the reference does. Swin2SR's aux model overrides it: it pads its own input
    /// (any size whole) yet computes on the window grid, so its tiles sit on that grid.
    fn tile_alignment(&self) -> usize {
        self.input_size().tile_multiple()
    }

    /// The input context, in pixels, a tile needs around what it keeps (see
    /// [`crate::tiling`]): the exact receptive radius where it is small, an effective one
    /// (what leaves no visible seam once tiles are blended) where it is not.
    fn context_radius(&self) -> usize;

    /// A short human-readable name, e.g. `RRDBNet x4 (nf 64, nb 23, ...)`.
    fn describe(&self) -> String;

    /// Approximate peak bytes of activations per input pixel in `dtype`, for choosing tiles.
    fn bytes_per_input_pixel(&self, dtype: DType) -> usize;

    /// The dtype a GPU runs it in when none is asked for: f16 where the reference runs the
    /// architecture in half precision (spandrel's `supports_half`), f32 where its activations
    /// are known to overflow f16 (attention logits of some transformers).
    fn gpu_dtype(&self) -> DType {
        DType::F16
    }

    /// Builds the network from `weights`, checking every tensor's shape.
    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>>;
}

/// The architecture-independent questions, answered by the variant's [`ArchConfig`].
impl GanArch {
    /// Output pixels per input pixel.
    pub fn scale(&self) -> usize {
        self.config().scale()
    }

    /// Image channels in (3 RGB, 1 grey, 4 RGBA).
    pub fn in_channels(&self) -> usize {
        self.config().in_channels()
    }

    /// Image channels out.
    pub fn out_channels(&self) -> usize {
        self.config().out_channels()
    }

    /// The input sides the network takes, and how others are padded.
    pub fn input_size(&self) -> InputSize {
        self.config().input_size()
    }

    /// The smallest side the network takes (see [`ArchConfig::min_input_side`]).
    pub fn min_input_side(&self) -> usize {
        self.config().min_input_side()
    }

    /// Input sides must be multiples of this (pixel-unshuffle input of x2 / x1 RRDBNets).
    pub fn input_multiple(&self) -> usize {
        self.input_size().multiple
    }

    /// The multiple tiles start at and span (see [`ArchConfig::tile_alignment`]).
    pub fn tile_alignment(&self) -> usize {
        self.config().tile_alignment()
    }

    /// The input context, in pixels, a tile needs around what it keeps (see
    /// [`ArchConfig::context_radius`]).
    pub fn context_radius(&self) -> usize {
        self.config().context_radius()
    }

    /// A short human-readable name, e.g. `RRDBNet x4 (nf 64, nb 23)`.
    pub fn describe(&self) -> String {
        self.config().describe()
    }

    /// The dtype a GPU runs it in by default ([`ArchConfig::gpu_dtype`]).
    pub fn gpu_dtype(&self) -> DType {
        self.config().gpu_dtype()
    }

    /// Approximate peak bytes of activations per input pixel in `dtype`, for choosing tiles.
    pub fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        self.config().bytes_per_input_pixel(dtype)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(t.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?)
    }

    #[test]
    fn pads_bottom_and_right_to_the_multiple_by_the_policy() -> Result<()> {
        // 2 × 3: rows [0 1 2] and [3 4 5].
        let x = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((1, 1, 2, 3))?;
        let reflect = InputSize::reflect_to(4);
        assert!(!reflect.fits(2, 3) && reflect.fits(4, 8));
        assert_eq!(
            rows(&reflect.pad(&x)?)?,
            [
                [0., 1., 2., 1.],
                [3., 4., 5., 4.],
                // A 2-row axis cannot mirror 2 rows: the edge row repeats instead.
                [3., 4., 5., 4.],
                [3., 4., 5., 4.],
            ]
        );
        let replicate = InputSize {
            multiple: 2,
            padding: InputPadding::Replicate,
        };
        assert_eq!(
            rows(&replicate.pad(&x)?)?,
            [[0., 1., 2., 2.], [3., 4., 5., 5.]]
        );
        assert!(InputSize::ANY.fits(7, 5));
        let inside = InputSize {
            multiple: 4,
            padding: InputPadding::Inside,
        };
        assert!(inside.fits(2, 3) && inside.pad(&x)?.dims() == x.dims());
        assert_eq!(InputSize::ANY.pad(&x)?.dims(), x.dims());
        Ok(())
    }
}
