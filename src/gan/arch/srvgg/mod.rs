//! SRVGGNetCompact (Real-ESRGAN's `srvgg_arch.py`: realesr-animevideov3,
//! realesr-general-x4v3). `config.rs` holds the hyper-parameters, `detect.rs` reads them from
//! a state dict, `net.rs` is the network, `shuffle_add.rs` its fused output stage,
//! `output_resize.rs` the resize some ncnn exports end with.

mod config;
mod detect;
mod net;
mod output_resize;
mod shuffle_add;

pub use config::{SrvggAct, SrvggParams};
pub use net::Srvgg;
pub use output_resize::{output_resize_tensor, OutputResize, ResizeMode, OUTPUT_RESIZE_KEY};
/// The fused pixel-shuffle-plus-upsampled-input output stage, shared with PLKSR / RealPLKSR.
pub(crate) use shuffle_add::pixel_shuffle_add_nearest;

#[cfg(test)]
pub(crate) use detect::synthetic_srvgg;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SRVGGNetCompact's registry entry.
pub struct SrvggSpec;

impl ArchSpec for SrvggSpec {
    fn name(&self) -> &'static str {
        "SRVGGNetCompact"
    }

    fn description(&self) -> &'static str {
        "Real-ESRGAN compact"
    }

    fn expected_keys(&self) -> &'static str {
        "body.0 ... body.N"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_srvgg(dict).then(|| detect::srvgg_params(dict).map(Into::into))
    }
}
