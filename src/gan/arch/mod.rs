//! The GAN architectures diffsr runs, as plain descriptions (what [`super::detect`] finds in a
//! state dict) and as Candle networks built from a state dict.

mod rrdbnet;
mod shuffle_add;
mod srvgg;

pub use rrdbnet::{RrdbNet, RrdbNetParams};
pub use srvgg::{Srvgg, SrvggAct, SrvggParams};

use candle_core::{DType, Device, Tensor};

use super::StateDict;
use crate::error::{Error, Result};
use crate::models::layers::conv::Conv2d;

/// An architecture and its hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum GanArch {
    RrdbNet(RrdbNetParams),
    Srvgg(SrvggParams),
}

impl GanArch {
    /// Output pixels per input pixel.
    pub fn scale(&self) -> usize {
        match self {
            Self::RrdbNet(p) => p.scale,
            Self::Srvgg(p) => p.upscale,
        }
    }

    /// Image channels in (3 RGB, 1 grey, 4 RGBA).
    pub fn in_channels(&self) -> usize {
        match self {
            Self::RrdbNet(p) => p.in_channels,
            Self::Srvgg(p) => p.in_channels,
        }
    }

    /// Image channels out.
    pub fn out_channels(&self) -> usize {
        match self {
            Self::RrdbNet(p) => p.out_channels,
            Self::Srvgg(p) => p.out_channels,
        }
    }

    /// Input sides must be multiples of this (pixel-unshuffle input of x2 / x1 RRDBNets).
    pub fn input_multiple(&self) -> usize {
        match self {
            Self::RrdbNet(p) => p.unshuffle,
            Self::Srvgg(_) => 1,
        }
    }

    /// The input context, in pixels, a tile needs around what it keeps (see
    /// [`crate::tiling`]). For SRVGGNetCompact this is its exact receptive radius (one pixel
    /// per 3×3 conv), so tiled output equals untiled output. RRDBNet's theoretical radius is
    /// hundreds of pixels (70 convs for x4plus) but its effective one is small: Real-ESRGAN
    /// tiles it with 10 pixels of context; 16 leaves no measurable seam with blending.
    pub fn context_radius(&self) -> usize {
        match self {
            Self::RrdbNet(p) => 16 * p.unshuffle.max(1),
            Self::Srvgg(p) => p.num_conv + 2,
        }
    }

    /// A short human-readable name, e.g. `RRDBNet x4 (nf 64, nb 23)`.
    pub fn describe(&self) -> String {
        match self {
            Self::RrdbNet(p) => format!(
                "RRDBNet x{} (nf {}, nb {}, gc {}, {}→{} channels)",
                p.scale, p.num_feat, p.num_block, p.num_grow_ch, p.in_channels, p.out_channels
            ),
            Self::Srvgg(p) => format!(
                "SRVGGNetCompact x{} (nf {}, {} convs, {}, {}→{} channels)",
                p.upscale,
                p.num_feat,
                p.num_conv,
                p.act.name(),
                p.in_channels,
                p.out_channels
            ),
        }
    }

    /// Approximate peak bytes of activations per input pixel in `dtype`, for choosing tiles.
    pub fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let floats = match self {
            // The dense blocks hold x, x1..x4 and their concatenation (nf + 4 gc channels,
            // twice) at input resolution; the tail holds nf channels at up to scale² pixels
            // twice (input and output of a conv) plus the conv's unfolded input (9 × nf).
            Self::RrdbNet(p) => {
                let low = 4 * (p.num_feat + 4 * p.num_grow_ch) / (p.unshuffle * p.unshuffle);
                let s = p.scale * p.scale;
                low + 11 * p.num_feat * s.max(1)
            }
            Self::Srvgg(p) => 11 * p.num_feat + 2 * p.out_channels * p.upscale * p.upscale,
        };
        floats * dtype.size_in_bytes()
    }
}

/// The network built from weights.
pub enum GanNetwork {
    // Boxed: an RRDBNet holds three times more layers inline than an SRVGG.
    RrdbNet(Box<RrdbNet>),
    Srvgg(Srvgg),
}

impl GanNetwork {
    /// Builds `arch` from `weights` on `device` in `dtype`; `path` names the file in errors.
    pub fn new(
        arch: &GanArch,
        weights: &StateDict,
        dtype: DType,
        device: &Device,
        path: &std::path::Path,
    ) -> Result<Self> {
        let w = Weights {
            dict: weights,
            dtype,
            device,
            path,
        };
        Ok(match arch {
            GanArch::RrdbNet(p) => Self::RrdbNet(Box::new(RrdbNet::new(p, &w)?)),
            GanArch::Srvgg(p) => Self::Srvgg(Srvgg::new(p, &w)?),
        })
    }

    /// (B, C, H, W) in [0, 1] → (B, C, H·scale, W·scale), not clamped.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::RrdbNet(n) => n.forward(x),
            Self::Srvgg(n) => n.forward(x),
        }
    }
}

/// Tensors fetched by name, checked for shape, moved to the compute device and dtype.
pub(crate) struct Weights<'a> {
    pub dict: &'a StateDict,
    pub dtype: DType,
    pub device: &'a Device,
    pub path: &'a std::path::Path,
}

impl Weights<'_> {
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.dict.get(name).ok_or_else(|| Error::Weights {
            path: self.path.to_path_buf(),
            message: format!("missing tensor `{name}` (expected shape {shape:?})"),
        })?;
        if t.dims() != shape {
            return Err(Error::Weights {
                path: self.path.to_path_buf(),
                message: format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            });
        }
        // Contiguous: a Fortran-ordered `.pth` tensor arrives as a permuted view, and candle
        // 0.11's Metal conv2d multiplies by the kernel's storage as if it were contiguous.
        Ok(t.to_device(self.device)?
            .to_dtype(self.dtype)?
            .contiguous()?)
    }

    /// A 3×3 convolution with bias and "same" padding, `prefix.weight` / `prefix.bias`.
    pub fn conv3x3(&self, prefix: &str, c_in: usize, c_out: usize) -> Result<Conv2d> {
        let weight = self.get(&format!("{prefix}.weight"), &[c_out, c_in, 3, 3])?;
        let bias = self.get(&format!("{prefix}.bias"), &[c_out])?;
        let config = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Conv2d::new(weight, Some(bias), config).with_winograd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_come_out_contiguous() -> Result<()> {
        let dev = Device::Cpu;
        // As a Fortran-ordered `.pth` arrives: a permuted view of its storage.
        let stored = Tensor::arange(0f32, 24.0, &dev)?.reshape((3, 2, 4))?;
        let view = stored.permute((2, 1, 0))?;
        assert!(!view.is_contiguous());
        let dict: StateDict = [("w".to_string(), view.clone())].into();
        let w = Weights {
            dict: &dict,
            dtype: DType::F32,
            device: &dev,
            path: std::path::Path::new("model.pth"),
        };
        let got = w.get("w", &[4, 2, 3])?;
        assert!(got.is_contiguous());
        assert_eq!(got.to_vec3::<f32>()?, view.to_vec3::<f32>()?);
        let err = w.get("w", &[4, 3, 2]).unwrap_err().to_string();
        assert!(
            err.contains("model.pth") && err.contains("[4, 3, 2]"),
            "{err}"
        );
        Ok(())
    }
}
