//! The library's error type: every failure says which file, tensor, option or component is at
//! fault and what was expected. The binary adds context with `anyhow`; the library never
//! panics on user input.

use std::path::PathBuf;

use thiserror::Error;

// Every path and free text is shown through `text_escape`: they may come from a file (its name,
// its contents), and a message must neither drive the terminal nor carry a backtrace.
use crate::text_escape::{message as m, path as p};

/// Errors of the diffsr library.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", p(path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model directory lacks a component or file the pipeline needs.
    #[error("model {}: missing {}", p(dir), m(what))]
    MissingComponent { dir: PathBuf, what: String },

    /// A config file is malformed or holds a value diffsr does not support.
    #[error("config {}: {}", p(path), m(message))]
    Config { path: PathBuf, message: String },

    /// A model config asks for something this implementation does not support.
    #[error("unsupported model config: `{}` {}", m(field), m(reason))]
    Unsupported { field: String, reason: String },

    /// A weights file does not hold what the model's config implies.
    #[error("weights {}: {}", p(path), m(message))]
    Weights { path: PathBuf, message: String },

    /// An option (library field or CLI flag) is out of range.
    #[error("invalid option `{}`: {}", m(option), m(reason))]
    InvalidOption { option: String, reason: String },

    /// An input image is unusable (unreadable, too small, ...).
    #[error("image {}: {}", p(path), m(reason))]
    Image { path: PathBuf, reason: String },

    /// The tokenizer files could not be used.
    #[error("tokenizer: {}", m(.0))]
    Tokenizer(String),

    /// A hub repo could not be resolved, downloaded or found in the cache.
    #[error(
        "{}{}",
        if repo.is_empty() { String::new() } else { format!("model {}: ", m(repo)) },
        m(message)
    )]
    Hub { repo: String, message: String },

    /// A `--model` value is neither an existing path nor a hub repo id.
    #[error("model `{}`: {}", m(spec), m(reason))]
    ModelSpec { spec: String, reason: String },

    /// A line of a batch manifest (JSONL) is malformed; `line` counts from 1.
    #[error("manifest {}, line {line}: {}", p(path), m(message))]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A model folder could not be loaded; `cause` says what failed.
    #[error("loading the model from {}: {cause}", p(path))]
    ModelLoad { path: PathBuf, cause: Box<Error> },

    /// Engine selection fell back from diffusion, which cannot run (`reason`), to the built-in
    /// GAN, and loading that failed too (`cause`, which is what this error displays).
    #[error("{cause}")]
    FallbackFailed { reason: String, cause: Box<Error> },

    /// A GPU that was named cannot be used (a CUDA library that does not load, no device, a
    /// driver that fails to start, a backend not built in).
    #[error("device {device} cannot be used: {}", m(reason))]
    DeviceUnavailable { device: String, reason: String },

    /// The run was cancelled between two steps.
    #[error("cancelled")]
    Cancelled,

    /// A solver could not be built or stepped.
    #[error(transparent)]
    Scheduler(#[from] diffsr_schedulers::SchedulerError),

    /// A tensor operation failed (device, dtype or shape error). Converted from candle's error
    /// by [`without_backtrace`] (`From`): not a `source` as well, so a chain shows it once.
    #[error("tensor operation failed: {}", m(&.0.to_string()))]
    Tensor(candle_core::Error),
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

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Self::Tensor(without_backtrace(e))
    }
}

/// `e` without the backtrace candle attaches when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is
/// set (it prints it as part of the message), and with its contexts on the same line as the
/// error they explain (candle puts them on a line of their own).
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => without_backtrace(*inner),
        E::Context { inner, context } => {
            E::Msg(format!("{context}: {}", without_backtrace(*inner)))
        }
        E::WithPath { inner, path } => E::WithPath {
            inner: Box::new(without_backtrace(*inner)),
            path,
        },
        E::WrappedContext { wrapped, context } => E::Msg(format!("{context}: {wrapped}")),
        e => e,
    }
}

/// Result alias of the library.
pub type Result<T> = std::result::Result<T, Error>;
