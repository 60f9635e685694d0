//! `vae/config.json`: the arguments of diffusers' `AutoencoderKL.__init__`
//! (models/autoencoders/autoencoder_kl.py) with diffusers' defaults, and the checks that refuse
//! what this port does not implement. Unknown keys are ignored.

use std::path::Path;

use serde::Deserialize;

use crate::models::config_ranges::{
    finite, groups_divide, in_file, levels, size, MAX_CHANNELS, MAX_LAYERS,
};
use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents are divided by this before decoding (the caller's job; the x4 pipeline forces
    /// 0.08333).
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    /// diffusers runs such VAEs in f32 even in half-precision pipelines.
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// Reads and checks a config.json; a refused value is an [`Error::Config`] naming the file
    /// and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = crate::model_dir::read_json(path)?;
        config.validate().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// Refuses, naming the field, every setting this port does not implement and every value
    /// out of its sane range (sizes positive and bounded, the group count dividing the
    /// channels, finite latent statistics).
    pub fn validate(&self) -> Result<()> {
        let n = levels(&self.block_out_channels)?;
        size("in_channels", self.in_channels, MAX_CHANNELS)?;
        size("out_channels", self.out_channels, MAX_CHANNELS)?;
        size("latent_channels", self.latent_channels, MAX_CHANNELS)?;
        size("layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        groups_divide(self.norm_num_groups, &self.block_out_channels)?;
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::unsupported(
                "scaling_factor",
                format!(
                    "is {}; expected a finite number above 0",
                    self.scaling_factor
                ),
            ));
        }
        if let Some(shift) = self.shift_factor {
            finite("shift_factor", shift)?;
        }
        for (field, values) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            for &v in values.iter().flatten() {
                finite(field, v)?;
            }
        }
        for (field, types, only) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                return Err(Error::unsupported(
                    field,
                    format!("has {} entries but block_out_channels has {n}", types.len()),
                ));
            }
            if let Some(t) = types.iter().find(|t| t.as_str() != only) {
                return Err(Error::unsupported(
                    field,
                    format!("contains {t:?}; only {only} is implemented"),
                ));
            }
        }
        crate::models::layers::check_silu("act_fn", &self.act_fn)?;
        Ok(())
    }

    /// Ratio between image and latent sizes: 2^(levels-1).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}
