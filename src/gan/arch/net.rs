//! A network built from weights: each architecture's forward pass behind [`SrNet`], and
//! [`GanNetwork`], which pairs it with its [`GanArch`] and brings any input size to the sizes
//! the network takes (padding to the input multiple, cropping the output), as spandrel's
//! `ModelDescriptor.__call__` and Real-ESRGAN's `mod_pad` do.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::pad_to_minimum;
use super::{GanArch, Weights};
use crate::error::Result;
use crate::gan::StateDict;

/// An architecture's forward pass.
pub trait SrNet: Send + Sync {
    /// (B, C_in, H, W) in [0, 1] → (B, C_out, H·scale, W·scale), not clamped. H and W are
    /// multiples of the architecture's [`super::InputSize::multiple`]; [`GanNetwork::forward`]
    /// sees to that.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// A network built from weights, with the architecture it was built as.
pub struct GanNetwork {
    arch: GanArch,
    net: Box<dyn SrNet>,
}

impl GanNetwork {
    /// Builds `arch` from `weights` on `device` in `dtype`; `path` names the file in errors.
    pub fn new(
        arch: &GanArch,
        weights: &StateDict,
        dtype: DType,
        device: &Device,
        path: &Path,
    ) -> Result<Self> {
        let weights = Weights::new(weights, dtype, device, path);
        Ok(Self {
            arch: arch.clone(),
            net: arch.config().build(&weights)?,
        })
    }

    pub fn arch(&self) -> &GanArch {
        &self.arch
    }

    /// (B, C, H, W) in [0, 1] → (B, C, H·scale, W·scale), not clamped. Sides that are not a
    /// multiple of the network's input multiple are padded by its policy and the output
    /// cropped back; other inputs go to the network untouched.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = self.arch.input_size();
        let min = self.arch.min_input_side();
        let (_, _, h, w) = x.dims4()?;
        if size.fits(h, w) && h >= min && w >= min {
            return self.net.forward(x);
        }
        let x = if h < min || w < min {
            pad_to_minimum(x, min)?
        } else {
            x.clone()
        };
        let out = self.net.forward(&size.pad(&x)?)?;
        let s = self.arch.scale();
        Ok(out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gan::arch::{rrdbnet, srvgg};
    use crate::gan::detect::detect_arch;
    use crate::tiling::reflect_pad;

    /// A synthetic state dict's shapes filled with small random weights.
    fn randomised(dict: StateDict) -> Result<StateDict> {
        dict.into_iter()
            .map(|(k, t)| Ok((k, Tensor::randn(0f32, 0.1, t.dims(), &Device::Cpu)?)))
            .collect()
    }

    fn build(dict: &StateDict) -> Result<GanNetwork> {
        let path = Path::new("model.safetensors");
        let arch = detect_arch(dict, path)?;
        GanNetwork::new(&arch, dict, DType::F32, &Device::Cpu, path)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn odd_sides_are_reflect_padded_to_the_input_multiple_and_cropped() -> Result<()> {
        // An x2 RRDBNet pixel-unshuffles by 2: its sides must be even.
        let net = build(&randomised(rrdbnet::synthetic_rrdbnet(12, 2))?)?;
        assert_eq!(net.arch().input_multiple(), 2);
        let x = Tensor::rand(0f32, 1.0, (1, 3, 5, 7), &Device::Cpu)?;
        let got = net.forward(&x)?;
        assert_eq!(got.dims(), &[1, 3, 10, 14]);
        let padded = reflect_pad(&x, 0, 1, 0, 1)?;
        let want = net
            .net
            .forward(&padded)?
            .narrow(2, 0, 10)?
            .narrow(3, 0, 14)?;
        assert_eq!(max_diff(&got, &want)?, 0.0);
        // Sides already even go to the network untouched.
        let even = padded.clone();
        assert_eq!(
            max_diff(&net.forward(&even)?, &net.net.forward(&even)?)?,
            0.0
        );
        Ok(())
    }

    #[test]
    fn networks_without_a_multiple_take_any_size() -> Result<()> {
        let net = build(&randomised(srvgg::synthetic_srvgg(1, 4, true))?)?;
        assert_eq!(net.arch().input_multiple(), 1);
        let x = Tensor::rand(0f32, 1.0, (1, 3, 5, 7), &Device::Cpu)?;
        let got = net.forward(&x)?;
        assert_eq!(got.dims(), &[1, 3, 20, 28]);
        assert_eq!(max_diff(&got, &net.net.forward(&x)?)?, 0.0);
        Ok(())
    }
}
