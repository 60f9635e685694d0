//! Library option errors in the words of the command line: the library names its fields
//! (`guidance_scale`, `noise_level`), the user typed flags (`--guidance`, `--noise-level`).
//! Also which errors exit with 2 (nothing ran: bad arguments or an unusable model) rather
//! than 1.

use diffsr::schedulers::SchedulerError;
use diffsr::Error;

/// The `diffsr upscale` flag that sets the library option `option`, if one does.
fn flag_of(option: &str) -> Option<&'static str> {
    Some(match option {
        "steps" => "--steps",
        "guidance_scale" => "--guidance",
        "noise_level" => "--noise-level",
        "eta" => "--eta",
        "scale" => "--scale",
        "target" => "--target",
        "long_side" => "--long-side",
        "tile" => "--tile",
        "dtype" => "--dtype",
        "denoise" => "--denoise",
        "pre_pad" => "--pre-pad",
        "model_scale" => "--model-scale",
        "max_memory" | "max-memory" => "--max-memory",
        "plan" => "--plan",
        "color_fix" => "--color-fix",
        "engine" => "--engine",
        "device" => "--device",
        _ => return None,
    })
}

/// `e` with an [`Error::InvalidOption`] renamed to the flag that sets it.
pub fn with_flag_names(e: Error) -> Error {
    match e {
        Error::InvalidOption { option, reason } => match flag_of(&option) {
            Some(flag) => Error::InvalidOption {
                option: flag.to_string(),
                reason,
            },
            None => Error::InvalidOption { option, reason },
        },
        other => other,
    }
}

/// Whether a model-loading error means the model or the flags cannot be used as given (a bad
/// config value, an unsupported setting, an option out of range, weights that do not fit the
/// config), which is an argument error like a bad flag; I/O and hub failures are not.
pub fn is_unusable_model(e: &Error) -> bool {
    match e {
        Error::ModelLoad { cause, .. } | Error::FallbackFailed { cause, .. } => {
            is_unusable_model(cause)
        }
        Error::Config { .. }
        | Error::Unsupported { .. }
        | Error::InvalidOption { .. }
        | Error::ModelSpec { .. }
        | Error::Weights { .. }
        | Error::MissingComponent { .. } => true,
        Error::Scheduler(s) => !matches!(s, SchedulerError::Tensor(_)),
        _ => false,
    }
}
