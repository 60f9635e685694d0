//! `AutoencoderKL` (diffusers models/autoencoders/autoencoder_kl.py) for any number of levels:
//! `encode` = encoder + quant_conv → [`DiagonalGaussian`], `decode` = post_quant_conv +
//! decoder. Scaling by `scaling_factor` is the caller's job, as in diffusers.
//!
//! The mid blocks' single-head attention covers every latent pixel; it runs through the
//! shared memory-bounded attention, whose score budget [`AutoencoderKL::set_attention_budget`]
//! sets (default [`crate::models::layers::DEFAULT_MAX_SCORE_BYTES`]). Module names mirror
//! diffusers' (`decoder.mid_block.attentions.0.to_q.weight`, ...).

mod blocks;
mod config;
mod decoder;
mod distribution;
mod encoder;
mod tiled;

use candle_core::{DType, Tensor};
use candle_nn::{Conv2dConfig, Module, VarBuilder};

pub use config::AutoencoderKLConfig;
use decoder::Decoder;
pub use distribution::DiagonalGaussian;
use encoder::Encoder;
pub use tiled::VaeTiling;

use crate::models::layers::conv::Conv2d;
use crate::models::layers::GroupNormMode;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dtype: DType,
}

fn conv1x1(channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    Ok(crate::models::layers::conv::conv2d(
        channels,
        channels,
        1,
        Conv2dConfig::default(),
        vb,
    )?)
}

impl AutoencoderKL {
    /// Builds the VAE from `config`, loading every weight from `vb` (diffusers' names).
    pub fn new(config: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let l = config.latent_channels;
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
            quant_conv: match config.use_quant_conv {
                true => Some(conv1x1(2 * l, vb.pp("quant_conv"))?),
                false => None,
            },
            post_quant_conv: match config.use_post_quant_conv {
                true => Some(conv1x1(l, vb.pp("post_quant_conv"))?),
                false => None,
            },
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// Largest attention score matrix, in bytes, that one encode / decode may materialise.
    /// Results do not depend on it (beyond float rounding); time does, a little.
    pub fn set_attention_budget(&mut self, max_score_bytes: usize) {
        self.encoder.set_max_score_bytes(max_score_bytes);
        self.decoder.set_max_score_bytes(max_score_bytes);
    }

    /// latents (B, latent_channels, h, w), already divided by `scaling_factor` ->
    /// image (B, out_channels, h·f, w·f) in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode_with_stats(latents, &mut GroupNormMode::Own)
    }

    /// [`Self::decode`] with every GroupNorm's statistics as `mode` says: recorded into a
    /// [`crate::models::layers::GroupNormStats`] or replayed from one (see the tiled decode). A
    /// replay must use every recorded pair.
    pub fn decode_with_stats(&self, latents: &Tensor, mode: &mut GroupNormMode) -> Result<Tensor> {
        self.check_input("latents", latents, self.config.latent_channels)?;
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        let image = self.decoder.forward(&z, mode)?;
        mode.finish()?;
        Ok(image)
    }

    /// images (B, in_channels, H, W) in [-1, 1] -> the latent posterior.
    pub fn encode(&self, images: &Tensor) -> Result<DiagonalGaussian> {
        self.encode_with_stats(images, &mut GroupNormMode::Own)
    }

    /// [`Self::encode`] with every GroupNorm's statistics as `mode` says, as
    /// [`Self::decode_with_stats`].
    pub fn encode_with_stats(
        &self,
        images: &Tensor,
        mode: &mut GroupNormMode,
    ) -> Result<DiagonalGaussian> {
        self.check_input("images", images, self.config.in_channels)?;
        let moments = self.encoder.forward(images, mode)?;
        mode.finish()?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&moments)?,
            None => moments,
        };
        DiagonalGaussian::from_moments(&moments)
    }

    fn check_input(&self, what: &str, t: &Tensor, channels: usize) -> Result<()> {
        let dims = t.dims();
        if dims.len() != 4 || dims[1] != channels {
            return Err(Error::option(
                what,
                format!("must be (B, {channels}, h, w), got {dims:?}"),
            ));
        }
        if t.dtype() != self.dtype {
            return Err(Error::option(
                what,
                format!("is {:?}, the VAE computes in {:?}", t.dtype(), self.dtype),
            ));
        }
        Ok(())
    }
}
