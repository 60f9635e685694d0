//! Swin2SR (spandrel 0.4.2 `architectures/Swin2SR`: classical x2/x4 `pixelshuffle`,
//! lightweight `pixelshuffledirect`, real-world x4 `nearest+conv`, compressed-input x4
//! `pixelshuffle_aux`, JPEG without upsampler; `1conv` or `3conv`). The Swin V2 block (cosine
//! attention, continuous position bias, post-norm) is in `block.rs`, torch's bicubic resize
//! for the aux tail in `bicubic.rs`; the shared Swin pieces in `super::swin`.

mod bicubic;
mod block;
mod config;
mod detect;
mod net;

pub use config::{Swin2SrParams, Swin2SrUpsampler};
pub use net::Swin2Sr;

#[cfg(test)]
pub(crate) use detect::{synthetic_swin2sr, tiny_swin2sr};

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// Swin2SR's registry entry.
pub struct Swin2SrSpec;

impl ArchSpec for Swin2SrSpec {
    fn name(&self) -> &'static str {
        "Swin2SR"
    }

    fn description(&self) -> &'static str {
        "Swin2SR classical / lightweight / real-world / compressed-input SR, JPEG"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, patch_embed.proj, layers.N.residual_group.blocks.N.attn.cpb_mlp, \
         ....attn.logit_scale, conv_after_body, ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_swin2sr(dict).then(|| detect::swin2sr_params(dict).map(Into::into))
    }
}
