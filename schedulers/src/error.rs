//! Errors of the scheduler crate: every failure names the config field or argument at fault.

use thiserror::Error;

/// What went wrong while building or stepping a scheduler.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// A config field holds a value the solver cannot use.
    #[error("scheduler config field `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// The config JSON could not be parsed; `path` is the JSON path of the bad value.
    #[error("malformed scheduler config{}: {message}", path_suffix(.path))]
    MalformedConfig { path: String, message: String },

    /// `_class_name` (or a solver name given by the user) is not one this crate implements.
    #[error("unknown scheduler `{name}`; expected one of: {expected}")]
    UnknownScheduler { name: String, expected: String },

    /// A call argument is out of range (number of steps, step index, noise shape, ...).
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        argument: &'static str,
        reason: String,
    },

    /// A tensor operation failed (shape mismatch between sample and model output, device error).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn path_suffix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl SchedulerError {
    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn argument(argument: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SchedulerError>;
