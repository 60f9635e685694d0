//! SPAN (spandrel 0.4.2 `architectures/SPAN`: the NTIRE 2024 efficient-SR winner, OpenModelDB's
//! third most common architecture). `config.rs` holds the hyper-parameters, `detect.rs` reads
//! them from a state dict, `conv3xc.rs` folds the re-parameterised convolutions, `net.rs` is
//! the network, `pointwise.rs` its element-wise steps.

mod config;
mod conv3xc;
mod detect;
mod net;
mod pointwise;

pub use config::{SpanParams, IMG_RANGE, RGB_MEAN};
pub use net::Span;

#[cfg(test)]
pub(crate) use detect::synthetic_span;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// SPAN's registry entry.
pub struct SpanSpec;

impl ArchSpec for SpanSpec {
    fn name(&self) -> &'static str {
        "SPAN"
    }

    fn description(&self) -> &'static str {
        "Swift Parameter-free Attention Network"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_1.sk, block_1.c1_r.eval_conv, ..., conv_cat, conv_2, upsampler.0"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_span(dict).then(|| detect::span_params(dict).map(Into::into))
    }
}
