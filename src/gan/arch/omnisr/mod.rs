//! OmniSR (Omni Aggregation Networks, CVPR 2023; spandrel 0.4.2 `architectures/OmniSR`):
//! OSAG groups of OSA blocks — an MBConv, window and grid self-attention with a relative
//! position bias, channel attentions, gated feed-forwards — each closed by an ESA gate, and a
//! pixel-shuffle tail. `config.rs` holds the hyper-parameters, `detect.rs` reads them from a
//! state dict, `net.rs` / `osag.rs` / `osa.rs` / `attention.rs` / `channel_attention.rs`
//! mirror the reference's modules, `partition.rs` its rearrangements and `ops.rs` the small
//! layers they share.

mod attention;
mod channel_attention;
mod config;
mod detect;
mod net;
mod ops;
mod osa;
mod osag;
mod partition;

pub use config::OmniSrParams;
pub use net::OmniSr;

#[cfg(test)]
pub(crate) use detect::{synthetic_omnisr, tiny_params};

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// OmniSR's registry entry.
pub struct OmniSrSpec;

impl ArchSpec for OmniSrSpec {
    fn name(&self) -> &'static str {
        "OmniSR"
    }

    fn description(&self) -> &'static str {
        "Omni Aggregation Networks"
    }

    fn expected_keys(&self) -> &'static str {
        "input, residual_layer.N.residual_layer.N.layer.N, residual_layer.N.esa, output, up.0"
    }

    /// Drops the `total_ops` / `total_params` counters that the thop profiler leaves in some
    /// released OmniSR checkpoints (spandrel deletes them too); other dicts are untouched.
    fn normalise_keys(&self, dict: StateDict) -> StateDict {
        if !detect::is_omnisr(&dict) {
            return dict;
        }
        dict.into_iter()
            .filter(|(k, _)| !k.ends_with("total_ops") && !k.ends_with("total_params"))
            .collect()
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_omnisr(dict).then(|| detect::omnisr_params(dict).map(Into::into))
    }
}
