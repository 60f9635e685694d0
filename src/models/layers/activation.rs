//! Activation names of diffusers' `get_activation` (models/activations.py), and the
//! per-channel rectifiers of the Real-ESRGAN networks (PReLU, ReLU, leaky ReLU).
//!
//! The upscaler and every Stable Diffusion checkpoint use SiLU ("silu", or its older name
//! "swish") throughout; SiLU is fused into [`super::GroupNorm`], so other activations are
//! refused rather than half-supported.

use candle_core::{DType, Device, Tensor};

use super::cpu_dispatch::on_cpu_f32;
use crate::{Error, Result};

/// Accepts the SiLU names diffusers maps to `nn.SiLU`; anything else is refused naming `field`.
pub fn check_silu(field: &str, value: &str) -> Result<()> {
    match value {
        "silu" | "swish" => Ok(()),
        other => Err(Error::unsupported(
            field,
            format!("is {other:?}; only \"silu\" (alias \"swish\") is implemented"),
        )),
    }
}

/// PReLU: x where x ≥ 0, slope[c]·x elsewhere, for x (B, C, H, W) and `slope` with C values
/// (any shape). On the CPU in f32 one pass (`diffsr_kernels::elementwise::prelu`); elsewhere
/// max(x, 0) + slope·min(x, 0) in tensor ops.
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let channels = slope.elem_count();
    if dims.len() >= 2 && dims[1] == channels {
        let plane: usize = dims[2..].iter().product();
        let slope = slope.flatten_all()?;
        let out = on_cpu_f32([x, &slope], [], dims, |[x, slopes], []| {
            diffsr_kernels::elementwise::prelu(x, plane, slopes)
        })?;
        if let Some(out) = out {
            return Ok(out);
        }
    }
    let slope = slope.reshape((1, channels, 1, 1))?;
    Ok((x.relu()? + x.minimum(0f64)?.broadcast_mul(&slope)?)?)
}

/// A per-channel rectifier, x for x ≥ 0 and `slope[c]·x` below: PReLU's learned slopes, ReLU
/// (all 0) or leaky ReLU (one slope). Held twice, small: as a (1, C, 1, 1) tensor in the
/// model's dtype and device for the tensor-op path, and as host f32 values for the CPU
/// convolutions that apply it in their output pass.
#[derive(Debug, Clone)]
pub struct ChannelSlopes {
    tensor: Tensor,
    host: Vec<f32>,
}

impl ChannelSlopes {
    /// PReLU: `slopes` holds the C learned values, in any shape.
    pub fn learned(slopes: &Tensor) -> Result<Self> {
        let c = slopes.elem_count();
        Ok(Self {
            tensor: slopes.reshape((1, c, 1, 1))?,
            host: slopes.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
        })
    }

    /// One slope for all `channels` (0: ReLU; 0.1: Real-ESRGAN's leaky ReLU).
    pub fn uniform(slope: f32, channels: usize, dtype: DType, device: &Device) -> Result<Self> {
        let tensor = Tensor::full(slope, (1, channels, 1, 1), device)?.to_dtype(dtype)?;
        Ok(Self {
            tensor,
            host: vec![slope; channels],
        })
    }

    /// The slopes as f32 on the host, one per channel.
    pub fn host(&self) -> &[f32] {
        &self.host
    }

    /// The rectifier on its own (x (B, C, H, W)).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        prelu(x, &self.tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelu_matches_the_tensor_op_form() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 4), &dev)?;
        let slope = Tensor::new(&[0.1f32, -0.5, 2.0], &dev)?;
        let want = (x.relu()?
            + x.minimum(0f64)?
                .broadcast_mul(&slope.reshape((1, 3, 1, 1))?)?)?;
        let got = prelu(&x, &slope.reshape((1, 3, 1, 1))?)?;
        let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        // f64 takes the tensor-op path.
        let got = prelu(&x.to_dtype(DType::F64)?, &slope.to_dtype(DType::F64)?)?;
        assert_eq!(got.dims(), [2, 3, 5, 4]);
        Ok(())
    }

    #[test]
    fn uniform_slopes_are_relu_and_leaky_relu() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 4, 4), &dev)?;
        let relu = ChannelSlopes::uniform(0.0, 3, DType::F32, &dev)?.apply(&x)?;
        let d = (relu - x.relu()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let leaky = ChannelSlopes::uniform(0.1, 3, DType::F32, &dev)?.apply(&x)?;
        let want = candle_nn::ops::leaky_relu(&x, 0.1)?;
        let d = (leaky - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-7, "{d}");
        let learned = ChannelSlopes::learned(&Tensor::new(&[0.5f32, 0.0, 1.0], &dev)?)?;
        assert_eq!(learned.host(), [0.5, 0.0, 1.0]);
        Ok(())
    }
}
