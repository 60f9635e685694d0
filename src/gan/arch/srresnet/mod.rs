//! SRResNet, the generator of SRGAN, as BasicSR's `MSRResNet` (`basicsr/archs/srresnet_arch.py`,
//! "modified SRResNet": residual blocks without batch norm): a 3×3 conv, `num_block` residual
//! blocks, one ×2/×3 or two ×2 pixel-shuffle convs, two 3×3 convs at full size, and the
//! bilinearly upsampled input added back. spandrel 0.4.2 has no entry for it; the fixture
//! network is written from BasicSR's code. `config.rs` holds the hyper-parameters, `detect.rs`
//! reads them from a state dict, `net.rs` is the network.

mod config;
mod detect;
mod net;

pub use config::SrResNetParams;
pub use net::SrResNet;

#[cfg(test)]
pub(crate) use detect::synthetic_srresnet;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SRResNet's registry entry.
pub struct SrResNetSpec;

impl ArchSpec for SrResNetSpec {
    fn name(&self) -> &'static str {
        "SRResNet"
    }

    fn description(&self) -> &'static str {
        "SRGAN generator, BasicSR MSRResNet"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, body.N.conv1, body.N.conv2, upconv1, (upconv2,) conv_hr, conv_last"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_srresnet(dict).then(|| detect::srresnet_params(dict).map(Into::into))
    }
}
