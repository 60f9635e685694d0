//! Activation names of diffusers' `get_activation` (models/activations.py).
//!
//! The upscaler and every Stable Diffusion checkpoint use SiLU ("silu", or its older name
//! "swish") throughout; SiLU is fused into [`super::GroupNorm`], so other activations are
//! refused rather than half-supported.

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
