//! Every architecture diffsr runs, one line each, as spandrel's `MAIN_REGISTRY`
//! (`spandrel/__helpers/main_registry.py`). Adding an architecture is a folder under
//! `src/gan/arch/` (its config, detection, network) plus its `mod` line in `arch/mod.rs` and
//! one line in the list at the end of this file; that line makes its config a [`GanArch`]
//! variant and its spec a [`REGISTRY`] entry.
//!
//! Order matters where key patterns overlap: [`crate::gan::detect::detect_arch`] takes the
//! first entry that claims a state dict, so more specific patterns come first.

use super::{realcugan, rrdbnet, srvgg, ArchConfig, ArchSpec};

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
    /// ESRGAN / Real-ESRGAN's RRDBNet, including the pixel-unshuffle x2 / x1 variants.
    RrdbNet(rrdbnet::RrdbNetParams) => rrdbnet::RrdbNetSpec,
    /// Real-ESRGAN's SRVGGNetCompact (realesr-animevideov3, realesr-general-x4v3).
    Srvgg(srvgg::SrvggParams) => srvgg::SrvggSpec,
    /// Real-CUGAN's UpCunet 2x / 3x / 4x / 2x-fast, se, pro and no-SE.
    RealCugan(realcugan::RealCuganParams) => realcugan::RealCuganSpec,
}
