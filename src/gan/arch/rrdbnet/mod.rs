//! RRDBNet (ESRGAN, basicsr's `rrdbnet_arch.py`: Real-ESRGAN x4plus, x4plus-anime 6B, x2plus
//! and x1 with pixel-unshuffled input, community ×8 models with a third upsampling conv).
//! `config.rs` holds the hyper-parameters, `detect.rs` reads them from a state dict,
//! `keys.rs` renames the ESRGAN repo's layouts, `net.rs` is the network.

mod config;
mod detect;
mod keys;
mod net;

pub use config::RrdbNetParams;
pub use net::RrdbNet;

#[cfg(test)]
pub(crate) use detect::synthetic_rrdbnet;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// RRDBNet's registry entry.
pub struct RrdbNetSpec;

impl ArchSpec for RrdbNetSpec {
    fn name(&self) -> &'static str {
        "RRDBNet"
    }

    fn description(&self) -> &'static str {
        "ESRGAN / Real-ESRGAN"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, body.N.rdbN.convN, conv_body, conv_up1, ..."
    }

    fn normalise_keys(&self, dict: StateDict) -> StateDict {
        keys::from_esrgan_layouts(dict)
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_rrdbnet(dict).then(|| detect::rrdbnet_params(dict).map(Into::into))
    }
}
