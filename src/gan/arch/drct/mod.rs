//! DRCT, the Dense-residual-connected Transformer (Hsu et al., CVPRW 2024), as spandrel 0.4.2
//! runs it (`architectures/DRCT`): Swin blocks in residual dense groups (RDG) of five, each
//! block seeing the group's input and every earlier block's 1×1-compressed output. DRCT and
//! DRCT-L (6 or 12 groups), real-world and restoration variants, and any other configuration
//! spandrel's loader reads.
//!
//! `config.rs` holds the hyper-parameters, `detect.rs` reads them from a state dict,
//! `block.rs` is the Swin block (the shared window attention with an optional qkv bias),
//! `net.rs` the groups and the network. The attention, norms, MLP and tail are
//! `super::swin`'s.

mod block;
mod config;
mod detect;
mod net;

pub use config::{DrctParams, DrctResi};
#[cfg(test)]
pub(crate) use detect::{synthetic_drct, tiny_params};
pub use net::Drct;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// DRCT's registry entry.
pub struct DrctSpec;

impl ArchSpec for DrctSpec {
    fn name(&self) -> &'static str {
        "DRCT"
    }

    fn description(&self) -> &'static str {
        "Dense-residual-connected Transformer: DRCT, DRCT-L, Real-DRCT"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, layers.N.swinK.attn.relative_position_bias_table, layers.N.adjustK, norm, \
         conv_after_body, conv_before_upsample, upsample, conv_last"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_drct(dict).then(|| detect::drct_params(dict).map(Into::into))
    }
}
