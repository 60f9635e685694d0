//! Range checks shared by the model `config.json` readers (UNet, VAE, text encoder). A model is
//! built from its config before its weights are read, so every size in it must be positive and
//! bounded (no loop, shift or allocation sized by an absurd value) and every epsilon a finite
//! positive number. The bounds are far above any released diffusers / transformers model.
//!
//! Checks return [`Error::Unsupported`] naming the field and the range; [`in_file`] turns that
//! into an [`Error::Config`] naming the file too, which is what the `from_file` readers return.

use std::path::Path;

use crate::{Error, Result};

/// Most channels (block widths, in/out/latent channels, hidden sizes) a config may declare.
pub const MAX_CHANNELS: usize = 16_384;
/// Most resolution levels of a UNet or VAE (x4 upscaler: 4 and 3); the VAE's scale is
/// 2^(levels - 1).
pub const MAX_LEVELS: usize = 8;
/// Most layers per block (resnets, transformer layers) or text-encoder layers.
pub const MAX_LAYERS: usize = 64;
/// Largest odd convolution kernel of `conv_in_kernel` / `conv_out_kernel`.
pub const MAX_KERNEL: usize = 15;
/// Most class embeddings (the x4 UNet's noise levels: 1000).
pub const MAX_CLASS_EMBEDS: usize = 100_000;
/// Largest text-encoder vocabulary (CLIP: 49408).
pub const MAX_VOCAB: usize = 1 << 20;
/// Most text positions (CLIP: 77).
pub const MAX_POSITIONS: usize = 8192;

/// `value` in `1..=max`.
pub fn size(field: &str, value: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::unsupported(
            field,
            format!("is {value}; expected 1..={max}"),
        ))
    }
}

/// A normalisation epsilon: finite, above 0, at most 1.
pub fn epsilon(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(Error::unsupported(
            field,
            format!("is {value}; expected a number above 0 and at most 1"),
        ))
    }
}

/// A finite number (NaN and ±inf refused).
pub fn finite(field: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::unsupported(
            field,
            format!("is {value}; expected a finite number"),
        ))
    }
}

/// `block_out_channels` of a UNet or VAE: 1..=[`MAX_LEVELS`] levels, each width a
/// [`size`] up to [`MAX_CHANNELS`]. Returns the number of levels.
pub fn levels(block_out_channels: &[usize]) -> Result<usize> {
    let n = block_out_channels.len();
    if n == 0 {
        return Err(Error::unsupported("block_out_channels", "is empty"));
    }
    if n > MAX_LEVELS {
        // The VAE's scale is 2^(levels - 1): this bounds the shift too.
        return Err(Error::unsupported(
            "block_out_channels",
            format!("has {n} levels; expected 1..={MAX_LEVELS}"),
        ));
    }
    for &c in block_out_channels {
        size("block_out_channels", c, MAX_CHANNELS)?;
    }
    Ok(n)
}

/// `groups` (≥ 1) divides every width in `channels` (GroupNorm's requirement).
pub fn groups_divide(groups: usize, channels: &[usize]) -> Result<()> {
    size("norm_num_groups", groups, MAX_CHANNELS)?;
    match channels.iter().find(|&&c| c % groups != 0) {
        None => Ok(()),
        Some(c) => Err(Error::unsupported(
            "norm_num_groups",
            format!("{groups} does not divide block_out_channels entry {c}"),
        )),
    }
}

/// A check's error with the config file named: [`Error::Unsupported`] becomes
/// [`Error::Config`] (`config <path>: \`field\` reason`); other errors pass through.
pub fn in_file(path: &Path, error: Error) -> Error {
    match error {
        Error::Unsupported { field, reason } => Error::Config {
            path: path.to_path_buf(),
            message: format!("`{field}` {reason}"),
        },
        other => other,
    }
}
