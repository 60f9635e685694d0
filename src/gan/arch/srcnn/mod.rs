//! SRCNN (Dong, Loy, He, Tang 2015), the three-layer network super-resolution started from, in
//! the key layout of the common PyTorch ports (`conv1`, `conv2`, `conv3`; yjn870/SRCNN-pytorch):
//! run on the Y channel of a bicubic upscale, its Cb and Cr taken from the bicubic image.
//! The weights do not say the scale: see [`SrcnnParams`]. `config.rs` holds the
//! hyper-parameters, `detect.rs` reads them, `bicubic.rs` is Pillow's bicubic, `colour.rs`
//! the port's YCbCr, `net.rs` the pipeline.

mod bicubic;
mod colour;
mod config;
mod detect;
mod net;

pub use config::{SrcnnParams, DEFAULT_SCALE, MAX_SCALE, SRCNN_SCALE_KEY};
pub use net::Srcnn;

#[cfg(test)]
pub(crate) use detect::synthetic_srcnn;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SRCNN's registry entry.
pub struct SrcnnSpec;

impl ArchSpec for SrcnnSpec {
    fn name(&self) -> &'static str {
        "SRCNN"
    }

    fn description(&self) -> &'static str {
        "Dong et al. 2015, on Y of a bicubic upscale"
    }

    fn expected_keys(&self) -> &'static str {
        "conv1, conv2, conv3"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_srcnn(dict).then(|| detect::srcnn_params(dict).map(Into::into))
    }
}
