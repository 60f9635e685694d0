//! PLKSR and RealPLKSR (partial large kernel CNNs, arXiv 2404.11848), as spandrel 0.4.2 runs
//! them (`architectures/PLKSR/`: `__init__.py` detection, `__arch/PLKSR.py`,
//! `__arch/RealPLKSR.py`, and `__arch_helpers/dysample.py` for RealPLKSR's DySample output).
//! Both keep their features at the input resolution in `feats.N` blocks (a channel mixer, a
//! large-kernel convolution over the first channels only, an optional element-wise attention,
//! a 1×1 refinement), and add the input back, repeated, before a pixel shuffle (or DySample).
//!
//! Files: `config.rs` / `real_config.rs` hold the hyper-parameters and what tiling needs of
//! them, `detect.rs` reads them from a state dict, `layers.rs` holds the convolutions and
//! attention both networks share, `large_kernel.rs` the three large-kernel kinds, `ops.rs` the
//! element-wise ops torch has and candle lacks (Mish, channel-wise LayerNorm, x·σ(g)),
//! `net.rs` / `real_net.rs` the networks, `dysample.rs` and `grid_sample.rs` the learned
//! upsampler and its bilinear sampling.

mod config;
mod detect;
mod dysample;
mod grid_sample;
mod large_kernel;
mod layers;
mod net;
mod ops;
mod real_config;
mod real_net;

pub use config::{CcmType, LkType, PlksrParams};
pub use grid_sample::{grid_sample_border, sample_bilinear_border};
pub use net::Plksr;
pub use real_config::RealPlksrParams;
pub use real_net::RealPlksr;

#[cfg(test)]
pub(crate) use detect::{synthetic_plksr, synthetic_real_plksr};

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// PLKSR's registry entry (the `channe_mixer` spelling, as the original code has it).
pub struct PlksrSpec;

impl ArchSpec for PlksrSpec {
    fn name(&self) -> &'static str {
        "PLKSR"
    }

    fn description(&self) -> &'static str {
        "partial large kernel CNN"
    }

    fn expected_keys(&self) -> &'static str {
        "feats.0, feats.N.channe_mixer.0, feats.N.lk.conv (or lk.convs.N / lk.mn_conv), \
         feats.N.refine, ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        (detect::is_plksr_family(dict) && detect::has_plksr_mixer(dict))
            .then(|| detect::plksr_params(dict).map(Into::into))
    }
}

/// RealPLKSR's registry entry (`channel_mixer`; GroupNorm or layer norm; pixel shuffle or
/// DySample).
pub struct RealPlksrSpec;

impl ArchSpec for RealPlksrSpec {
    fn name(&self) -> &'static str {
        "RealPLKSR"
    }

    fn description(&self) -> &'static str {
        "partial large kernel CNN, real-world variant"
    }

    fn expected_keys(&self) -> &'static str {
        "feats.0, feats.N.channel_mixer.0, feats.N.lk.conv, feats.N.refine, to_img (DySample), \
         ..."
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        (detect::is_plksr_family(dict) && !detect::has_plksr_mixer(dict))
            .then(|| detect::real_plksr_params(dict).map(Into::into))
    }
}
