//! The library's error type: every failure says which file, tensor, option or component is at
//! fault and what was expected. The binary adds context with `anyhow`; the library never
//! panics on user input.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the diffsr library.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model directory lacks a component or file the pipeline needs.
    #[error("model {}: missing {what}", dir.display())]
    MissingComponent { dir: PathBuf, what: String },

    /// A config file is malformed or holds a value diffsr does not support.
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// A model config asks for something this implementation does not support.
    #[error("unsupported model config: `{field}` {reason}")]
    Unsupported { field: String, reason: String },

    /// A weights file does not hold what the model's config implies.
    #[error("weights {}: {message}", path.display())]
    Weights { path: PathBuf, message: String },

    /// An option (library field or CLI flag) is out of range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption { option: String, reason: String },

    /// An input image is unusable (unreadable, too small, ...).
    #[error("image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    /// The tokenizer files could not be used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A hub repo could not be resolved, downloaded or found in the cache.
    #[error("{}{message}", if repo.is_empty() { String::new() } else { format!("model {repo}: ") })]
    Hub { repo: String, message: String },

    /// A `--model` value is neither an existing path nor a hub repo id.
    #[error("model `{spec}`: {reason}")]
    ModelSpec { spec: String, reason: String },

    /// A line of a batch manifest (JSONL) is malformed; `line` counts from 1.
    #[error("manifest {}, line {line}: {message}", path.display())]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A model folder could not be loaded; `cause` says what failed.
    #[error("loading the model from {}: {cause}", path.display())]
    ModelLoad { path: PathBuf, cause: Box<Error> },

    /// Engine selection fell back from diffusion, which cannot run (`reason`), to the built-in
    /// GAN, and loading that failed too (`cause`, which is what this error displays).
    #[error("{cause}")]
    FallbackFailed { reason: String, cause: Box<Error> },

    /// The run was cancelled between two steps.
    #[error("cancelled")]
    Cancelled,

    /// A solver could not be built or stepped.
    #[error(transparent)]
    Scheduler(#[from] diffsr_schedulers::SchedulerError),

    /// A tensor operation failed (device, dtype or shape error).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::InvalidOption`].
    pub fn option(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidOption {
            option: option.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the library.
pub type Result<T> = std::result::Result<T, Error>;
