//! The GAN architectures diffsr runs, one folder each (`rrdbnet/`, `srvgg/`): the typed
//! hyper-parameters and their detection from a state dict's names and shapes, the Candle
//! network built from the weights, and what tiling needs of it. [`registry`] lists them; the
//! rest of diffsr reaches them through three traits:
//! - [`ArchSpec`]: a registry entry (name, key patterns, detection);
//! - [`ArchConfig`]: detected hyper-parameters (scale, channels, input multiple, tile
//!   context, memory estimate, building the network);
//! - [`SrNet`]: a built network's forward pass, wrapped in [`GanNetwork`].
//!
//! Shaped after spandrel's `architectures/<Name>/__init__.py` and `MAIN_REGISTRY`.

mod config;
mod net;
pub mod registry;
pub(crate) mod shapes;
mod spec;
mod weights;

pub mod atd;
pub mod dat;
pub mod drct;
pub mod omnisr;
pub mod plksr;
pub mod realcugan;
pub mod rgt;
pub mod rrdbnet;
pub mod safmn;
pub mod span;
pub mod srcnn;
pub mod srresnet;
pub mod srvgg;
pub mod swin;
pub mod swin2sr;
pub mod swinir;

pub use atd::{Atd, AtdParams, AtdSpec};
pub use config::{ArchConfig, InputPadding, InputSize};
pub use dat::{DatParams, DatSpec};
pub use drct::{Drct, DrctParams, DrctResi, DrctSpec};
pub use net::{GanNetwork, SrNet};
pub use omnisr::{OmniSr, OmniSrParams, OmniSrSpec};
pub use plksr::{
    CcmType, LkType, Plksr, PlksrParams, PlksrSpec, RealPlksr, RealPlksrParams, RealPlksrSpec,
};
pub use realcugan::{RealCugan, RealCuganParams, RealCuganSpec};
pub use registry::{GanArch, REGISTRY};
pub use rgt::{Rgt, RgtParams, RgtSpec};
pub use rrdbnet::{RrdbNet, RrdbNetParams, RrdbNetSpec};
pub use safmn::{Safmn, SafmnParams, SafmnSpec};
pub use span::{Span, SpanParams, SpanSpec};
pub use spec::{ArchSpec, Detection};
pub use srcnn::{Srcnn, SrcnnParams, SrcnnSpec, SRCNN_SCALE_KEY};
pub use srresnet::{SrResNet, SrResNetParams, SrResNetSpec};
pub use srvgg::{
    output_resize_tensor, OutputResize, ResizeMode, Srvgg, SrvggAct, SrvggParams, SrvggSpec,
    OUTPUT_RESIZE_KEY,
};
pub use swin2sr::{Swin2Sr, Swin2SrParams, Swin2SrSpec, Swin2SrUpsampler};
pub use swinir::{SwinIr, SwinIrParams, SwinIrSpec};
pub use weights::Weights;
