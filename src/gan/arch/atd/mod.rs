//! ATD, the Adaptive Token Dictionary transformer (spandrel 0.4.2 `architectures/ATD`: ATD and
//! ATD-light; pixelshuffle, pixelshuffledirect, nearest+conv or no upsampler; `1conv` or
//! `3conv`; with or without the mean normalisation). `config.rs` holds the hyper-parameters,
//! `detect.rs` reads them from a state dict, `net.rs` is the network, `layer.rs` its groups and
//! layers with their three attentions (`super::swin`'s window attention, `dictionary.rs`,
//! `category.rs` with `torch_sort.rs`) and `ffn.rs` / `dwconv.rs` the ConvFFN.

mod category;
mod config;
mod detect;
mod dictionary;
mod dwconv;
mod ffn;
mod layer;
mod net;
mod torch_sort;

pub use config::AtdParams;
pub use detect::synthetic_atd;
pub use net::Atd;

#[cfg(test)]
pub(crate) use detect::tiny_params;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// ATD's registry entry.
pub struct AtdSpec;

impl ArchSpec for AtdSpec {
    fn name(&self) -> &'static str {
        "ATD"
    }

    fn description(&self) -> &'static str {
        "ATD / ATD-light (adaptive token dictionary transformer)"
    }

    fn expected_keys(&self) -> &'static str {
        "relative_position_index_SA, conv_first, layers.N.residual_group.td, \
         ....layers.N.attn_atd.scale, ....attn_aca.logit_scale, norm, ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_atd(dict).then(|| detect::atd_params(dict).map(Into::into))
    }
}
