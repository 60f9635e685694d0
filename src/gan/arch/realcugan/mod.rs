//! Real-CUGAN (bilibili's Real Cascade U-Nets for anime image super-resolution), following
//! spandrel 0.4.2 `architectures/RealCUGAN` (`__init__.py` detection, `__arch/upcunet_v3.py`
//! network): ×2, ×3, ×4 and the fast ×2, the pro models, and the ncnn exports without
//! squeeze-and-excitation. `config.rs` holds the hyper-parameters, `detect.rs` reads them from
//! a state dict, `net.rs` is the network around `unet.rs`'s U-Nets, `resample.rs` its strided
//! and transposed convolutions as stride-1 ones.

mod config;
mod detect;
mod net;
mod resample;
mod unet;

pub use config::{RealCuganParams, Variant};
pub use detect::{layers, Layer, LayerKind, PRO_KEY};
pub use net::RealCugan;

#[cfg(test)]
pub(crate) use detect::synthetic_realcugan;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// Real-CUGAN's registry entry.
pub struct RealCuganSpec;

impl ArchSpec for RealCuganSpec {
    fn name(&self) -> &'static str {
        "RealCUGAN"
    }

    fn description(&self) -> &'static str {
        "Real-CUGAN UpCunet 2x/3x/4x, se / pro"
    }

    fn expected_keys(&self) -> &'static str {
        "unet1.conv1.conv.0, unet1.conv_bottom, unet2.conv1.conv.0, unet2.conv_bottom, ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_realcugan(dict).then(|| detect::realcugan_params(dict).map(Into::into))
    }
}
