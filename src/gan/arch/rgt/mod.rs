//! RGT (spandrel 0.4.2 `architectures/RGT`: the Recursive Generalization Transformer, RGT
//! and RGT-S). `config.rs` holds the hyper-parameters, `detect.rs` reads them from a state
//! dict, `net.rs` is the network, `block.rs` its transformer block, `lsa.rs` the
//! rectangle-window attention (Rwin-SA) of its even blocks and `window.rs` one window branch
//! of it, `rgsa.rs` the recursive-generalization attention (RG-SA) of its odd blocks,
//! `depthwise.rs` their depthwise convolutions on token maps.

mod block;
mod config;
mod depthwise;
mod detect;
mod lsa;
mod net;
mod rgsa;
mod window;

pub use config::{ResiConnection, RgtParams, IMG_RANGE, MIN_SIDE, NUM_FEAT, RGB_MEAN};
pub use net::Rgt;

#[cfg(test)]
pub(crate) use detect::{small_params, synthetic_rgt};

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// RGT's registry entry.
pub struct RgtSpec;

impl ArchSpec for RgtSpec {
    fn name(&self) -> &'static str {
        "RGT"
    }

    fn description(&self) -> &'static str {
        "Recursive Generalization Transformer"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, before_RG.1, layers.N.blocks.N.attn.attns.N.rpe_biases, \
         layers.N.blocks.N.mlp.sg, conv_after_body, conv_before_upsample.0, conv_last"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_rgt(dict).then(|| detect::rgt_params(dict).map(Into::into))
    }
}
