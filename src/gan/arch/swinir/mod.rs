//! SwinIR (spandrel 0.4.2 `architectures/SwinIR`: classical x2/x3/x4/x8 with `pixelshuffle`,
//! lightweight with `pixelshuffledirect`, real-world with `nearest+conv`, denoising and JPEG
//! without upsampler; `1conv` or `3conv`; pixel-unshuffled inputs). `config.rs` holds the
//! hyper-parameters, `detect.rs` reads them from a state dict, `net.rs` is the network; the
//! Swin pieces are in `super::swin`.

mod config;
mod detect;
mod net;

pub use config::SwinIrParams;
pub use net::SwinIr;

#[cfg(test)]
pub(crate) use detect::{synthetic_swinir, tiny_params};

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SwinIR's registry entry.
pub struct SwinIrSpec;

impl ArchSpec for SwinIrSpec {
    fn name(&self) -> &'static str {
        "SwinIR"
    }

    fn description(&self) -> &'static str {
        "SwinIR classical / lightweight / real-world SR, denoising, JPEG"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, layers.N.residual_group.blocks.N.attn.relative_position_index, \
         ....mlp.fc1, conv_after_body, ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_swinir(dict).then(|| detect::swinir_params(dict).map(Into::into))
    }
}
