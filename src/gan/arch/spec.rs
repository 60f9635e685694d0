//! The registry's view of an architecture: its name, the tensor names that identify it, and
//! how its hyper-parameters are read from a state dict. Follows spandrel's `Architecture`
//! (`detect` from key patterns, then `load` reading shapes), with "recognisably mine but
//! malformed" reported instead of passed on to the next entry.

use super::GanArch;
use crate::gan::StateDict;

/// What an architecture's detection found in a state dict:
/// - `None`: not this architecture (its identifying tensors are absent); the registry asks the
///   next entry;
/// - `Some(Ok(arch))`: this architecture, with the hyper-parameters read from the shapes;
/// - `Some(Err(reason))`: this architecture's identifying tensors are there but the rest does
///   not fit (a missing tensor, an impossible shape); `reason` becomes the load error.
pub type Detection = Option<std::result::Result<GanArch, String>>;

/// One entry of [`super::registry::REGISTRY`]. Implemented by a unit struct in each
/// architecture's folder (`rrdbnet::RrdbNetSpec`, ...).
pub trait ArchSpec: Sync {
    /// The architecture's usual name, e.g. `RRDBNet`.
    fn name(&self) -> &'static str;

    /// The models or papers it covers, e.g. `ESRGAN / Real-ESRGAN`.
    fn description(&self) -> &'static str;

    /// The tensor names it is recognised by, as a short pattern list for messages, e.g.
    /// `conv_first, body.N.rdbN.convN, conv_body, ...`.
    fn expected_keys(&self) -> &'static str;

    /// Renames the keys of other layouts of this architecture (older repos, other exporters)
    /// to the names [`Self::detect`] and the network read. Runs on every state dict before
    /// detection, so it must leave keys it does not recognise as they are. Most architectures
    /// have one layout and keep this default.
    fn normalise_keys(&self, dict: StateDict) -> StateDict {
        dict
    }

    /// Reads the architecture and its hyper-parameters from a (normalised) state dict.
    fn detect(&self, dict: &StateDict) -> Detection;

    /// `RRDBNet (ESRGAN / Real-ESRGAN: conv_first, ...)`: the entry as error messages list it.
    fn summary(&self) -> String {
        format!(
            "{} ({}: {})",
            self.name(),
            self.description(),
            self.expected_keys()
        )
    }
}
