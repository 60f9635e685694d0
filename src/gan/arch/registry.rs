//! Every architecture diffsr runs, one line each, as spandrel's `MAIN_REGISTRY`
//! (`spandrel/__helpers/main_registry.py`). Adding an architecture is a folder under
//! `src/gan/arch/` (its config, detection, network) plus its `mod` line in `arch/mod.rs` and
//! one line in the list at the end of this file; that line makes its config a [`GanArch`]
//! variant and its spec a [`REGISTRY`] entry.
//!
//! Order matters where key patterns overlap: [`crate::gan::detect::detect_arch`] takes the
//! first entry that claims a state dict, so more specific patterns come first.

use super::realcugan;
use super::rgt;
use super::{
    atd, dat, drct, omnisr, plksr, rrdbnet, safmn, span, srcnn, srresnet, srvgg, swin2sr, swinir,
    ArchConfig, ArchSpec,
};

/// Declares the architectures: `Variant(ConfigType) => SPEC_VALUE`. Generates the typed
/// config union [`GanArch`], its `From` conversions, its dispatch to [`ArchConfig`], and the
/// [`REGISTRY`] slice of the specs in the same order.
macro_rules! architectures {
    ($($(#[$doc:meta])* $variant:ident($config:ty) => $spec:expr),+ $(,)?) => {
        /// An architecture and its hyper-parameters: one variant per [`REGISTRY`] entry.
        #[derive(Debug, Clone, PartialEq)]
        pub enum GanArch {
            $($(#[$doc])* $variant($config),)+
        }

        impl GanArch {
            /// The hyper-parameters, behind the trait every architecture's config implements.
            pub fn config(&self) -> &dyn ArchConfig {
                match self {
                    $(Self::$variant(config) => config,)+
                }
            }

            /// The registry entry it was detected by (its name and description).
            pub fn spec(&self) -> &'static dyn ArchSpec {
                match self {
                    $(Self::$variant(_) => &$spec,)+
                }
            }
        }

        $(impl From<$config> for GanArch {
            fn from(config: $config) -> Self {
                Self::$variant(config)
            }
        })+

        /// Every architecture diffsr knows, in detection order.
        pub static REGISTRY: &[&dyn ArchSpec] = &[$(&$spec),+];
    };
}

architectures! {
    /// ATD (adaptive token dictionary): ATD, ATD-light. Its `layers.N.residual_group.td`
    /// and `attn_atd` keys are its own.
    Atd(atd::AtdParams) => atd::AtdSpec,
    /// DAT (Dual Aggregation Transformer): DAT-light, DAT-S, DAT, DAT-2.
    Dat(dat::DatParams) => dat::DatSpec,
    /// ESRGAN / Real-ESRGAN's RRDBNet, including the pixel-unshuffle x2 / x1 variants.
    RrdbNet(rrdbnet::RrdbNetParams) => rrdbnet::RrdbNetSpec,
    /// Real-ESRGAN's SRVGGNetCompact (realesr-animevideov3, realesr-general-x4v3).
    Srvgg(srvgg::SrvggParams) => srvgg::SrvggSpec,
    /// SPAN (Swift Parameter-free Attention Network), spandrel's `SPAN`.
    Span(span::SpanParams) => span::SpanSpec,
    /// SAFMN (Spatially-Adaptive Feature Modulation Network), spandrel's `SAFMN`.
    Safmn(safmn::SafmnParams) => safmn::SafmnSpec,
    /// PLKSR (partial large kernel CNN; `channe_mixer`, three mixers, three large kernels).
    Plksr(plksr::PlksrParams) => plksr::PlksrSpec,
    /// RealPLKSR (`channel_mixer`; GroupNorm or layer norm; pixel shuffle or DySample).
    RealPlksr(plksr::RealPlksrParams) => plksr::RealPlksrSpec,
    /// OmniSR (Omni Aggregation Networks).
    OmniSr(omnisr::OmniSrParams) => omnisr::OmniSrSpec,
    /// SRGAN's generator, BasicSR's MSRResNet. Shares conv_first / conv_hr / conv_last with
    /// RRDBNet; each refuses the other's blocks (`conv_body`), so order does not matter.
    SrResNet(srresnet::SrResNetParams) => srresnet::SrResNetSpec,
    /// SRCNN (2015), on Y of a bicubic upscale; the scale is not in the weights.
    Srcnn(srcnn::SrcnnParams) => srcnn::SrcnnSpec,
    /// Swin2SR (SwinV2 blocks); before SwinIR, whose identifying keys it also holds.
    Swin2Sr(swin2sr::Swin2SrParams) => swin2sr::Swin2SrSpec,
    /// DRCT (Swin blocks in residual dense groups: DRCT, DRCT-L, Real-DRCT).
    Drct(drct::DrctParams) => drct::DrctSpec,
    /// SwinIR (classical, lightweight, real-world, denoising, JPEG).
    SwinIr(swinir::SwinIrParams) => swinir::SwinIrSpec,
    /// Real-CUGAN's UpCunet 2x / 3x / 4x / 2x-fast, se, pro and no-SE.
    RealCugan(realcugan::RealCuganParams) => realcugan::RealCuganSpec,
    /// RGT and RGT-S (Recursive Generalization Transformer), spandrel's `RGT`.
    Rgt(rgt::RgtParams) => rgt::RgtSpec,
}
