//! `DiagonalGaussianDistribution` of diffusers models/autoencoders/vae.py: the encoder's
//! posterior, with the log-variance clamped to [-30, 20] as diffusers clamps it.

use candle_core::Tensor;

use crate::{Error, Result};

/// The VAE posterior: per-latent mean and (clamped) log-variance, (B, latent_channels, h, w).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits encoder moments (B, 2·L, h, w) into mean and log-variance.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let channels = moments.dim(1)?;
        if channels % 2 != 0 {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "VAE moments need an even channel count, got {channels}"
            ))));
        }
        let half = channels / 2;
        Ok(Self {
            mean: moments.narrow(1, 0, half)?.contiguous()?,
            logvar: moments.narrow(1, half, half)?.clamp(-30f32, 20f32)?,
        })
    }

    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.clone()
    }

    /// exp(logvar / 2).
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// mean + std · noise, for standard-normal `noise` of the mean's shape.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::option(
                "noise",
                format!(
                    "has shape {:?}, the posterior has {:?}",
                    noise.dims(),
                    self.mean.dims()
                ),
            ));
        }
        let noise = noise.to_dtype(self.mean.dtype())?;
        Ok((&self.mean + self.std()?.mul(&noise)?)?)
    }
}
