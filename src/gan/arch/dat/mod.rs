//! DAT, the Dual Aggregation Transformer (Chen et al., ICCV 2023), as spandrel 0.4.2 runs it
//! (`architectures/DAT`): DAT-light, DAT-S, DAT and DAT-2, and any other configuration its
//! loader reads. Blocks alternate spatial-window attention (rectangular windows in both
//! orientations, a dynamic position bias, shifted every few blocks) and channel attention,
//! each with a conv branch and an adaptive interaction module, followed by a spatial-gate
//! feed-forward network.
//!
//! `config.rs` holds the hyper-parameters, `layout.rs` the state dict they imply,
//! `detect.rs` reads them from a state dict, `net.rs` / `group.rs` / `block.rs` are the
//! network, `spatial.rs` / `window.rs` / `pos_bias.rs` / `mask.rs` the spatial attention,
//! `channel.rs` the channel attention, `interaction.rs` what both share, `sgfn.rs` the
//! feed-forward network, `dwconv.rs` the depthwise convolutions and `modules.rs` the small
//! PyTorch modules.

mod block;
mod channel;
mod config;
mod detect;
mod dwconv;
mod group;
mod interaction;
mod layout;
mod mask;
mod modules;
mod net;
mod pos_bias;
mod sgfn;
mod spatial;
mod window;

pub use config::{DatParams, DatUpsampler, ResiConnection};
pub use detect::synthetic_dat;
#[cfg(test)]
pub(crate) use detect::tiny_params;
pub use layout::{LayoutEntry, TensorRole};
pub use net::Dat;

use super::{ArchSpec, Detection};
use crate::gan::StateDict;

/// DAT's registry entry.
pub struct DatSpec;

impl ArchSpec for DatSpec {
    fn name(&self) -> &'static str {
        "DAT"
    }

    fn description(&self) -> &'static str {
        "Dual Aggregation Transformer: DAT-light, DAT-S, DAT, DAT-2"
    }

    fn expected_keys(&self) -> &'static str {
        "conv_first, before_RG.1, layers.N.blocks.N.{attn.attns.N.pos, attn.channel_interaction, \
         ffn.sg}, norm, conv_after_body, upsample"
    }

    fn detect(&self, dict: &StateDict) -> Detection {
        detect::is_dat(dict).then(|| detect::dat_params(dict).map(Into::into))
    }
}
