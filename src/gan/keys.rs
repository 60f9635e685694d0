//! State-dict keys brought to the names the architectures' detectors and networks read:
//! DataParallel's `module.` prefix removed, then each registry entry's other layouts renamed
//! ([`crate::gan::arch::ArchSpec::normalise_keys`]: the ESRGAN repo's names for RRDBNet), as
//! spandrel converts them.

use super::arch::REGISTRY;
use super::StateDict;

/// Renames every key into the layout the registry detects; keys already in it are kept.
pub fn normalise_keys(dict: StateDict) -> StateDict {
    let dict: StateDict = dict
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("module.").unwrap_or(&k).to_string(), v))
        .collect();
    REGISTRY
        .iter()
        .fold(dict, |dict, spec| spec.normalise_keys(dict))
}
