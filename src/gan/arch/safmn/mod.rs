//! SAFMN (spandrel 0.4.2 `architectures/SAFMN`: spatially-adaptive feature modulation, an
//! efficient super-resolution network). `config.rs` holds the hyper-parameters, `detect.rs`
//! reads them from a state dict, `net.rs` is the network, `safm.rs` its multi-scale
//! modulation, `norm.rs` its channel-wise layer norm.

mod config;
mod detect;
mod net;
mod norm;
mod safm;

pub use config::SafmnParams;
pub use net::Safmn;

#[cfg(test)]
pub(crate) use detect::synthetic_safmn;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SAFMN's registry entry.
pub struct SafmnSpec;

impl ArchSpec for SafmnSpec {
    fn name(&self) -> &'static str {
        "SAFMN"
    }

    fn description(&self) -> &'static str {
        "Spatially-Adaptive Feature Modulation Network"
    }

    fn expected_keys(&self) -> &'static str {
        "to_feat, feats.N.norm1, feats.N.safm.mfr.N, feats.N.ccm.ccm.N, to_img.0"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_safmn(dict).then(|| detect::safmn_params(dict).map(Into::into))
    }
}
